use super::read::Lines;
use super::*;

fn private_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn event(ms: u64, kind: EventKind, object: &str, reason: &str) -> Event {
    Event {
        unix_ms: ms,
        kind,
        object: object.into(),
        reason: reason.into(),
        message: None,
        machine: None,
    }
}

fn objects(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.object.as_str()).collect()
}

#[test]
fn times_are_rfc3339_utc_with_milliseconds() {
    assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1), "1970-01-01T00:00:00.001Z");
    assert_eq!(rfc3339_ms(86_399_999), "1970-01-01T23:59:59.999Z");
    // A leap day, and the day after it.
    assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
    assert_eq!(rfc3339_ms(951_868_800_000), "2000-03-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_709_210_096_789), "2024-02-29T12:34:56.789Z");
    // The end of a leap year (day 366) and of a common one.
    assert_eq!(rfc3339_ms(1_735_689_599_999), "2024-12-31T23:59:59.999Z");
    assert_eq!(rfc3339_ms(1_704_067_199_000), "2023-12-31T23:59:59.000Z");
    // 2100 is no leap year: 28 February is followed by 1 March.
    assert_eq!(rfc3339_ms(4_107_456_000_000), "2100-02-28T00:00:00.000Z");
    assert_eq!(rfc3339_ms(4_107_542_400_000), "2100-03-01T00:00:00.000Z");
    assert_eq!(rfc3339_ms(1_795_921_965_123), "2026-11-29T03:12:45.123Z");
    // The largest time does not overflow.
    assert!(rfc3339_ms(u64::MAX).ends_with(".615Z"));
}

/// The JSON form: camelCase, the time spelled out, no null; and it reads
/// back (ignoring `time`).
#[test]
fn an_event_is_one_json_object_with_its_time() {
    let e = event(
        1_795_921_965_123,
        EventKind::PodEvicted,
        "pod default/web-1",
        "node node2 not ready for 5s",
    );
    let json = serde_json::to_string(&e).unwrap();
    assert_eq!(
        json,
        r#"{"time":"2026-11-29T03:12:45.123Z","unixMs":1795921965123,"kind":"podEvicted","object":"pod default/web-1","reason":"node node2 not ready for 5s"}"#
    );
    assert_eq!(serde_json::from_str::<Event>(&json).unwrap(), e);
    let with = e.clone().with_message("details");
    let v = serde_json::to_value(&with).unwrap();
    assert_eq!(v["message"], "details");
    assert_eq!(serde_json::from_value::<Event>(v).unwrap(), with);
    for k in EventKind::ALL {
        assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
    }
}

#[test]
fn long_text_is_cut_at_a_character_boundary() {
    let e = Event::now(
        EventKind::DriftDetected,
        "é".repeat(MAX_FIELD),
        "x".repeat(10 * MAX_FIELD),
    );
    assert!(e.object.len() <= MAX_FIELD && e.object.ends_with('…'));
    assert!(e.reason.len() <= MAX_FIELD);
    let m = Event::now(EventKind::ApplyStep, "o", "r").with_message("\n".repeat(MAX_FIELD * 4));
    assert!(serde_json::to_vec(&m).unwrap().len() < MAX_LINE);
}

