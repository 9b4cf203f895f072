//! [`LenientIo`]: repairs request lines that desk phones send but HTTP parsers refuse.
//!
//! Grandstream phones put display names into the Action URL unencoded, so the request line
//! reads `GET /action-url/incoming_call?display_remote=John Doe HTTP/1.1`. hyper (through
//! httparse) rejects that line with 400, because a space ends the request target. A phone
//! does not retry, so the event would be lost.
//!
//! The fix sits *below* hyper, on the byte stream of each connection. The wrapper frames
//! HTTP/1 requests just enough to find request lines: the line itself, the header lines up to
//! the blank line, and a `Content-Length` body. In each request line it percent-encodes the
//! bytes httparse refuses inside a target: spaces that are not the separator before
//! `HTTP/1.x`, control characters, and bytes ≥ 0x80. Everything else passes through
//! untouched. When it changed a target it adds the header `x-ctibridge-raw-target` with the
//! original, so the journal still records the target exactly as received.
//!
//! hyper also refuses any target longer than 65,534 bytes (414). Phones never send one that
//! long (Yealink caps an Action URL at 511 characters), but a bad actor or a broken template
//! might. A target over [`LONG_TARGET`] is handed to hyper as its path alone, and the full
//! target travels in the same header, so the handler still sees every byte.
//!
//! After a `Transfer-Encoding: chunked` body the wrapper passes the rest of the connection
//! through unchanged: no phone sends one, and framing chunks is hyper's job.

use memchr::memchr;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Header carrying the original request target when [`LenientIo`] repaired it.
pub const RAW_TARGET_HEADER: &str = "x-ctibridge-raw-target";

/// Lines longer than this are passed through unrepaired (hyper then answers 414/431).
const MAX_LINE: usize = 256 * 1024;

/// Targets longer than this reach hyper as their path only (its own limit is 65,534).
pub const LONG_TARGET: usize = 32 * 1024;

#[derive(Debug)]
enum Phase {
    RequestLine,
    Headers { content_length: u64, chunked: bool },
    Body { remaining: u64 },
    Passthrough,
}

/// Wraps a connection and repairs request lines on the way in; writes pass through.
pub struct LenientIo<T> {
    inner: T,
    phase: Phase,
    line: Vec<u8>,
    out: VecDeque<u8>,
    scratch: Box<[u8]>,
    eof: bool,
}

impl<T> LenientIo<T> {
    pub fn new(inner: T) -> Self {
        LenientIo {
            inner,
            phase: Phase::RequestLine,
            line: Vec::new(),
            out: VecDeque::new(),
            scratch: vec![0u8; 16 * 1024].into_boxed_slice(),
            eof: false,
        }
    }

