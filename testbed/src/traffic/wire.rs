//! The bytes the generators and `testbed serve` exchange, pure and with
//! checked access (answers are whatever the other side sent): the name a
//! server gives itself (HTTP header `X-Testbed-Pod`, a `pod NAME` line for
//! TCP greetings, streams and UDP echoes), the UDP echo's request and the
//! reading of its reply, and the HTTP answer of a generator's GET.

use super::SampleOutcome;
use crate::check::probe::http;

/// The HTTP header naming the pod that answered.
pub const POD_HEADER: &str = "X-Testbed-Pod";
/// The longest name a server may give (a namespace, `/` and a pod name).
pub const MAX_NAME: usize = 253;
/// The prefix of a `pod NAME` line.
const POD_LINE: &[u8] = b"pod ";
/// What starts a udpEcho request (followed by its sequence number).
const UDP_MAGIC: &[u8] = b"testbed-udp ";

/// Whether `name` may name a server: 1 to [`MAX_NAME`] characters among
/// letters, digits and `.-_:/` (a pod key `shop/web-1`, `host:client`).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:/".contains(&b))
}

/// A name read from an answer, when it is one [`valid_name`] accepts.
fn name_of(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    valid_name(text).then(|| text.to_string())
}

/// The `pod NAME\n` line a server sends or appends.
pub fn pod_line(name: &str) -> String {
    format!("pod {name}\n")
}

/// The name in a `pod NAME\n` line at the start of `buf`, and the line's
/// length; `None` when `buf` does not start with a whole such line.
pub fn read_pod_line(buf: &[u8]) -> Option<(String, usize)> {
    let rest = buf.strip_prefix(POD_LINE)?;
    let end = rest.iter().take(MAX_NAME + 1).position(|&b| b == b'\n')?;
    let name = name_of(rest.get(..end)?)?;
    Some((name, POD_LINE.len() + end + 1))
}

/// The datagram of udpEcho send `seq`.
pub fn udp_request(seq: u64) -> Vec<u8> {
    let mut b = UDP_MAGIC.to_vec();
    b.extend_from_slice(seq.to_string().as_bytes());
    b.push(b'\n');
    b
}

/// What `testbed serve` answers to datagram `request`: the datagram and
/// then a `pod NAME` line.
pub fn udp_reply(request: &[u8], name: &str) -> Vec<u8> {
    let mut b = request.to_vec();
    b.extend_from_slice(pod_line(name).as_bytes());
    b
}

/// Reads `reply` to udpEcho send `seq`: `None` when it answers another
/// send (it does not start with that send's datagram), else the backend it
/// names, if it names one.
pub fn udp_answer(reply: &[u8], seq: u64) -> Option<Option<String>> {
    let rest = reply.strip_prefix(udp_request(seq).as_slice())?;
    Some(read_pod_line(rest).map(|(name, _)| name))
}

/// The value of header `name` (case-insensitive) in the head of an HTTP
/// answer, trimmed.
pub fn header<'a>(head: &'a [u8], name: &str) -> Option<&'a [u8]> {
    head.split(|&b| b == b'\n').skip(1).find_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (key, value) = line.split_at(colon);
        key.eq_ignore_ascii_case(name.as_bytes())
            .then(|| value.get(1..).unwrap_or_default().trim_ascii())
    })
}

/// What a generator's GET got back, as read so far: the outcome (2xx ok;
/// another status or a malformed answer `wrongBody`; nothing at all
/// `error`), the body's length, and the backend named by the
/// [`POD_HEADER`] header.
pub fn http_answer(buf: &[u8]) -> (SampleOutcome, u64, Option<String>) {
    let response = match http::parse(buf) {
        Ok(r) => r,
        Err(http::Malformed::Empty) => return (SampleOutcome::Error, 0, None),
        Err(_) => return (SampleOutcome::WrongBody, buf.len() as u64, None),
    };
    let head = buf
        .get(..buf.len() - response.body.len())
        .unwrap_or_default();
    let backend = header(head, POD_HEADER).and_then(name_of);
    let outcome = if (200..300).contains(&response.status) {
        SampleOutcome::Ok
    } else {
        SampleOutcome::WrongBody
    };
    (outcome, response.body.len() as u64, backend)
}

/// The answer of `testbed serve` to `GET path`: `200` with body `pod NAME`
/// and the [`POD_HEADER`] header, or the status `NNN` asked for by
/// `/status/NNN` (100 to 599), or `400` for a request it cannot read.
pub fn http_response(request: &[u8], name: &str) -> String {
    let status = match request_path(request) {
        None => 400,
        Some(path) => path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (100..600).contains(s))
            .unwrap_or(200),
    };
    let body = pod_line(name);
    format!(
        "HTTP/1.0 {status} {}\r\n{POD_HEADER}: {name}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if status == 200 { "OK" } else { "Status" },
        body.len()
    )
}

