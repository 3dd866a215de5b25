//! HTTP/1.x request heads: httparse tokenises, mercy enforces limits, framing and refusals.
//!
//! Two entry points: [`parse_head`] for a buffer in hand, and [`HeadParser`]
//! for a connection that re-parses a growing buffer (it remembers how far it
//! has looked, so feeding a head byte by byte stays linear).
//!
//! Errors are reported in wire order: the first line with a problem decides,
//! so the answer does not depend on how the bytes were split across reads.

use super::error::RequestErrorKind as Kind;
use super::policy::{apply_header_policy, first_header_error, is_token_byte};
use super::policy::{parse_request_line, validate_header_line};
use super::target::target_authority;

pub use super::error::{RequestError, RequestErrorKind};
pub use super::target::percent_decode;

/// Size limits on a request head; a line limit of 0 means no limit of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--buffer-size`: the whole head, leading empty lines and final CRLF
    /// included. Always enforced (0 refuses every request).
    pub max_head_bytes: usize,
    /// `--limit-request-line`: the request line without its CRLF.
    pub max_request_line: usize,
    /// `--limit-request-fields`: header lines, names with `_` included.
    pub max_header_count: usize,
    /// `--limit-request-field-size`: one header line with its CRLF (as gunicorn counts).
    pub max_field_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 4096,
            max_request_line: 4094,
            max_header_count: 100,
            max_field_size: 8190,
        }
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body: neither header, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes follow the head.
    Length(u64),
    /// A chunked body follows; decode it with a
    /// [`ChunkedDecoder`](super::chunked::ChunkedDecoder).
    Chunked,
}

/// One header field as received; the value is trimmed of surrounding SP and HTAB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The name with its case as sent.
    pub name: Box<[u8]>,
    /// The value, which may hold obs-text (bytes 0x80 to 0xFF).
    pub value: Box<[u8]>,
}

/// A request head that passed mercy's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method: an upper-case token, never `CONNECT`.
    pub method: Box<str>,
    /// The request target as received.
    pub target: Box<[u8]>,
    /// Raw path, not percent-decoded; for absolute-form targets the path part
    /// (`/` if empty), for `OPTIONS *` the `*`.
    pub path: Box<[u8]>,
    /// Raw query without `?`; the fragment is removed.
    pub query: Box<[u8]>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Headers in wire order. Names containing `_` are dropped.
    pub headers: Vec<Header>,
    /// How the body is delimited.
    pub framing: BodyFraming,
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of the header `name` (compared without case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name.as_bytes()))
            .map(|header| &*header.value)
    }

    /// `host[:port]` of an absolute-form target; RFC 9112 section 3.2.2 says
    /// it replaces the Host header.
    pub fn target_authority(&self) -> Option<&[u8]> {
        target_authority(&self.target)
    }
}

/// Parses a request head from the start of `buf`.
///
/// `Ok(None)`: the head is not complete yet and no limit is broken; read more
/// and call again with the longer buffer. `Ok(Some((head, consumed)))`:
/// `consumed` counts the head through its final CRLF CRLF (and any empty
/// lines before the request line); the body starts at `buf[consumed..]`.
///
/// Each call scans the whole buffer; a connection that calls again on every
/// read should keep a [`HeadParser`] instead, which resumes where it stopped.
pub fn parse_head(
    buf: &[u8],
    limits: &Limits,
) -> Result<Option<(RequestHead, usize)>, RequestError> {
    HeadParser::new(*limits).parse(buf)
}

/// An incremental [`parse_head`]: call [`HeadParser::parse`] with the same
/// buffer, grown, after every read; the work over one head is linear.
#[derive(Debug, Clone)]
pub struct HeadParser {
    limits: Limits,
    scan: Scan,
}

/// How far a [`HeadParser`] has looked into the buffer of the current head.
#[derive(Debug, Clone, Default)]
struct Scan {
    /// Bytes already searched for line ends.
    scanned: usize,
    /// Start of the line not yet complete.
    line_start: usize,
    /// Start of the request line, once it is complete.
    head_start: Option<usize>,
    /// End of the request line (after its CRLF), once it is complete.
    request_line_end: Option<usize>,
    /// Complete header lines.
    header_lines: usize,
    /// Complete lines before this offset passed the syntax checks.
    validated: usize,
    /// Bytes of the request line already checked as method characters.
    method_checked: usize,
    /// The space after the method has been seen.
    method_done: bool,
}

