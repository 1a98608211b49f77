//! How two plans of one testbed differ, for `testbed apply`: what is added,
//! removed and changed, and which differences cannot be made to a running
//! testbed.
// STUB
#[derive(serde::Serialize)]
pub struct Changes;
impl Changes { pub fn render(&self) -> String { String::new() } pub fn is_empty(&self) -> bool { false } }
pub struct NotLive;
impl std::fmt::Display for NotLive { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "x") } }
pub fn changes(_a: &crate::plan::Plan, _b: &crate::plan::Plan) -> Changes { Changes }
pub fn not_live(_a: &crate::plan::Plan, _b: &crate::plan::Plan) -> Vec<NotLive> { vec![] }
