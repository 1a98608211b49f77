use super::*;
use crate::experiment::{schedule, spec};

fn setup() -> (Experiment, Plan, schedule::Run) {
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../topologies/experiments/failover.yaml"
    );
    let exp = spec::read(std::path::Path::new(root)).unwrap();
    let opts = schedule::Options {
        only: vec![
            ("proxy".into(), "nftables".into()),
            ("overlay".into(), "udp".into()),
        ],
        repeat: Some(1),
    };
    let sched = schedule::schedule(&exp, &opts).unwrap();
    let run = sched.runs[0].clone();
    let values = [
        ("cluster.proxy", "nftables"),
        ("cluster.overlay", "udp"),
        ("seed", &*run.seed.to_string()),
    ];
    let plan = crate::experiment::params::load_with("t", &exp.topology_source, &values)
        .unwrap()
        .plan;
    (exp, plan, run)
}

fn texts(run: &schedule::Run) -> Vec<String> {
    run.timeline.iter().map(|s| s.what.clone()).collect()
}

#[test]
fn faults_with_for_are_undone_at_their_end_in_time_order() {
    let (exp, plan, run) = setup();
    let (acts, faults) = actions(&exp, &plan, run.seed, &texts(&run)).unwrap();
    let times: Vec<u64> = acts.iter().map(|t| t.at_us).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    // kill (no undo), nodeDown 8..14, impair 15..18, partition 16..18, exec 19.
    assert_eq!(faults.len(), 4);
    assert_eq!(faults[1].until_us, Some(14_000_000));
    assert_eq!(
        faults[0].until_us,
        Some(faults[0].at_us),
        "a kill is a moment"
    );
    let undos: Vec<(u64, usize)> = acts
        .iter()
        .filter_map(|t| match &t.act {
            Act::Request {
                undo: true, fault, ..
            } => Some((t.at_us, *fault)),
            _ => None,
        })
        .collect();
    assert_eq!(
        undos,
        vec![(14_000_000, 1), (18_000_000, 2), (18_000_000, 3)]
    );
    assert!(matches!(
        acts.last().unwrap().act,
        Act::Exec { index: 0, .. }
    ));
}

#[test]
fn a_picked_kill_targets_the_pod_the_schedule_names() {
    let (exp, plan, run) = setup();
    let (acts, faults) = actions(&exp, &plan, run.seed, &texts(&run)).unwrap();
    let Act::Request {
        request: Request::Kill { pod, .. },
        ..
    } = &acts[0].act
    else {
        panic!("{:?}", acts[0]);
    };
    assert_eq!(faults[0].spec, format!("kill pod {pod}"));
    assert!(pod.starts_with("shop/web-"), "{pod}");
}

#[test]
fn an_impairment_is_undone_to_the_plans_link_and_keeps_what_it_does_not_set() {
    let (exp, plan, run) = setup();
    let (acts, _) = actions(&exp, &plan, run.seed, &texts(&run)).unwrap();
    let impairs: Vec<&Request> = acts
        .iter()
        .filter_map(|t| match &t.act {
            Act::Request { request, .. } if matches!(request, Request::Impair { .. }) => {
                Some(request)
            }
            _ => None,
        })
        .collect();
    let node1 = plan.nodes.iter().find(|n| n.name == "node1").unwrap();
    match (impairs[0], impairs[1]) {
        (
            Request::Impair {
                machine,
                link: Some(l),
            },
            Request::Impair { link: back, .. },
        ) => {
            assert_eq!(machine, "node1");
            assert_eq!(l.delay, Some(D(20_000)));
            assert_eq!(l.loss, Some(Percent(10_000)));
            assert_eq!(back, &node1.link);
        }
        other => panic!("{other:?}"),
    }
}