/// What a complete line was.
enum Line {
    /// An empty line before the request line (RFC 9112 section 2.2 allows them).
    Leading,
    /// The request line or a header line.
    Content,
    /// The empty line that ends the head.
    End,
}

impl HeadParser {
    /// A parser for one head at a time under `limits`.
    pub fn new(limits: Limits) -> Self {
        HeadParser {
            limits,
            scan: Scan::default(),
        }
    }

    /// The limits this parser enforces.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Like [`parse_head`], resuming where the previous call stopped.
    ///
    /// `buf` must start at the same byte on every call until a head or an
    /// error is returned; after that the parser starts afresh, so the next
    /// call may pass the bytes after `consumed` as a new buffer. A buffer
    /// shorter than the previous one also starts afresh.
    pub fn parse(&mut self, buf: &[u8]) -> Result<Option<(RequestHead, usize)>, RequestError> {
        if buf.len() < self.scan.scanned {
            self.reset();
        }

        let result = self.advance(buf);
        if !matches!(result, Ok(None)) {
            self.reset();
        }
        result
    }

    /// Forgets the head in progress.
    pub fn reset(&mut self) {
        self.scan = Scan::default();
    }

    fn advance(&mut self, buf: &[u8]) -> Result<Option<(RequestHead, usize)>, RequestError> {
        // Bytes past --buffer-size can never belong to an acceptable head.
        let window = &buf[..buf.len().min(self.limits.max_head_bytes)];

        if let Some(end) = self.scan_lines(window)? {
            return self
                .build_head(&window[..end])
                .map(|head| Some((head, end)));
        }

        self.validate_complete_lines(window)?;
        self.check_partial_line(window)?;
        if window.len() >= self.limits.max_head_bytes {
            return Err(RequestError::over_limit(
                Kind::HeadTooLarge,
                self.limits.max_head_bytes,
            ));
        }
        Ok(None)
    }

    /// Walks the new complete lines; returns the head's end once the empty line arrives.
    fn scan_lines(&mut self, window: &[u8]) -> Result<Option<usize>, RequestError> {
        let mut position = self.scan.scanned;

        while let Some(offset) = find_line_feed(&window[position..]) {
            let line_feed = position + offset;
            match self.check_complete_line(window, line_feed) {
                Ok(Line::End) => return Ok(Some(line_feed + 1)),
                Ok(Line::Leading | Line::Content) => {}
                Err(error) => {
                    // An earlier line's syntax error comes first in wire order.
                    self.validate_complete_lines(window)?;
                    return Err(error);
                }
            }
            position = line_feed + 1;
            self.scan.line_start = position;
        }

        self.scan.scanned = window.len();
        Ok(None)
    }

    /// The checks a line gets as soon as its LF arrives (syntax comes later).
    ///
    /// The checks a partial line already got come first, so that a limit hit
    /// before the LF arrived and one found with it give the same answer.
    fn check_complete_line(
        &mut self,
        window: &[u8],
        line_feed: usize,
    ) -> Result<Line, RequestError> {
        let start = self.scan.line_start;
        let line = &window[start..line_feed];
        let content = line.strip_suffix(b"\r");
        let ends_in_crlf = content.is_some();
        let content = content.unwrap_or(line);
        let require_crlf = || match ends_in_crlf {
            true => Ok(()),
            false => Err(RequestError::from(Kind::BareLf)),
        };

        if self.scan.request_line_end.is_some() {
            let kind = self.check_header_line(content)?;
            require_crlf()?;
            if matches!(kind, Line::Content) {
                self.count_header_line()?;
            }
            return Ok(kind);
        }
        if content.is_empty() {
            require_crlf()?;
            return Ok(Line::Leading);
        }

        self.check_request_line(content)?;
        require_crlf()?;
        self.scan.head_start = Some(start);
        self.scan.request_line_end = Some(line_feed + 1);
        Ok(Line::Content)
    }

