//! HTTP/1.1 framing for the upstream exchange, pure: the request's bytes, the response head
//! (parsed by httparse) and the body's framing (content length, chunked with httparse's
//! chunk-size parser, or until close). No IO: the caller feeds what it read.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, Version};

/// Most bytes of a response head (status line and headers).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most headers in a response head.
pub const MAX_HEADERS: usize = 100;
/// Most bytes of a chunk-size line (with extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Most bytes of trailers after the last chunk.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Bodies at most this long are copied behind the head, for one write.
pub const JOIN_BODY_MAX: usize = 16 * 1024;

/// A response the upstream sent that HTTP/1.1 does not allow, or that is past our limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream HTTP/1.1 response: {0}")]
pub struct Malformed(pub &'static str);

/// The head of a request, serialised: request line, headers, `content-length` (unless the
/// request sets one) and the blank line; the body follows it when it is short (`joined`).
pub fn encode_request(req: &Request<Bytes>) -> (Vec<u8>, bool) {
    let body = req.body();
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let headers = req.headers();
    let guess = 64 + path.len() + headers.len() * 48;
    let joined = body.len() <= JOIN_BODY_MAX;
    let mut out = Vec::with_capacity(guess + if joined { body.len() } else { 0 });
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if joined {
        out.extend_from_slice(body);
    }
    (out, joined)
}

/// A parsed final response head.
#[derive(Debug)]
pub struct Head {
    /// Status.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Headers as sent.
    pub headers: HeaderMap,
    /// How the body is framed.
    pub framing: Framing,
    /// Whether the connection may carry another request after this response.
    pub keep_alive: bool,
}

/// Parse a response head from the front of `buf`, consuming it: `Ok(None)` while it is
/// incomplete. Interim (1xx) responses are consumed and skipped.
pub fn parse_head(buf: &mut BytesMut) -> Result<Option<Head>, Malformed> {
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut res = httparse::Response::new(&mut slots);
        let len = match res.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
                return Err(Malformed("response head too large"));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Malformed("too many headers")),
            Err(_) => return Err(Malformed("unparsable response head")),
        };
        if len > MAX_HEAD_BYTES {
            return Err(Malformed("response head too large"));
        }
        let code = res.code.ok_or(Malformed("no status"))?;
        let status = StatusCode::from_u16(code).map_err(|_| Malformed("bad status"))?;
        if status.is_informational() {
            if code == 101 {
                return Err(Malformed("unexpected protocol switch"));
            }
            buf.advance(len);
            continue;
        }
        let version = match res.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let mut headers = HeaderMap::with_capacity(res.headers.len());
        for h in res.headers.iter() {
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| Malformed("header name"))?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| Malformed("header value"))?;
            headers.append(name, value);
        }
        buf.advance(len);
        let (framing, framing_reusable) = framing(status, &headers)?;
        let keep_alive = framing_reusable
            && version == Version::HTTP_11
            && !has_token(&headers, &CONNECTION, "close");
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// Whether a comma-separated header holds `token` (case-insensitive).
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// The body's framing (RFC 9112 §6.3) and whether the connection can be reused after it.
fn framing(status: StatusCode, headers: &HeaderMap) -> Result<(Framing, bool), Malformed> {
    if status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), true));
    }
    if headers.contains_key(TRANSFER_ENCODING) {
        let last = headers
            .get_all(TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .map(<[u8]>::trim_ascii)
            .rfind(|t| !t.is_empty());
        // With a content length too, the message is suspect: read it, never reuse.
        let clean = !headers.contains_key(CONTENT_LENGTH);
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case(b"chunked") => (Framing::Chunked(Chunk::Size), clean),
            _ => (Framing::Close, false),
        });
    }
    let mut length = None;
    for v in headers.get_all(CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 18 {
                return Err(Malformed("bad content-length"));
            }
            let n: u64 = part.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|l| l != n) {
                return Err(Malformed("conflicting content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (Framing::Length(n), true),
        None => (Framing::Close, false),
    })
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines until a blank one; this many bytes seen.
    Trailers(usize),
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes left.
    Length(u64),
    /// Chunked.
    Chunked(Chunk),
    /// At the end of the connection.
    Close,
    /// Ended.
    Done,
}

/// What decoding the buffered bytes gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body data.
    Data(Bytes),
    /// Nothing more until more bytes are read; at least this many would help (a hint for
    /// the read size, 0 when unknown).
    NeedMore(u64),
    /// The body ended (with `Framing::Close`, only at the end of the input).
    End,
}

