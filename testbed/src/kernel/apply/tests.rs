use super::*;
use crate::state::TestbedName;

/// A testbed name of this test run (1-12 characters).
fn name() -> String {
    format!("rb{:x}", std::process::id() & 0xfffff)
}

#[test]
fn a_failure_after_the_namespaces_exist_removes_them_all() {
    if !overlay::require_root("a_failure_after_the_namespaces_exist_removes_them_all") {
        return;
    }
    let n = name();
    let src = format!(
        "name: {n}\ncluster: {{overlay: host-gw}}\nnodes: [{{name: n1}}, {{name: n2}}]\n\
         pods: [{{name: p, node: n2, containers: [{{name: c, command: [sleep, infinity]}}]}}]\n"
    );
    let mut plan = crate::load_str("t.yaml", src).unwrap().plan;
    // An interface name the kernel refuses (over 15 bytes): namespaces are
    // made first, then configuring n2's uplink fails.
    plan.nodes[1].uplink.peer.name = "far-too-long-for-a-link".into();
    let tb = TestbedName::new(&n).unwrap();
    let err = apply(&plan).expect_err("the kernel refuses the name");
    assert!(!err.to_string().is_empty());
    let left = crate::kernel::teardown::namespaces_of(&tb);
    // Clean up whatever a broken rollback left, then judge it.
    let _ = crate::kernel::teardown::teardown(&tb, &mut |_| {});
    assert_eq!(left, Vec::<String>::new(), "rollback left namespaces");
}