    /// Limits and early refusals on the line still arriving.
    fn check_partial_line(&mut self, window: &[u8]) -> Result<(), RequestError> {
        let partial = &window[self.scan.line_start..];
        // A final CR may be the start of the CRLF.
        let content = partial.strip_suffix(b"\r").unwrap_or(partial);
        if content.is_empty() {
            return Ok(());
        }

        if self.scan.request_line_end.is_some() {
            self.check_header_line(content).map(|_| ())
        } else {
            self.check_request_line(content)
        }
    }

    /// Method characters, then the length limit, on all or part of the request line.
    ///
    /// In wire order: a bad method byte decides only if it arrived no later
    /// than the byte that broke the limit, so the answer is the same whether
    /// the line came in one read or byte by byte.
    fn check_request_line(&mut self, content: &[u8]) -> Result<(), RequestError> {
        let limit = self.limits.max_request_line;
        let within_limit = match limit {
            0 => content,
            _ => &content[..content.len().min(limit + 1)],
        };
        self.check_method_bytes(within_limit)?;

        if limit != 0 && content.len() > limit {
            return Err(RequestError::over_limit(Kind::RequestLineTooLong, limit));
        }
        Ok(())
    }

    /// Refuses a non-token method byte as soon as it arrives (TLS or garbage).
    fn check_method_bytes(&mut self, content: &[u8]) -> Result<(), RequestError> {
        if self.scan.method_done {
            return Ok(());
        }

        let from = self.scan.method_checked.min(content.len());
        for (index, &byte) in content.iter().enumerate().skip(from) {
            if byte == b' ' && index > 0 {
                self.scan.method_done = true;
                return Ok(());
            }
            if !is_token_byte(byte) {
                return Err(Kind::InvalidMethod.into());
            }
        }
        self.scan.method_checked = content.len();
        Ok(())
    }

    /// Obs-fold, then the field size limit, on all or part of a header line.
    fn check_header_line(&self, content: &[u8]) -> Result<Line, RequestError> {
        if content.is_empty() {
            return Ok(Line::End);
        }
        if matches!(content[0], b' ' | b'\t') {
            return Err(Kind::ObsoleteLineFolding.into());
        }

        // The limit counts the line's CRLF, which a partial line will still get.
        let size_limit = self.limits.max_field_size;
        if size_limit != 0 && content.len() + 2 > size_limit {
            return Err(RequestError::over_limit(
                Kind::HeaderFieldTooLarge,
                size_limit,
            ));
        }
        Ok(Line::Content)
    }

    /// The header count limit, once a header line is complete.
    fn count_header_line(&mut self) -> Result<(), RequestError> {
        self.scan.header_lines += 1;
        let count_limit = self.limits.max_header_count;
        if count_limit != 0 && self.scan.header_lines > count_limit {
            return Err(RequestError::over_limit(Kind::TooManyHeaders, count_limit));
        }
        Ok(())
    }

    /// Syntax of the complete lines not yet checked, so that errors show early.
    fn validate_complete_lines(&mut self, window: &[u8]) -> Result<(), RequestError> {
        let end = self.scan.line_start;

        while self.scan.validated < end {
            let start = self.scan.validated;
            let line_feed = window[start..end]
                .iter()
                .position(|&byte| byte == b'\n')
                .expect("complete lines end in LF")
                + start;
            let line = &window[start..=line_feed];

            match self.scan.head_start {
                Some(head_start) if start == head_start => {
                    parse_request_line(line)?;
                }
                Some(head_start) if start > head_start => validate_header_line(line)?,
                _ => {}
            }
            self.scan.validated = line_feed + 1;
        }
        Ok(())
    }

    /// The complete head in `head` (from the buffer's start through CRLF CRLF).
    fn build_head(&self, head: &[u8]) -> Result<RequestHead, RequestError> {
        let head_start = self
            .scan
            .head_start
            .expect("a complete head has a request line");
        let line_end = self
            .scan
            .request_line_end
            .expect("a complete head has a request line");
        let request_line = parse_request_line(&head[head_start..line_end])?;

        let fields = &head[line_end..];
        let mut stack_slots = [httparse::EMPTY_HEADER; 32];
        let mut heap_slots = Vec::new();
        let slots = if self.scan.header_lines <= stack_slots.len() {
            &mut stack_slots[..self.scan.header_lines]
        } else {
            heap_slots.resize(self.scan.header_lines, httparse::EMPTY_HEADER);
            &mut heap_slots[..]
        };

        let parsed = match httparse::parse_headers(fields, slots) {
            Ok(httparse::Status::Complete((used, parsed))) if used == fields.len() => parsed,
            _ => return Err(first_header_error(fields)),
        };
        apply_header_policy(request_line, parsed)
    }
}