    /// Feeds received bytes through the request framing.
    fn process(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            match &mut self.phase {
                Phase::Passthrough => {
                    self.out.extend(input);
                    return;
                }
                Phase::Body { remaining } => {
                    let n = (*remaining).min(input.len() as u64) as usize;
                    self.out.extend(&input[..n]);
                    *remaining -= n as u64;
                    input = &input[n..];
                    if *remaining == 0 {
                        self.phase = Phase::RequestLine;
                    }
                }
                Phase::RequestLine | Phase::Headers { .. } => {
                    let Some(nl) = memchr(b'\n', input) else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_LINE {
                            // Not a line we can help with: hand everything to hyper as is.
                            self.out.extend(self.line.drain(..));
                            self.phase = Phase::Passthrough;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&input[..=nl]);
                    input = &input[nl + 1..];
                    let line = std::mem::take(&mut self.line);
                    self.complete_line(line);
                }
            }
        }
    }

    fn complete_line(&mut self, line: Vec<u8>) {
        let content = trim_eol(&line);
        match &mut self.phase {
            Phase::RequestLine => {
                if content.is_empty() {
                    // Blank lines between requests are allowed (RFC 9112 §2.2).
                    self.out.extend(&line);
                    return;
                }
                match repair_request_line(content) {
                    Some((fixed, original)) => {
                        self.out.extend(&fixed);
                        self.out.extend(b"\r\n");
                        self.out.extend(RAW_TARGET_HEADER.as_bytes());
                        self.out.extend(b": ");
                        self.out.extend(header_safe(&original));
                        self.out.extend(b"\r\n");
                    }
                    None => self.out.extend(&line),
                }
                self.phase = Phase::Headers {
                    content_length: 0,
                    chunked: false,
                };
            }
            Phase::Headers {
                content_length,
                chunked,
            } => {
                if header_value(content, RAW_TARGET_HEADER.as_bytes()).is_some() {
                    // Only this wrapper may set it: a client's own copy is dropped.
                    return;
                }
                self.out.extend(&line);
                if content.is_empty() {
                    self.phase = if *chunked {
                        Phase::Passthrough
                    } else if *content_length > 0 {
                        Phase::Body {
                            remaining: *content_length,
                        }
                    } else {
                        Phase::RequestLine
                    };
                    return;
                }
                if let Some(v) = header_value(content, b"content-length") {
                    *content_length = std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                } else if let Some(v) = header_value(content, b"transfer-encoding") {
                    *chunked = v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked");
                }
            }
            Phase::Body { .. } | Phase::Passthrough => self.out.extend(&line),
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn header_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let colon = memchr(b':', line)?;
    line[..colon]
        .eq_ignore_ascii_case(name)
        .then(|| &line[colon + 1..])
}

/// Bytes httparse accepts in a request target (RFC 3986 characters plus a few it tolerates).
fn target_byte_ok(b: u8) -> bool {
    b.is_ascii_graphic()
        && !matches!(
            b,
            b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// `METHOD SP target SP HTTP/x.y` where `target` may hold raw spaces and odd bytes. Returns
/// the repaired line and the original target when something had to change.
fn repair_request_line(line: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let first_space = memchr(b' ', line)?;
    let (method, rest) = (&line[..first_space], &line[first_space + 1..]);
    // The version is the last word, if it looks like one; everything between is the target.
    let last_space = rest.iter().rposition(|&b| b == b' ')?;
    let (target, version) = (&rest[..last_space], &rest[last_space + 1..]);
    if !version.starts_with(b"HTTP/") || target.is_empty() {
        return None;
    }
    let long = target.len() > LONG_TARGET;
    if !long && target.iter().all(|&b| target_byte_ok(b)) {
        return None;
    }
    let mut fixed = Vec::with_capacity(line.len().min(LONG_TARGET) + 16);
    fixed.extend_from_slice(method);
    fixed.push(b' ');
    let shown = if long {
        let path_end = memchr(b'?', target).unwrap_or(target.len());
        &target[..path_end.min(LONG_TARGET)]
    } else {
        target
    };
    for &b in shown {
        if target_byte_ok(b) {
            fixed.push(b);
        } else {
            fixed.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    fixed.push(b' ');
    fixed.extend_from_slice(version);
    Some((fixed, target.to_vec()))
}

/// A header value cannot hold control characters; escape those (rare) as `%XX`.
fn header_safe(original: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(original.len());
    for &b in original {
        if b < 0x20 || b == 0x7f {
            v.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            v.push(b);
        }
    }
    v
}

impl<T: AsyncRead + Unpin> AsyncRead for LenientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.out.is_empty() {
                let (a, b) = this.out.as_slices();
                let chunk = if a.is_empty() { b } else { a };
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                this.out.drain(..n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // Whatever partial line is left goes to hyper as is.
                if !this.line.is_empty() {
                    let line = std::mem::take(&mut this.line);
                    this.out.extend(line);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    if n == 0 {
                        this.eof = true;
                    } else {
                        let data = this.scratch[..n].to_vec();
                        this.process(&data);
                    }
                }
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LenientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &[u8], chunk: usize) -> Vec<u8> {
        let mut io = LenientIo::new(tokio::io::empty());
        for part in input.chunks(chunk) {
            io.process(part);
        }
        io.out.into_iter().collect()
    }

    #[test]
    fn clean_requests_pass_through_byte_for_byte() {
        let input = b"GET /action-url/dnd_on?mac=001565aabb01&remote=+1555 HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        for chunk in [1, 3, 1000] {
            assert_eq!(run(input, chunk), input.to_vec());
        }
    }

    #[test]
    fn raw_spaces_are_encoded_and_the_original_kept() {
        let input = b"GET /action-url/incoming_call?display_remote=John Doe&x=1 HTTP/1.1\r\nHost: x\r\n\r\n";
        let expected = b"GET /action-url/incoming_call?display_remote=John%20Doe&x=1 HTTP/1.1\r\nx-ctibridge-raw-target: /action-url/incoming_call?display_remote=John Doe&x=1\r\nHost: x\r\n\r\n";
        for chunk in [1, 7, 1000] {
            assert_eq!(run(input, chunk), expected.to_vec());
        }
    }

    #[test]
    fn bodies_are_not_mistaken_for_request_lines() {
        let input = b"POST /a HTTP/1.1\r\nContent-Length: 14\r\n\r\nGET /x y HTTP/GET /n m HTTP/1.1\r\n\r\n";
        let out = run(input, 5);
        assert!(out.starts_with(b"POST /a HTTP/1.1\r\nContent-Length: 14\r\n\r\nGET /x y HTTP/"));
        assert!(out.ends_with(b"GET /n%20m HTTP/1.1\r\nx-ctibridge-raw-target: /n m\r\n\r\n"));
    }

    #[test]
    fn a_very_long_target_reaches_hyper_as_its_path_with_the_whole_target_in_the_header() {
        let target = format!("/action-url/x?q={}", "a".repeat(70_000));
        let input = format!("GET {target} HTTP/1.1\r\n\r\n");
        let out = run(input.as_bytes(), 4096);
        let expected =
            format!("GET /action-url/x HTTP/1.1\r\nx-ctibridge-raw-target: {target}\r\n\r\n");
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }

    #[test]
    fn a_client_cannot_forge_the_raw_target_header() {
        let input = b"GET /a HTTP/1.1\r\nX-Ctibridge-Raw-Target: /forged\r\nHost: x\r\n\r\n";
        assert_eq!(
            run(input, 4),
            b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()
        );
    }

    #[test]
    fn non_utf8_and_control_bytes_are_encoded() {
        let input = b"GET /a?n=Jos\xe9\x01 HTTP/1.1\r\n\r\n";
        let out = run(input, 100);
        assert!(out.starts_with(
            b"GET /a?n=Jos%E9%01 HTTP/1.1\r\nx-ctibridge-raw-target: /a?n=Jos\xe9%01\r\n"
        ));
    }
}