impl Framing {
    /// Decode what `buf` holds. `eof`: the connection has no more to give.
    pub fn decode(&mut self, buf: &mut BytesMut, eof: bool) -> Result<Decoded, Malformed> {
        loop {
            match *self {
                Framing::Done => return Ok(Decoded::End),
                Framing::Length(0) => {
                    *self = Framing::Done;
                }
                Framing::Length(left) => {
                    if buf.is_empty() {
                        if eof {
                            return Err(Malformed("body shorter than its content-length"));
                        }
                        return Ok(Decoded::NeedMore(left));
                    }
                    let n = take_len(left, buf.len());
                    *self = Framing::Length(left - n as u64);
                    return Ok(Decoded::Data(buf.split_to(n).freeze()));
                }
                Framing::Close => {
                    if !buf.is_empty() {
                        return Ok(Decoded::Data(buf.split().freeze()));
                    }
                    if eof {
                        *self = Framing::Done;
                        return Ok(Decoded::End);
                    }
                    return Ok(Decoded::NeedMore(0));
                }
                Framing::Chunked(chunk) => match decode_chunk(chunk, buf)? {
                    Step::Next(next) => *self = next,
                    Step::Data(next, data) => {
                        *self = next;
                        return Ok(Decoded::Data(data));
                    }
                    Step::NeedMore(_) if eof => {
                        return Err(Malformed("chunked body cut short"));
                    }
                    Step::NeedMore(hint) => return Ok(Decoded::NeedMore(hint)),
                },
            }
        }
    }
}

fn take_len(left: u64, have: usize) -> usize {
    usize::try_from(left).map_or(have, |l| l.min(have))
}

enum Step {
    Next(Framing),
    Data(Framing, Bytes),
    NeedMore(u64),
}

