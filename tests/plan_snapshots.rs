//! Every example topology plans without error, prints the same bytes every
//! time, survives a JSON round trip, and matches its reviewed snapshot.

mod support;

use std::path::{Path, PathBuf};
use testbed::plan::{render, Plan};

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("topologies/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the example topologies in {}",
        dir.display()
    );
    files
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_example_plans_and_matches_its_snapshot() {
    for file in examples() {
        let loaded = testbed::load(&file).unwrap_or_else(|e| panic!("{}", e.render()));
        assert!(
            loaded.warnings.is_empty(),
            "{} has warnings:\n{}",
            file.display(),
            testbed::diag::render(
                &file.display().to_string(),
                &loaded.source,
                &loaded.warnings
            )
        );
        let yaml = render::plan_yaml(&loaded.plan).expect("renders");
        insta::assert_snapshot!(format!("plan-{}", stem(&file)), yaml);
    }
}

#[test]
fn planning_twice_gives_the_same_bytes() {
    for file in examples() {
        let a = render::plan_yaml(&testbed::load(&file).expect("valid").plan).expect("renders");
        let b = render::plan_yaml(&testbed::load(&file).expect("valid").plan).expect("renders");
        assert_eq!(a, b, "{}", file.display());
        let ja = render::to_json(&testbed::load(&file).expect("valid").plan).expect("renders");
        let jb = render::to_json(&testbed::load(&file).expect("valid").plan).expect("renders");
        assert_eq!(ja, jb, "{}", file.display());
    }
}

#[test]
fn plan_json_reads_back_into_the_same_plan() {
    for file in examples() {
        let plan = testbed::load(&file).expect("valid").plan;
        let json = render::to_json(&plan).expect("renders");
        let back: Plan =
            serde_json::from_str(&json).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert_eq!(back, plan, "{}", file.display());
    }
}

#[test]
fn graphs_of_the_web_example_match_their_snapshots() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/web.yaml");
    let plan = testbed::load(&file).expect("valid").plan;
    insta::assert_snapshot!("graph-web-dot", testbed::graph::dot(&plan));
    insta::assert_snapshot!("graph-web-mermaid", testbed::graph::mermaid(&plan));
    insta::assert_snapshot!("graph-web-svg", testbed::graph::svg(&plan));
}

#[test]
fn svg_shows_every_node_pod_host_and_service() {
    for file in examples() {
        let plan = testbed::load(&file).expect("valid").plan;
        let svg = testbed::graph::svg(&plan);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        for n in &plan.nodes {
            assert!(
                svg.contains(&format!(">node {}<", n.name)),
                "{}: node {}",
                file.display(),
                n.name
            );
        }
        for h in &plan.hosts {
            assert!(
                svg.contains(&format!(">host {}<", h.name)),
                "{}: host {}",
                file.display(),
                h.name
            );
        }
        for p in &plan.pods {
            assert!(
                svg.contains(&format!(">{}", p.name)),
                "{}: pod {}",
                file.display(),
                p.name
            );
        }
        for s in &plan.services {
            assert!(
                svg.contains(&format!(" {}.{}<", s.name, s.namespace)),
                "{}: service {}",
                file.display(),
                s.name
            );
        }
    }
}

#[test]
fn registry_layout_and_lease_json_match_their_snapshot() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../topologies/nodeport-lb.yaml");
    let mut plan = testbed::load(&file).expect("valid").plan;
    let tmp = support::private_dir();
    let dir = tmp.path().join("state");
    plan.state_dir = dir.display().to_string();
    testbed::overlay_run::write_registry(&plan, None).expect("registry written");
    let mut files: Vec<PathBuf> = vec![dir.join("registry/config")];
    let mut leases: Vec<PathBuf> = std::fs::read_dir(dir.join("registry/subnets"))
        .expect("subnets/")
        .map(|e| e.expect("entry").path())
        .collect();
    leases.sort();
    files.extend(leases);
    let text: String = files
        .iter()
        .map(|f| {
            let rel = f.strip_prefix(&dir).expect("inside").display().to_string();
            format!("{rel}\n{}\n", std::fs::read_to_string(f).expect("readable"))
        })
        .collect();
    insta::assert_snapshot!("registry-nodeport-lb", text);
}

#[test]
fn service_rules_of_every_example_match_their_snapshot() {
    for file in examples() {
        let plan = testbed::load(&file).expect("valid").plan;
        if plan.services.is_empty() {
            continue;
        }
        let rules = proxy::iptables::render(&plan.services);
        assert_eq!(
            rules,
            proxy::iptables::render(&plan.services),
            "rendering is pure"
        );
        insta::assert_snapshot!(format!("iptables-{}", stem(&file)), rules);
        let nft = proxy::nftables::render(&plan.services);
        insta::assert_snapshot!(format!("nftables-{}", stem(&file)), nft);
        let portals = proxy::portals::render(&plan.services, true);
        insta::assert_snapshot!(format!("userspace-{}", stem(&file)), portals);
        // What one endpoint leaving changes, in each mode: only its port.
        if let Some(pod) = plan
            .services
            .iter()
            .flat_map(|s| &s.ports)
            .flat_map(|p| &p.endpoints)
            .map(|e| e.pod.clone())
            .next()
        {
            let update = ["iptables", "nftables"]
                .iter()
                .map(|mode| {
                    let mut plan = plan.clone();
                    plan.cluster.proxy = if *mode == "iptables" {
                        proxy::Mode::Iptables
                    } else {
                        proxy::Mode::Nftables
                    };
                    format!(
                        "# {mode}, without {pod}\n{}",
                        testbed::services::rendered(&plan, std::slice::from_ref(&pod))
                    )
                })
                .collect::<String>();
            insta::assert_snapshot!(format!("update-{}", stem(&file)), update);
        }
    }
}