#[test]
fn recorded_events_read_back_in_order() {
    let dir = private_dir();
    assert_eq!(read(dir.path()).unwrap(), vec![], "no log yet: no events");
    let mut log = EventLog::open(dir.path()).unwrap();
    log.record(
        EventKind::PodCreated,
        "pod default/web-0",
        "placed on node1",
    );
    log.record_message(
        EventKind::DriftRepaired,
        "node node1",
        "route restored",
        "10.244.2.0/24 via 192.168.96.2",
    );
    let events = read(dir.path()).unwrap();
    assert_eq!(objects(&events), ["pod default/web-0", "node node1"]);
    assert_eq!(events[0].kind, EventKind::PodCreated);
    assert_eq!(
        events[1].message.as_deref(),
        Some("10.244.2.0/24 via 192.168.96.2")
    );
    assert!(events[0].unix_ms <= events[1].unix_ms && events[0].unix_ms > 1_600_000_000_000);
    let mode = fs::metadata(dir.path().join(EVENTS_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // A second writer (a CLI command) appends to the same log.
    EventLog::open(dir.path())
        .unwrap()
        .record(EventKind::FaultInjected, "node node2", "node-down");
    log.record(EventKind::NodeNotReady, "node node2", "no heartbeat");
    assert_eq!(read(dir.path()).unwrap().len(), 4);
    assert_eq!(log.failures(), 0);
}

#[test]
fn past_its_cap_the_log_is_rotated_and_the_previous_part_kept() {
    let dir = private_dir();
    let mut log = EventLog::with_cap(dir.path(), 300).unwrap();
    for i in 0..10 {
        log.record(
            EventKind::PodStarted,
            format!("pod default/web-{i}"),
            "started",
        );
    }
    let rotated = dir.path().join(ROTATED_FILE);
    let current = dir.path().join(EVENTS_FILE);
    assert!(fs::metadata(&rotated).unwrap().len() > 300);
    assert!(fs::metadata(&current).unwrap().len() <= 300);
    assert_eq!(
        fs::metadata(&rotated).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let events = read(dir.path()).unwrap();
    // What is kept is the newest events, in order, ending with the last.
    let kept: Vec<String> = (10 - events.len()..10)
        .map(|i| format!("pod default/web-{i}"))
        .collect();
    assert_eq!(objects(&events), kept);
    assert!(events.len() >= 3, "{events:?}");
    // Bounded: never more than two files of about the cap.
    assert!(fs::read_dir(dir.path()).unwrap().count() == 2);
}

/// A writer whose file another writer rotated appends to the new file,
/// not to the rotated one.
#[test]
fn a_writer_follows_another_writers_rotation() {
    let dir = private_dir();
    let mut a = EventLog::with_cap(dir.path(), 200).unwrap();
    let mut b = EventLog::with_cap(dir.path(), 200).unwrap();
    b.record(EventKind::ApplyStep, "b", "x".repeat(200));
    assert!(dir.path().join(ROTATED_FILE).exists());
    a.record(EventKind::ApplyStep, "a", "after the rotation");
    let current = fs::read_to_string(dir.path().join(EVENTS_FILE)).unwrap();
    assert!(current.contains(r#""object":"a""#), "{current}");
}

#[test]
fn lines_that_are_not_events_are_skipped_and_counted() {
    let dir = private_dir();
    let good = serde_json::to_string(&event(5, EventKind::PodReady, "pod a/b", "ready")).unwrap();
    let huge = format!("{{\"reason\":\"{}\"}}", "y".repeat(3 * MAX_LINE));
    let text = format!(
        "{good}\nnot json\n{{\"unixMs\":1}}\n\n{huge}\n{good}\n{{\"kind\":\"podReady\",\"unixMs\":-1,\"object\":\"\",\"reason\":\"\"}}\n{good}"
    );
    fs::write(dir.path().join(EVENTS_FILE), text).unwrap();
    fs::write(dir.path().join(ROTATED_FILE), "\u{0}\u{1}garbage").unwrap();
    let read = read_counted(dir.path()).unwrap();
    // Three good lines (the last without its newline); the rotated part's
    // garbage, `not json`, a partial event, the huge line and a negative
    // time skipped; the empty line ignored.
    assert_eq!(read.events.len(), 3);
    assert_eq!(read.skipped, 5);
}

#[test]
fn a_long_line_is_never_held_whole() {
    let mut lines = Lines::default();
    let mut out = ReadEvents::default();
    let chunk = vec![b'z'; 1 << 16];
    for _ in 0..64 {
        lines.feed(&chunk, &mut out);
        assert!(lines.partial.len() <= MAX_LINE);
    }
    lines.feed(b"\n{\"x\":1}\n", &mut out);
    assert_eq!(out.skipped, 2);
    assert!(lines.partial.is_empty() && !lines.overlong);
}

#[test]
fn a_follower_sees_every_event_across_rotations() {
    let dir = private_dir();
    let mut log = EventLog::with_cap(dir.path(), 400).unwrap();
    log.record(EventKind::Controller, "testbed", "started");
    let (mut f, read) = Follower::start(dir.path()).unwrap();
    assert_eq!(objects(&read.events), ["testbed"]);
    assert_eq!(f.poll().unwrap(), vec![]);
    let mut seen = Vec::new();
    let mut want = Vec::new();
    for i in 0..40 {
        let object = format!("pod default/web-{i}");
        log.record(EventKind::PodCreated, &object, "scaled up");
        want.push(object);
        // Look now and then: some rotations happen between two looks.
        if i % 3 == 0 {
            seen.extend(f.poll().unwrap());
        }
    }
    seen.extend(f.poll().unwrap());
    assert_eq!(objects(&seen), want);
    assert_eq!((f.skipped(), f.lost()), (0, 0));
    assert!(fs::metadata(dir.path().join(ROTATED_FILE)).is_ok());
}

#[test]
fn a_follower_started_at_the_end_sees_only_what_comes() {
    let dir = private_dir();
    // Nothing yet: the follower waits for the file to appear.
    let mut f = Follower::at_end(dir.path()).unwrap();
    assert_eq!(f.poll().unwrap(), vec![]);
    let mut log = EventLog::open(dir.path()).unwrap();
    log.record(EventKind::NodeReady, "node node1", "first");
    assert_eq!(objects(&f.poll().unwrap()), ["node node1"]);
    let mut g = Follower::at_end(dir.path()).unwrap();
    // Half a line written: nothing until it is complete.
    let line = serde_json::to_string(&event(7, EventKind::PodReady, "pod a/b", "r")).unwrap();
    let (head, tail) = line.split_at(10);
    let mut raw = OpenOptions::new()
        .append(true)
        .open(dir.path().join(EVENTS_FILE))
        .unwrap();
    raw.write_all(head.as_bytes()).unwrap();
    assert_eq!(g.poll().unwrap(), vec![]);
    raw.write_all(format!("{tail}\n").as_bytes()).unwrap();
    assert_eq!(objects(&g.poll().unwrap()), ["pod a/b"]);
    assert_eq!(objects(&f.poll().unwrap()), ["pod a/b"]);
}

/// Rotated between opening the current file and reading the rotated one:
/// the file read as the rotated part is the one followed, nothing twice.
#[test]
fn a_follower_that_starts_on_a_file_rotated_meanwhile_reads_it_once() {
    let dir = private_dir();
    let mut log = EventLog::with_cap(dir.path(), 100_000).unwrap();
    log.record(EventKind::PodReady, "old", "r");
    fs::rename(dir.path().join(EVENTS_FILE), dir.path().join(ROTATED_FILE)).unwrap();
    log.record(EventKind::PodReady, "one", "r");
    // Follower::start's first step, then a rotation, then the rest.
    let current = dir.path().join(EVENTS_FILE);
    let opened = File::open(&current).unwrap();
    fs::rename(&current, dir.path().join(ROTATED_FILE)).unwrap();
    let (mut f, read) = read::Follower::start_from(dir.path(), Some(opened)).unwrap();
    assert_eq!(objects(&read.events), ["one"]);
    log.record(EventKind::PodReady, "two", "r");
    assert_eq!(objects(&f.poll().unwrap()), ["two"]);
    assert_eq!(f.lost(), 0);
}

#[test]
fn the_text_form_has_aligned_columns() {
    let events = [
        event(
            1_795_921_965_123,
            EventKind::PodEvicted,
            "pod default/web-1",
            "node node2 not ready for 5s",
        ),
        event(
            1_795_921_965_200,
            EventKind::EndpointRemoved,
            "service default/web",
            "web-1 gone",
        ),
        Event {
            message: Some("line\n\u{1b}[31mred".into()),
            ..event(1_795_921_966_000, EventKind::ApplyStep, "testbed", "failed")
        },
    ];
    let text = render(&events);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "2026-11-29T03:12:45.123Z  podEvicted       pod default/web-1         node node2 not ready for 5s"
    );
    assert_eq!(
        lines[1],
        "2026-11-29T03:12:45.200Z  endpointRemoved  service default/web       web-1 gone"
    );
    // Control characters escaped: one line, no escape sequence.
    assert_eq!(
        lines[2],
        "2026-11-29T03:12:46.000Z  applyStep        testbed                   failed: line\\n\\u{1b}[31mred"
    );
    assert_eq!(lines.len(), 3);
    assert_eq!(render(&[]), "");
}
