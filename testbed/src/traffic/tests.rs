//! Namespace tests of the generators against `testbed serve`.