/// The path of a `GET` or `HEAD` request line.
fn request_path(request: &[u8]) -> Option<&str> {
    let line = request.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, path, version) = (parts.next()?, parts.next()?, parts.next()?);
    let fine = matches!(method, "GET" | "HEAD")
        && path.starts_with('/')
        && version.starts_with("HTTP/")
        && parts.next().is_none();
    fine.then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["web-1", "shop/web-1", "host:client", "a.b_c"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "x".repeat(MAX_NAME + 1);
        for bad in ["", "a b", "a\nb", "é", "<script>", long.as_str()] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn pod_lines_are_read_whole_or_not_at_all() {
        let line = pod_line("shop/web-1");
        assert_eq!(
            read_pod_line(format!("{line}data").as_bytes()),
            Some(("shop/web-1".into(), line.len()))
        );
        assert_eq!(read_pod_line(b"pod shop/web-1"), None, "no newline yet");
        assert_eq!(read_pod_line(b"pod a b\n"), None);
        assert_eq!(read_pod_line(b"pod \n"), None);
        assert_eq!(read_pod_line(b"SSH-2.0\n"), None);
        let long = format!("pod {}\n", "x".repeat(MAX_NAME + 1));
        assert_eq!(read_pod_line(long.as_bytes()), None);
    }

    #[test]
    fn udp_replies_are_matched_to_their_send_by_sequence_number() {
        let reply = udp_reply(&udp_request(41), "shop/web-2");
        assert_eq!(udp_answer(&reply, 41), Some(Some("shop/web-2".into())));
        assert_eq!(udp_answer(&reply, 4), None, "a prefix of another number");
        assert_eq!(udp_answer(&reply, 411), None);
        // A plain echo server answers without naming itself.
        assert_eq!(udp_answer(&udp_request(7), 7), Some(None));
        assert_eq!(udp_answer(b"", 7), None);
        assert_eq!(
            udp_answer(&udp_reply(&udp_request(7), "a b"), 7),
            Some(None)
        );
    }

    #[test]
    fn http_answers_give_outcome_body_length_and_backend() {
        let ok = http_response(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n", "shop/web-1");
        assert_eq!(
            http_answer(ok.as_bytes()),
            (SampleOutcome::Ok, 15, Some("shop/web-1".into()))
        );
        let teapot = http_response(b"GET /status/418 HTTP/1.1\r\n\r\n", "w");
        assert!(teapot.starts_with("HTTP/1.0 418 "), "{teapot}");
        assert_eq!(http_answer(teapot.as_bytes()).0, SampleOutcome::WrongBody);
        let other = b"HTTP/1.1 204 No Content\r\nx-testbed-pod:  web-9 \r\n\r\n";
        assert_eq!(
            http_answer(other),
            (SampleOutcome::Ok, 0, Some("web-9".into()))
        );
        let unnamed = b"HTTP/1.1 200 OK\r\n\r\nhello";
        assert_eq!(http_answer(unnamed), (SampleOutcome::Ok, 5, None));
        let bad_name = b"HTTP/1.1 200 OK\r\nX-Testbed-Pod: a b\r\n\r\n";
        assert_eq!(http_answer(bad_name).2, None);
        assert_eq!(http_answer(b""), (SampleOutcome::Error, 0, None));
        assert_eq!(
            http_answer(b"HTTP/1.1 200 OK\r\n").0,
            SampleOutcome::WrongBody
        );
        assert_eq!(http_answer(b"garbage\r\n\r\n").0, SampleOutcome::WrongBody);
    }

    #[test]
    fn serve_answers_only_readable_requests() {
        for bad in [
            &b"POST / HTTP/1.0\r\n\r\n"[..],
            b"GET /\r\n\r\n",
            b"GET x HTTP/1.0\r\n",
            b"\xff",
        ] {
            assert!(
                http_response(bad, "w").starts_with("HTTP/1.0 400 "),
                "{bad:?}"
            );
        }
        assert!(http_response(b"HEAD /a HTTP/1.1\r\n", "w").starts_with("HTTP/1.0 200 OK"));
        assert!(http_response(b"GET /status/99 HTTP/1.1\r\n", "w").starts_with("HTTP/1.0 200 "));
    }

    #[test]
    fn any_bytes_are_read_without_panicking() {
        let seeds: [Vec<u8>; 3] = [
            http_response(b"GET / HTTP/1.0\r\n\r\n", "shop/web-1").into_bytes(),
            udp_reply(&udp_request(12345), "shop/web-1"),
            pod_line("n").into_bytes(),
        ];
        let mut state = 0x1234_5678_u32;
        for seed in &seeds {
            crate::check::probe::fuzz::variants(seed, 10_000, false, &mut state, |b| {
                let _ = (http_answer(b), udp_answer(b, 12345), read_pod_line(b));
                let _ = http_response(b, "w");
            });
        }
    }
}
