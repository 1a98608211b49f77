//! The bytes of an `http/N[/path]` probe: the request it sends and the
//! reading of the answer (status line, end of headers, body), pure and
//! with checked access, since the answer is whatever the target sent.

use crate::check::Outcome;
use std::net::Ipv4Addr;

/// The most of an answer that is read: the status, headers and as much
/// body as fits.
pub const MAX_ANSWER: usize = 64 * 1024;

/// Why an answer is not an HTTP response.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// Nothing came back before the connection closed.
    #[error("HTTP: the connection closed without an answer")]
    Empty,
    /// The headers did not end before the answer did (or its bound).
    #[error("HTTP: the answer ended inside its headers")]
    Truncated,
    /// The first line is not `HTTP/x.y NNN ...`.
    #[error("HTTP: not a status line: {0:?}")]
    StatusLine(String),
}

/// An HTTP response's parts that a check looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The status code (100 to 999).
    pub status: u16,
    /// The body as far as it was read.
    pub body: &'a [u8],
}

/// The request for `path` on `host:port`, or `None` when `path` is not a
/// path a request line can carry (it must start with `/` and hold only
/// visible ASCII: no spaces, no line breaks).
pub fn request(path: &str, host: Ipv4Addr, port: u16) -> Option<String> {
    let fine = path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic());
    fine.then(|| {
        format!(
            "GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: testbed-check\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        )
    })
}

/// Where the headers of `buf` end: the offset of the body, after the first
/// empty line (`\r\n\r\n`, or a bare `\n\n` from a lax server).
pub fn headers_end(buf: &[u8]) -> Option<usize> {
    let crlf = find(buf, b"\r\n\r\n").map(|i| i + 4);
    let lf = find(buf, b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Reads a whole answer (as far as it was read: up to the end of the
/// connection or [`MAX_ANSWER`]).
pub fn parse(buf: &[u8]) -> Result<Response<'_>, Malformed> {
    if buf.is_empty() {
        return Err(Malformed::Empty);
    }
    let end = headers_end(buf).ok_or(Malformed::Truncated)?;
    let head = buf.get(..end).unwrap_or_default();
    let body = buf.get(end..).unwrap_or_default();
    let line_end = find(head, b"\n").unwrap_or(head.len());
    let line = head.get(..line_end).unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let status = status_code(line).ok_or_else(|| {
        let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
        Malformed::StatusLine(shown)
    })?;
    Ok(Response { status, body })
}

/// The code of a status line `HTTP/D.D NNN[ reason]`.
fn status_code(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/")?;
    let [major, b'.', minor, b' ', d0, d1, d2, tail @ ..] = rest else {
        return None;
    };
    let digits = [major, minor, d0, d1, d2];
    if !digits.iter().all(|d| d.is_ascii_digit()) || !matches!(tail.first(), None | Some(b' ')) {
        return None;
    }
    let code = [d0, d1, d2]
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(**d - b'0'));
    (code >= 100).then_some(code)
}

/// What an answer means for a check: a 2xx or 3xx status is reachable
/// (unless `body` is given and not in the body: [`Outcome::WrongBody`]),
/// another status or a malformed answer an error.
pub fn outcome(buf: &[u8], body: Option<&str>) -> Outcome {
    match parse(buf) {
        Err(e) => Outcome::Error(e.to_string()),
        Ok(r) if !(200..400).contains(&r.status) => Outcome::Error(format!("HTTP {}", r.status)),
        Ok(r) => match body {
            Some(text) if find(r.body, text.as_bytes()).is_none() => Outcome::WrongBody,
            _ => Outcome::Ok,
        },
    }
}

/// The first offset of `needle` in `hay` (an empty needle is at 0).
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_path_and_host_and_refuses_what_would_break_its_line() {
        let r = request("/healthz?x=1", Ipv4Addr::new(10, 0, 0, 1), 8080).unwrap();
        assert!(r.starts_with("GET /healthz?x=1 HTTP/1.0\r\nHost: 10.0.0.1:8080\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        for bad in ["", "x", "/a b", "/a\r\nX: y", "/é", "/\t"] {
            assert_eq!(request(bad, Ipv4Addr::LOCALHOST, 80), None, "{bad:?}");
        }
    }

    #[test]
    fn statuses_and_bodies_give_their_outcomes() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello web-1\n";
        assert_eq!(outcome(ok, None), Outcome::Ok);
        assert_eq!(outcome(ok, Some("web-1")), Outcome::Ok);
        assert_eq!(outcome(ok, Some("web-2")), Outcome::WrongBody);
        // The text must be in the body, not in the headers.
        assert_eq!(outcome(ok, Some("text/plain")), Outcome::WrongBody);
        assert_eq!(outcome(b"HTTP/1.0 301 Moved\r\n\r\n", None), Outcome::Ok);
        assert_eq!(outcome(b"HTTP/1.0 204\r\n\r\n", Some("")), Outcome::Ok);
        assert_eq!(
            outcome(b"HTTP/1.1 404 Not Found\r\n\r\nweb-1", Some("web-1")),
            Outcome::Error("HTTP 404".into())
        );
        assert_eq!(
            outcome(b"HTTP/1.1 503 x\n\n", None),
            Outcome::Error("HTTP 503".into())
        );
    }

    #[test]
    fn malformed_answers_are_errors_that_say_why() {
        let cases: [(&[u8], Malformed); 7] = [
            (b"", Malformed::Empty),
            (b"HTTP/1.1 200 OK\r\nX: y\r\n", Malformed::Truncated),
            (
                b"SSH-2.0-OpenSSH\r\n\r\n",
                Malformed::StatusLine("SSH-2.0-OpenSSH".into()),
            ),
            (
                b"HTTP/1.1 20 OK\r\n\r\n",
                Malformed::StatusLine("HTTP/1.1 20 OK".into()),
            ),
            (
                b"HTTP/1.1 2000\r\n\r\n",
                Malformed::StatusLine("HTTP/1.1 2000".into()),
            ),
            (
                b"HTTP/1.1 099 x\r\n\r\n",
                Malformed::StatusLine("HTTP/1.1 099 x".into()),
            ),
            (
                b"HTTP/x.1 200 OK\r\n\r\n",
                Malformed::StatusLine("HTTP/x.1 200 OK".into()),
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes), Err(want.clone()), "{bytes:?}");
            assert_eq!(outcome(bytes, None), Outcome::Error(want.to_string()));
        }
    }

    #[test]
    fn the_body_starts_after_the_first_empty_line_either_way() {
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\n\nab\r\n\r\ncd").unwrap().body,
            b"ab\r\n\r\ncd"
        );
        assert_eq!(
            parse(b"HTTP/1.0 200 OK\r\n\r\nab\n\ncd").unwrap().body,
            b"ab\n\ncd"
        );
    }

    #[test]
    fn any_bytes_parse_without_panicking() {
        // A cheap fuzz: every prefix and single-byte mutation of answers.
        let seeds: [&[u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody",
            b"HTTP/1.0 404 \n\n",
            b"\xff\xfe\r\n\r\n\x00",
        ];
        let mut state = 0x9e37_79b9_u32;
        for seed in seeds {
            crate::check::probe::fuzz::variants(seed, 20_000, true, &mut state, |b| {
                let _ = outcome(b, Some("body"));
                let _ = outcome(b, Some("od"));
            });
        }
    }
}
