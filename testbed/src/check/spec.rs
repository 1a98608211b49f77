//! (spec: being written)