/// The position of the first LF, looking at 16 bytes at a time.
fn find_line_feed(bytes: &[u8]) -> Option<usize> {
    const BLOCK: usize = 16;
    let mut blocks = bytes.chunks_exact(BLOCK);
    let mut offset = 0;

    for block in blocks.by_ref() {
        // A fold without early exit lets the compiler compare the block at once.
        if block
            .iter()
            .fold(false, |found, &byte| found | (byte == b'\n'))
        {
            return block
                .iter()
                .position(|&byte| byte == b'\n')
                .map(|at| offset + at);
        }
        offset += BLOCK;
    }
    let rest = blocks.remainder();
    rest.iter()
        .position(|&byte| byte == b'\n')
        .map(|at| offset + at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `bytes` whole, byte by byte with a [`HeadParser`] and byte by
    /// byte with [`parse_head`], and checks that all three agree.
    fn outcome_with(
        bytes: &[u8],
        limits: Limits,
    ) -> Result<Option<(RequestHead, usize)>, RequestError> {
        let whole = parse_head(bytes, &limits);

        let mut parser = HeadParser::new(limits);
        let mut incremental = Ok(None);
        for end in 1..=bytes.len() {
            incremental = parser.parse(&bytes[..end]);
            let stateless = parse_head(&bytes[..end], &limits);
            assert_eq!(incremental, stateless, "at {end} bytes of {bytes:?}");
            if !matches!(incremental, Ok(None)) {
                break;
            }
        }
        assert_eq!(
            whole, incremental,
            "whole and byte by byte differ for {bytes:?}"
        );
        whole
    }

    fn outcome(bytes: &[u8]) -> Result<Option<(RequestHead, usize)>, RequestError> {
        outcome_with(bytes, Limits::default())
    }

    fn head(bytes: &[u8]) -> RequestHead {
        let (head, consumed) = outcome(bytes).expect("accepted").expect("complete");
        assert_eq!(consumed, bytes.len(), "head should span the whole input");
        head
    }

    fn refused(bytes: &[u8]) -> RequestErrorKind {
        outcome(bytes).expect_err("refused").kind()
    }

    fn names(head: &RequestHead) -> Vec<&[u8]> {
        head.headers.iter().map(|header| &*header.name).collect()
    }

    #[test]
    fn simple_get() {
        let head = head(b"GET /a%20b?x=1#frag HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n");
        assert_eq!(&*head.method, "GET");
        assert_eq!(&*head.target, b"/a%20b?x=1#frag");
        assert_eq!(&*head.path, b"/a%20b");
        assert_eq!(&*head.query, b"x=1");
        assert_eq!(head.minor_version, 1);
        assert_eq!(names(&head), [&b"Host"[..], b"Accept"]);
        assert_eq!(head.header("accept"), Some(&b"*/*"[..]));
        assert_eq!(head.framing, BodyFraming::Empty);
        assert!(head.keep_alive);
        assert!(!head.expect_continue);
    }

    #[test]
    fn consumed_stops_at_the_head() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n";
        let (head, consumed) = outcome(bytes).expect("accepted").expect("complete");
        assert_eq!(&bytes[consumed..], b"abcGET / HTTP/1.1\r\n");
        assert_eq!(head.framing, BodyFraming::Length(3));
    }

    #[test]
    fn incomplete_head_needs_more() {
        assert_eq!(outcome(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(outcome(b"GET / HTTP/1.1\r\nHost: x\r\n\r"), Ok(None));
        assert_eq!(outcome(b""), Ok(None));
    }

    #[test]
    fn leading_empty_lines_are_skipped() {
        let bytes = b"\r\n\r\nGET / HTTP/1.0\r\n\r\n";
        let (head, consumed) = outcome(bytes).expect("accepted").expect("complete");
        assert_eq!(consumed, bytes.len());
        assert_eq!(head.minor_version, 0);
    }

    #[test]
    fn underscore_names_are_dropped() {
        let bytes = b"GET / HTTP/1.0\r\nTransfer_Encoding: x\r\n\
            Content-Length: 7\r\nContent_Length: -1\r\n\r\n";
        let head = head(bytes);
        assert_eq!(names(&head), [&b"Content-Length"[..]]);
        assert_eq!(head.framing, BodyFraming::Length(7));
    }

    #[test]
    fn values_are_trimmed_and_may_hold_obs_text() {
        let head = head(b"GET / HTTP/1.1\r\nName: \t value \t \r\nX: caf\xc3\xa9\r\nE:\r\n\r\n");
        assert_eq!(head.header("name"), Some(&b"value"[..]));
        assert_eq!(head.header("x"), Some(&b"caf\xc3\xa9"[..]));
        assert_eq!(head.header("e"), Some(&b""[..]));
    }

    #[test]
    fn content_length_must_be_plain_digits() {
        for value in [
            "-1",
            "+1",
            "-0",
            "0_1",
            "1 2",
            "5, 5",
            "abc",
            "",
            "0x10",
            "18446744073709551616",
        ] {
            let bytes = format!("POST / HTTP/1.1\r\nContent-Length: {value}\r\n\r\n");
            assert_eq!(
                refused(bytes.as_bytes()),
                RequestErrorKind::InvalidContentLength,
                "{value}"
            );
        }
        let head = head(b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n");
        assert_eq!(head.framing, BodyFraming::Length(u64::MAX));
    }

    #[test]
    fn repeated_content_length_is_refused_even_with_the_same_value() {
        let conflicting = b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(
            refused(conflicting),
            RequestErrorKind::RepeatedContentLength
        );
        let identical = b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\n";
        let error = outcome(identical).expect_err("refused");
        assert_eq!(
            (error.kind(), error.status()),
            (RequestErrorKind::RepeatedContentLength, 400)
        );
        // A name with `_` is dropped first, so it repeats nothing.
        let dropped = head(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent_Length: 2\r\n\r\n");
        assert_eq!(dropped.framing, BodyFraming::Length(2));
    }

    #[test]
    fn content_length_with_transfer_encoding_is_refused() {
        let bytes = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(
            refused(bytes),
            RequestErrorKind::ContentLengthWithTransferEncoding
        );
        assert_eq!(outcome(bytes).expect_err("refused").status(), 400);
    }

    #[test]
    fn only_a_single_final_chunked_is_accepted() {
        let te = |value: &str| format!("POST / HTTP/1.1\r\nTransfer-Encoding: {value}\r\n\r\n");
        assert_eq!(head(te("chunked").as_bytes()).framing, BodyFraming::Chunked);
        assert_eq!(
            head(te(" Chunked ").as_bytes()).framing,
            BodyFraming::Chunked
        );

        let cases = [
            ("gzip, chunked", RequestErrorKind::UnsupportedTransferCoding),
            (
                "identity, chunked",
                RequestErrorKind::UnsupportedTransferCoding,
            ),
            (
                "x;q=1, chunked",
                RequestErrorKind::UnsupportedTransferCoding,
            ),
            ("identity", RequestErrorKind::UnsupportedTransferCoding),
            ("gzip", RequestErrorKind::UnsupportedTransferCoding),
            ("gzip, br", RequestErrorKind::UnsupportedTransferCoding),
            ("chunked, chunked", RequestErrorKind::ChunkedNotFinal),
            ("chunked, gzip", RequestErrorKind::ChunkedNotFinal),
            ("chunked;x=1", RequestErrorKind::MalformedTransferEncoding),
            (", chunked", RequestErrorKind::MalformedTransferEncoding),
            ("", RequestErrorKind::MalformedTransferEncoding),
            ("chu\"nked", RequestErrorKind::MalformedTransferEncoding),
        ];
        for (value, kind) in cases {
            assert_eq!(refused(te(value).as_bytes()), kind, "{value:?}");
        }
        assert_eq!(RequestErrorKind::UnsupportedTransferCoding.status(), 501);
    }

    #[test]
    fn transfer_encoding_lists_span_header_lines() {
        let split =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(split), RequestErrorKind::UnsupportedTransferCoding);
        let twice =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(twice), RequestErrorKind::ChunkedNotFinal);
    }

    #[test]
    fn transfer_encoding_in_http10_is_refused() {
        let bytes = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(refused(bytes), RequestErrorKind::TransferEncodingInHttp10);
    }

    #[test]
    fn whitespace_before_colon_is_refused() {
        let bytes = b"GET / HTTP/1.1\r\nContent-Length : 3\r\n\r\n";
        assert_eq!(refused(bytes), RequestErrorKind::WhitespaceBeforeColon);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nA\t: 3\r\n\r\n"),
            RequestErrorKind::WhitespaceBeforeColon
        );
    }

    #[test]
    fn obs_fold_is_refused() {
        let bytes = b"GET / HTTP/1.1\r\nLong: one\r\n two\r\n\r\n";
        assert_eq!(refused(bytes), RequestErrorKind::ObsoleteLineFolding);
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\n\tx: y\r\n\r\n"),
            RequestErrorKind::ObsoleteLineFolding
        );
    }

    #[test]
    fn bare_lf_is_refused() {
        assert_eq!(
            refused(b"GET / HTTP/1.1\nHost: x\r\n\r\n"),
            RequestErrorKind::BareLf
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\n\r\n"),
            RequestErrorKind::BareLf
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nHost: x\r\n\n"),
            RequestErrorKind::BareLf
        );
        assert_eq!(
            refused(b"\nGET / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::BareLf
        );
        let smuggled = b"GET / HTTP/1.1\r\nNewline: a\nContent-Length: 26\r\n\r\n";
        assert_eq!(refused(smuggled), RequestErrorKind::BareLf);
    }

    #[test]
    fn bare_cr_is_refused() {
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n"),
            RequestErrorKind::InvalidHeaderValue
        );
        assert_eq!(
            refused(b"GET /\r HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidTarget
        );
    }

    #[test]
    fn connect_is_not_supported() {
        let error = outcome(b"CONNECT example.com:443 HTTP/1.1\r\n\r\n").expect_err("refused");
        assert_eq!(error.kind(), RequestErrorKind::ConnectMethod);
        assert_eq!(error.status(), 501);
    }

    #[test]
    fn methods_must_be_upper_case_tokens() {
        assert_eq!(
            refused(b"get / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::LowercaseMethod
        );
        assert_eq!(
            refused(b"-blargh / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::LowercaseMethod
        );
        assert_eq!(
            refused(b"GET: / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidMethod
        );
        assert_eq!(
            refused(b"GET\x00 / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidMethod
        );
        assert_eq!(
            refused(b" GET / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidMethod
        );
        assert_eq!(&*head(b"M-SEARCH / HTTP/1.1\r\n\r\n").method, "M-SEARCH");
    }

    #[test]
    fn garbage_is_refused_before_a_line_ends() {
        let tls_hello = b"\x16\x03\x01\x02\x00";
        let error = parse_head(tls_hello, &Limits::default()).expect_err("refused");
        assert_eq!(error.kind(), RequestErrorKind::InvalidMethod);
    }

    #[test]
    fn control_bytes_are_refused() {
        assert_eq!(
            refused(b"GET /a\x00b HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidTarget
        );
        assert_eq!(
            refused(b"GET /a\x01b HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidTarget
        );
        assert_eq!(
            refused(b"GET /\xff HTTP/1.1\r\n\r\n"),
            RequestErrorKind::InvalidTarget
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX: a\x07b\r\n\r\n"),
            RequestErrorKind::InvalidHeaderValue
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"),
            RequestErrorKind::InvalidHeaderValue
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nX: a\x7fb\r\n\r\n"),
            RequestErrorKind::InvalidHeaderValue
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1\r\nb\x00z: a\r\n\r\n"),
            RequestErrorKind::InvalidHeaderName
        );
        assert_eq!(
            head(b"GET / HTTP/1.1\r\nX: a\tb\r\n\r\n").header("x"),
            Some(&b"a\tb"[..])
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(head(b"GET / HTTP/1.1\r\n\r\n").header("host"), None);
        let twice = b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n";
        assert_eq!(refused(twice), RequestErrorKind::DuplicateHost);
        let types = b"GET / HTTP/1.1\r\nContent-Type: a\r\nContent-Type: b\r\n\r\n";
        assert_eq!(refused(types), RequestErrorKind::DuplicateContentType);
    }

    #[test]
    fn versions() {
        assert_eq!(
            refused(b"GET / HTTP/2.0\r\n\r\n"),
            RequestErrorKind::UnsupportedVersion
        );
        assert_eq!(
            refused(b"GET / HTTP/1.2\r\n\r\n"),
            RequestErrorKind::UnsupportedVersion
        );
        assert_eq!(
            refused(b"GET / HTTP/0.99\r\n\r\n"),
            RequestErrorKind::MalformedVersion
        );
        assert_eq!(
            refused(b"GET / HTTP/111\r\n\r\n"),
            RequestErrorKind::MalformedVersion
        );
        assert_eq!(
            refused(b"GET / FTP/1.1\r\n\r\n"),
            RequestErrorKind::MalformedVersion
        );
        assert_eq!(refused(b"GET /\r\n\r\n"), RequestErrorKind::Http09);
        assert_eq!(
            refused(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            RequestErrorKind::Http2Preface
        );
        assert_eq!(
            refused(b"GET HTTP/1.1\r\n\r\n"),
            RequestErrorKind::MalformedRequestLine
        );
        assert_eq!(
            refused(b"GET  / HTTP/1.1\r\n\r\n"),
            RequestErrorKind::MalformedRequestLine
        );
        assert_eq!(
            refused(b"GET / HTTP/1.1 \r\n\r\n"),
            RequestErrorKind::MalformedRequestLine
        );
        assert_eq!(RequestErrorKind::UnsupportedVersion.status(), 505);
    }

    #[test]
    fn target_forms() {
        let absolute = head(b"GET http://u:p@example.com:8080/foo?q=1 HTTP/1.1\r\n\r\n");
        assert_eq!(
            (&*absolute.path, &*absolute.query),
            (&b"/foo"[..], &b"q=1"[..])
        );
        assert_eq!(absolute.target_authority(), Some(&b"example.com:8080"[..]));
        assert_eq!(head(b"OPTIONS * HTTP/1.1\r\n\r\n").path, b"*"[..].into());
        assert_eq!(
            refused(b"GET * HTTP/1.1\r\n\r\n"),
            RequestErrorKind::AsteriskWithoutOptions
        );
        assert_eq!(
            refused(b"GET foo/bar HTTP/1.1\r\n\r\n"),
            RequestErrorKind::UnsupportedTargetForm
        );
        assert_eq!(
            refused(b"PUT s://]ufd/: HTTP/1.1\r\n\r\n"),
            RequestErrorKind::UnsupportedScheme
        );
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n").keep_alive);
    }

    #[test]
    fn expect_continue_only_on_http11() {
        assert!(
            head(b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
        assert!(
            !head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn request_line_limit_gives_414() {
        let limits = Limits {
            max_request_line: 16,
            ..Limits::default()
        };
        let long = b"GET /0123456789abc HTTP/1.1\r\n\r\n";
        let error = outcome_with(long, limits).expect_err("refused");
        assert_eq!((error.status(), error.limit()), (414, Some(16)));
        // Refused before the line ends.
        assert!(parse_head(&long[..17], &limits).is_err());
        assert!(outcome_with(b"GET /01 HTTP/1.1\r\n\r\n", limits).is_ok());
        let unlimited = Limits {
            max_request_line: 0,
            ..Limits::default()
        };
        assert!(outcome_with(long, unlimited).is_ok());
    }

    #[test]
    fn request_line_limit_and_bad_method_byte_answer_in_wire_order() {
        let limits = Limits {
            max_request_line: 8,
            ..Limits::default()
        };
        // The limit breaks at byte 9, before the bad method byte (byte 12).
        let late = b"AAAAAAAAAAA\x02 / HTTP/1.1\r\n\r\n";
        let whole = outcome_with(late, limits).expect_err("refused");
        assert_eq!(whole.kind(), RequestErrorKind::RequestLineTooLong);
        let mut parser = HeadParser::new(limits);
        let split = (1..=late.len())
            .map(|end| parser.parse(&late[..end]))
            .find(|result| !matches!(result, Ok(None)))
            .expect("refused");
        assert_eq!(split, Err(whole));
        // A bad byte within the limit comes first.
        let early = b"AAA\x02AAAAAAAAAA / HTTP/1.1\r\n\r\n";
        assert_eq!(
            outcome_with(early, limits).expect_err("refused").kind(),
            RequestErrorKind::InvalidMethod
        );
    }

    #[test]
    fn field_size_limit_gives_431() {
        let limits = Limits {
            max_field_size: 10,
            ..Limits::default()
        };
        assert!(outcome_with(b"GET / HTTP/1.1\r\nA: 12345\r\n\r\n", limits).is_ok());
        let error =
            outcome_with(b"GET / HTTP/1.1\r\nA: 123456\r\n\r\n", limits).expect_err("refused");
        assert_eq!(
            (error.kind(), error.status()),
            (RequestErrorKind::HeaderFieldTooLarge, 431)
        );
        assert!(parse_head(b"GET / HTTP/1.1\r\nA: 123456", &limits).is_err());
    }

    #[test]
    fn header_count_limit_gives_431() {
        let limits = Limits {
            max_header_count: 2,
            ..Limits::default()
        };
        assert!(outcome_with(b"GET / HTTP/1.1\r\nA: 1\r\nB_: 2\r\n\r\n", limits).is_ok());
        let error = outcome_with(b"GET / HTTP/1.1\r\nA: 1\r\nB_: 2\r\nC: 3\r\n\r\n", limits)
            .expect_err("refused");
        assert_eq!(
            (error.kind(), error.status()),
            (RequestErrorKind::TooManyHeaders, 431)
        );
    }

    #[test]
    fn head_size_limit_gives_431() {
        let bytes = b"GET / HTTP/1.1\r\nA: 1\r\n\r\n";
        let exact = Limits {
            max_head_bytes: bytes.len(),
            ..Limits::default()
        };
        assert!(outcome_with(bytes, exact).is_ok());
        let short = Limits {
            max_head_bytes: bytes.len() - 1,
            ..Limits::default()
        };
        let error = outcome_with(bytes, short).expect_err("refused");
        assert_eq!(
            error.to_string(),
            format!(
                "request head larger than --buffer-size ({})",
                bytes.len() - 1
            )
        );
        // Bytes after the head do not count.
        let with_body = b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n";
        let tight = Limits {
            max_head_bytes: with_body.len(),
            ..Limits::default()
        };
        let mut buffer = with_body.to_vec();
        buffer.extend_from_slice(&[b'x'; 100]);
        assert!(parse_head(&buffer, &tight).expect("accepted").is_some());
    }

    #[test]
    fn the_first_error_in_wire_order_wins() {
        // A syntax error on line 2 comes before the size limit on line 3.
        let limits = Limits {
            max_field_size: 10,
            ..Limits::default()
        };
        let bytes = b"GET / HTTP/1.1\r\nA : 1\r\nB: 1234567890\r\n\r\n";
        assert_eq!(
            outcome_with(bytes, limits).expect_err("refused").kind(),
            RequestErrorKind::WhitespaceBeforeColon
        );
        let bytes = b"get / HTTP/1.1\r\nA: 1\r\n two\r\n\r\n";
        assert_eq!(refused(bytes), RequestErrorKind::LowercaseMethod);
    }

    #[test]
    fn large_heads_parse_incrementally() {
        let mut bytes = b"GET / HTTP/1.1\r\n".to_vec();
        for index in 0..2000 {
            bytes.extend_from_slice(format!("X-Header-{index}: value {index}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"\r\n");
        let limits = Limits {
            max_head_bytes: 1 << 20,
            max_header_count: 0,
            ..Limits::default()
        };

        let mut parser = HeadParser::new(limits);
        let mut result = None;
        for end in 1..=bytes.len() {
            if let Some(done) = parser.parse(&bytes[..end]).expect("accepted") {
                result = Some(done);
                break;
            }
        }
        let (head, consumed) = result.expect("complete");
        assert_eq!((head.headers.len(), consumed), (2000, bytes.len()));
    }
}
