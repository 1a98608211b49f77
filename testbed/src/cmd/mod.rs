//! Subcommands that talk to a running testbed's controller: `fault`,
//! `scale`, `apply` (`control`), and those that read what it recorded:
//! `events` (`events`). Each parses, calls the library, prints.

pub mod check;
pub mod control;
pub mod events;
pub mod exec;
pub mod lifecycle;
pub mod results;
pub mod run;
pub mod serve;
pub mod verify;