fn decode_chunk(chunk: Chunk, buf: &mut BytesMut) -> Result<Step, Malformed> {
    Ok(match chunk {
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            Ok(httparse::Status::Complete((used, size))) => {
                buf.advance(used);
                Step::Next(Framing::Chunked(if size == 0 {
                    Chunk::Trailers(0)
                } else {
                    Chunk::Data(size)
                }))
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => {
                return Err(Malformed("chunk-size line too long"));
            }
            Ok(httparse::Status::Partial) => Step::NeedMore(0),
            Err(_) => return Err(Malformed("bad chunk size")),
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore(left + 2));
            }
            let n = take_len(left, buf.len());
            let rest = left - n as u64;
            let next = if rest == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(rest)
            };
            Step::Data(Framing::Chunked(next), buf.split_to(n).freeze())
        }
        Chunk::DataEnd => match buf.get(..2) {
            None if buf.first().is_some_and(|&b| b != b'\r') => {
                return Err(Malformed("chunk data longer than its size"));
            }
            None => Step::NeedMore(0),
            Some(b"\r\n") => {
                buf.advance(2);
                Step::Next(Framing::Chunked(Chunk::Size))
            }
            Some(_) => return Err(Malformed("chunk data longer than its size")),
        },
        Chunk::Trailers(seen) => match memchr::memmem::find(buf, b"\r\n") {
            Some(0) => {
                buf.advance(2);
                Step::Next(Framing::Done)
            }
            Some(i) if seen + i + 2 <= MAX_TRAILER_BYTES => {
                buf.advance(i + 2);
                Step::Next(Framing::Chunked(Chunk::Trailers(seen + i + 2)))
            }
            Some(_) => return Err(Malformed("trailers too large")),
            None if seen + buf.len() > MAX_TRAILER_BYTES => {
                return Err(Malformed("trailers too large"));
            }
            None => Step::NeedMore(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<Head>, Malformed> {
        parse_head(&mut BytesMut::from(text))
    }

    /// Decode `input` fed in pieces of `step` bytes; the data and whether it ended cleanly.
    fn decode_in_steps(
        mut framing: Framing,
        input: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, usize), Malformed> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut fed = 0;
        loop {
            let eof = fed == input.len();
            match framing.decode(&mut buf, eof)? {
                Decoded::Data(d) => out.extend_from_slice(&d),
                Decoded::End => return Ok((out, buf.len())),
                Decoded::NeedMore(_) => {
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    #[test]
    fn a_request_is_one_buffer_with_its_length() {
        let req = Request::builder()
            .method("POST")
            .uri("/v1/chat/completions?x=1")
            .header("host", "api.example.com")
            .body(Bytes::from_static(b"{\"a\":1}"))
            .unwrap();
        let (bytes, joined) = encode_request(&req);
        assert!(joined);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: api.example.com\r\n\
             content-length: 7\r\n\r\n{\"a\":1}"
        );
        let big = Request::new(Bytes::from(vec![b'x'; JOIN_BODY_MAX + 1]));
        let (bytes, joined) = encode_request(&big);
        assert!(!joined);
        assert!(bytes.ends_with(b"content-length: 16385\r\n\r\n"));
    }

    #[test]
    fn heads_give_status_headers_framing_and_reuse() {
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: b\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.status, 200);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);

        let h = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(h.keep_alive);

        let closing = head("HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(closing.framing, Framing::Close);
        assert!(!closing.keep_alive);

        let old = head("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!old.keep_alive);

        let both =
            head("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(both.framing, Framing::Chunked(Chunk::Size));
        assert!(!both.keep_alive, "a message framed twice is never reused");

        let empty = head("HTTP/1.1 204 No Content\r\nContent-Length: 9\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(empty.framing, Framing::Length(0));
    }

    #[test]
    fn interim_responses_are_skipped_and_partial_heads_wait() {
        let mut buf = BytesMut::from("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 429 Too Many\r\nconte");
        assert!(parse_head(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"nt-length: 2\r\n\r\nok");
        let h = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(h.status, 429);
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn bad_heads_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(head(bad).is_err(), "{bad:?}");
        }
        let same = head("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n").unwrap();
        assert_eq!(same.unwrap().framing, Framing::Length(3));
        let many: String = (0..MAX_HEADERS + 1)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        assert_eq!(
            head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")).unwrap_err(),
            Malformed("too many headers")
        );
        let huge = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(head(&huge).is_err());
    }

    #[test]
    fn chunked_bodies_decode_whatever_the_read_sizes() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
        for step in 1..=body.len() {
            let (data, left) = decode_in_steps(Framing::Chunked(Chunk::Size), body, step).unwrap();
            assert_eq!(data, b"hello, world", "step {step}");
            assert_eq!(left, 0);
        }
        let mut next = BytesMut::from(&b"3\r\nabc\r\n0\r\n\r\nHTTP/1.1"[..]);
        let mut f = Framing::Chunked(Chunk::Size);
        assert_eq!(
            f.decode(&mut next, false).unwrap(),
            Decoded::Data("abc".into())
        );
        assert_eq!(f.decode(&mut next, false).unwrap(), Decoded::End);
        assert_eq!(
            &next[..],
            b"HTTP/1.1",
            "what follows the body is left unread"
        );
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for (bad, why) in [
            (&b"5\r\nhelloXX"[..], "chunk data longer than its size"),
            (b"zz\r\n", "bad chunk size"),
            (b"5\r\nhel", "chunked body cut short"),
            (b"5\r\nhello\r\n", "chunked body cut short"),
        ] {
            let got = decode_in_steps(Framing::Chunked(Chunk::Size), bad, 64);
            assert_eq!(got.unwrap_err(), Malformed(why), "{bad:?}");
        }
        let long_line = vec![b'1'; MAX_CHUNK_LINE + 1];
        assert!(decode_in_steps(Framing::Chunked(Chunk::Size), &long_line, 8192).is_err());
        let mut trailers = b"0\r\n".to_vec();
        trailers.extend(std::iter::repeat_n(b"x: 1\r\n", 4000).flatten());
        assert_eq!(
            decode_in_steps(Framing::Chunked(Chunk::Size), &trailers, 4096).unwrap_err(),
            Malformed("trailers too large")
        );
    }

    #[test]
    fn length_and_close_framing() {
        let (data, left) = decode_in_steps(Framing::Length(5), b"helloEXTRA", 3).unwrap();
        assert_eq!(data, b"hello");
        assert!(left > 0, "bytes after the body stay in the buffer");
        assert_eq!(
            decode_in_steps(Framing::Length(5), b"hel", 2).unwrap_err(),
            Malformed("body shorter than its content-length")
        );
        let (data, _) = decode_in_steps(Framing::Close, b"until the end", 4).unwrap();
        assert_eq!(data, b"until the end");
        let mut f = Framing::Length(10);
        assert_eq!(
            f.decode(&mut BytesMut::new(), false).unwrap(),
            Decoded::NeedMore(10),
            "a known length is the read-size hint"
        );
    }
}
