//! How two plans of one testbed differ, for `testbed apply`: what is added,
//! removed and changed, and which differences cannot be made to a running
//! testbed.
