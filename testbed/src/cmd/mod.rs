//! The subcommands, one file each (or a few close ones together), each
//! parsing its arguments, calling the library and printing: `args` (the
//! clap definitions), `common` (the exit-code failure, loading, printing,
//! names), `offline` (validate, plan, rules, graph, completions, man),
//! `lifecycle` (up, down), `inspect` (ls, status, inspect), `verify`,
//! `exec` (exec, logs), `control` (fault, scale, apply, impair), `events`,
//! `check`, `run`, `results`, `serve` (serve, generate), `daemons` (the
//! hidden supervise, proxy-daemon, overlay-daemon).

pub mod args;
pub mod check;
pub mod common;
pub mod control;
pub mod daemons;
pub mod events;
pub mod exec;
pub mod inspect;
pub mod lifecycle;
pub mod offline;
pub mod results;
pub mod run;
pub mod serve;
pub mod verify;
