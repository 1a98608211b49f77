use super::*;
use crate::experiment::spec::tests::ok;

const BODY: &str = "seed: 7
repeat: 2
params:
  cluster.proxy: [iptables, nftables, userspace]
  cluster.overlay: [udp, vxlan]
workloads:
  - {name: w, kind: http, from: pod toolbox, to: service web.shop, rate: 200/s, duration: 20s}
  - {name: p, kind: ping, from: pod toolbox, to: pod toolbox, rate: 3/s, start: 2s, duration: 1500ms}
timeline:
  - {at: 5s, fault: {kill: {pick: {rc: web}}}}
  - {at: 8s, fault: {nodeDown: node2}, for: 6s}
";

fn sched(body: &str) -> Schedule {
    schedule(&ok(body), &Options::default()).unwrap()
}

fn names(s: &Schedule) -> Vec<&str> {
    s.combinations.iter().map(|c| c.name.as_str()).collect()
}

#[test]
fn the_same_file_and_seed_give_the_same_schedule() {
    assert_eq!(sched(BODY), sched(BODY));
}

#[test]
fn counts_and_seeds() {
    let s = sched(BODY);
    assert_eq!(s.combinations.len(), 6);
    assert_eq!(s.runs.len(), 12);
    for (i, r) in s.runs.iter().enumerate() {
        assert_eq!(r.combination, s.combinations[i / 2].name);
        assert_eq!(r.rep, (i % 2) as u32);
        assert_eq!(r.seed, 7 + r.rep as u64);
        assert_eq!(r.workloads[0].count, 4000);
        assert_eq!(r.workloads[1].count, 4);
        assert_eq!(r.timeline.len(), 2);
        assert_eq!(r.timeline[1].what, "nodeDown node node2");
        assert_eq!(
            (r.timeline[1].at_us, r.timeline[1].until_us),
            (8_000_000, Some(14_000_000))
        );
    }
    let mut sorted = names(&s);
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "proxy=iptables,overlay=udp",
            "proxy=iptables,overlay=vxlan",
            "proxy=nftables,overlay=udp",
            "proxy=nftables,overlay=vxlan",
            "proxy=userspace,overlay=udp",
            "proxy=userspace,overlay=vxlan"
        ]
    );
}

#[test]
fn without_shuffle_the_file_order() {
    let s = sched(&format!("{BODY}shuffle: false\n"));
    assert_eq!(
        names(&s)[..3],
        [
            "proxy=iptables,overlay=udp",
            "proxy=iptables,overlay=vxlan",
            "proxy=nftables,overlay=udp"
        ]
    );
    assert_eq!(
        s.combinations[0].params[1],
        Setting {
            path: "cluster.overlay".into(),
            value: "udp".into()
        }
    );
}

#[test]
fn another_seed_gives_another_order() {
    let orders: std::collections::BTreeSet<Vec<String>> = (0..8)
        .map(|seed| {
            let s = sched(&BODY.replace("seed: 7", &format!("seed: {seed}")));
            names(&s).iter().map(|n| n.to_string()).collect()
        })
        .collect();
    assert!(orders.len() > 1, "{orders:?}");
    let a = sched(BODY);
    let b = sched(&BODY.replace("seed: 7", "seed: 8"));
    assert_ne!(
        a.runs[0].workloads[0].phase_ppm,
        b.runs[0].workloads[0].phase_ppm
    );
}

#[test]
fn send_times_are_evenly_spaced_from_a_seeded_phase() {
    let s = sched(BODY);
    let p = &s.runs[0].workloads[1];
    let t: Vec<u64> = (0..p.count).map(|k| p.at_us(k)).collect();
    assert_eq!(p.first_us, t);
    assert!(t[0] >= 2_000_000 && t[0] < 2_333_334, "{t:?}");
    for k in 1..t.len() {
        let gap = t[k] - t[k - 1];
        assert!((333_333..=333_334).contains(&gap), "{t:?}");
    }
    assert!(*t.last().unwrap() < 3_500_000);
    let w = &s.runs[0].workloads[0];
    assert_eq!(w.first_us.len() as u64, SHOWN);
    assert!(w.at_us(w.count - 1) < 20_000_000);
}

#[test]
fn picks_are_pods_of_the_rc_and_follow_the_seed() {
    let picks: std::collections::BTreeSet<String> = (0..16)
        .map(|seed| {
            let s = sched(&BODY.replace("seed: 7", &format!("seed: {seed}")));
            s.runs[0].timeline[0].what.clone()
        })
        .collect();
    assert!(picks.len() > 1, "{picks:?}");
    for p in &picks {
        assert!(
            [
                "kill pod shop/web-0",
                "kill pod shop/web-1",
                "kill pod shop/web-2"
            ]
            .contains(&p.as_str()),
            "{p}"
        );
    }
}

#[test]
fn only_and_repeat_narrow() {
    let e = ok(BODY);
    let opts = Options {
        only: vec![("proxy".into(), "nftables".into())],
        repeat: Some(3),
    };
    let s = schedule(&e, &opts).unwrap();
    assert_eq!(s.combinations.len(), 2);
    assert!(s
        .combinations
        .iter()
        .all(|c| c.name.starts_with("proxy=nftables,")));
    assert_eq!(s.runs.len(), 6);
    let opts = Options {
        only: vec![("cluster.overlay".into(), "vxlan".into())],
        repeat: None,
    };
    assert_eq!(schedule(&e, &opts).unwrap().combinations.len(), 3);
    let opts = Options {
        only: vec![("proxy".into(), "ipvs".into())],
        repeat: None,
    };
    assert!(matches!(
        schedule(&e, &opts),
        Err(ScheduleError::NoMatch(_))
    ));
}

#[test]
fn no_params_is_one_default_combination() {
    let s = sched("repeat: 2\n");
    assert_eq!(names(&s), ["default"]);
    assert_eq!(s.runs.len(), 2);
}

#[test]
fn nothing_to_pick_is_an_error() {
    let mut e = ok("timeline:\n  - {at: 1s, fault: {kill: {pick: {rc: web}}}}\n");
    e.topology_source = e.topology_source.replace("replicas: 3", "replicas: 0");
    assert!(matches!(
        schedule(&e, &Options::default()),
        Err(ScheduleError::NothingToPick { .. })
    ));
}

#[test]
fn the_example_experiment_schedules() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../topologies/experiments/failover.yaml");
    let e = crate::experiment::spec::read(&path).unwrap_or_else(|e| panic!("{}", e.render()));
    let s = schedule(&e, &Options::default()).unwrap();
    assert_eq!((s.combinations.len(), s.runs.len()), (6, 18));
    assert!(s
        .runs
        .iter()
        .all(|r| r.timeline[0].what.starts_with("kill pod shop/web-")));
}
