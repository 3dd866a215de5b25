//! HTTP/1.x request heads: httparse tokenises, mercy enforces limits, framing and refusals.
//!
//! Two entry points: [`parse_head`] for a buffer in hand, and [`HeadParser`]
//! for a connection that re-parses a growing buffer (it remembers how far it
//! has looked, so feeding a head byte by byte stays linear).
//!
//! Errors are reported in wire order: the first line with a problem decides,
//! so the answer does not depend on how the bytes were split across reads.

use super::error::RequestErrorKind as Kind;
use super::target::{split_target, target_authority};

pub use super::error::{RequestError, RequestErrorKind};
pub use super::target::percent_decode;

/// Size limits on a request head; a line limit of 0 means no limit of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `--buffer-size`: the whole head, leading empty lines and final CRLF included.
    pub max_head_bytes: usize,
    /// `--limit-request-line`: the request line without its CRLF.
    pub max_request_line: usize,
    /// `--limit-request-fields`: header lines, names with `_` included.
    pub max_header_count: usize,
    /// `--limit-request-field-size`: one header line without its CRLF.
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
    /// A chunked body follows; decode it with `ChunkedDecoder`.
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
    /// Headers in wire order. Names containing `_` are dropped, and a repeated
    /// Content-Length with the same value is kept once.
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
            return self.build_head(&window[..end]).map(|head| Some((head, end)));
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

        while let Some(offset) = window[position..].iter().position(|&byte| byte == b'\n') {
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
    fn check_complete_line(&mut self, window: &[u8], line_feed: usize) -> Result<Line, RequestError> {
        let start = self.scan.line_start;
        if line_feed == start || window[line_feed - 1] != b'\r' {
            return Err(Kind::BareLf.into());
        }
        let content = &window[start..line_feed - 1];

        if self.scan.request_line_end.is_some() {
            return self.check_header_line(content, true);
        }
        if content.is_empty() {
            return Ok(Line::Leading);
        }
        self.check_request_line(content)?;
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
            self.check_header_line(content, false).map(|_| ())
        } else {
            self.check_request_line(content)
        }
    }

    /// Method characters, then the length limit, on all or part of the request line.
    fn check_request_line(&mut self, content: &[u8]) -> Result<(), RequestError> {
        self.check_method_bytes(content)?;

        let limit = self.limits.max_request_line;
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

    /// Obs-fold, then the field size limit, then (for a complete line) the count limit.
    fn check_header_line(&mut self, content: &[u8], complete: bool) -> Result<Line, RequestError> {
        if content.is_empty() {
            return Ok(Line::End);
        }
        if matches!(content[0], b' ' | b'\t') {
            return Err(Kind::ObsoleteLineFolding.into());
        }

        let size_limit = self.limits.max_field_size;
        if size_limit != 0 && content.len() > size_limit {
            return Err(RequestError::over_limit(Kind::HeaderFieldTooLarge, size_limit));
        }

        if complete {
            self.scan.header_lines += 1;
            let count_limit = self.limits.max_header_count;
            if count_limit != 0 && self.scan.header_lines > count_limit {
                return Err(RequestError::over_limit(Kind::TooManyHeaders, count_limit));
            }
        }
        Ok(Line::Content)
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
        let head_start = self.scan.head_start.expect("a complete head has a request line");
        let line_end = self.scan.request_line_end.expect("a complete head has a request line");
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

/// The request line's parts, borrowed from the buffer.
struct RequestLine<'a> {
    method: &'a str,
    target: &'a [u8],
    minor_version: u8,
    path: &'a [u8],
    query: &'a [u8],
}

/// Parses and checks one request line, `line` ending in CRLF.
fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, RequestError> {
    let mut no_headers = [];
    let mut request = httparse::Request::new(&mut no_headers);
    let content = &line[..line.len() - 2];

    if let Err(error) = request.parse(line) {
        return Err(classify_request_line_error(content, error).into());
    }
    let (Some(method), Some(target), Some(minor_version)) =
        (request.method, request.path, request.version)
    else {
        return Err(classify_request_line_error(content, httparse::Error::Token).into());
    };

    if method.bytes().any(|byte| byte.is_ascii_lowercase()) {
        return Err(Kind::LowercaseMethod.into());
    }
    if method == "CONNECT" {
        return Err(Kind::ConnectMethod.into());
    }
    let parts = split_target(method, target.as_bytes())?;

    Ok(RequestLine {
        method,
        target: target.as_bytes(),
        minor_version,
        path: parts.path,
        query: parts.query,
    })
}

/// Names what httparse refused in a request line (httparse only says where it stopped).
fn classify_request_line_error(content: &[u8], error: httparse::Error) -> Kind {
    if content.starts_with(b"PRI * HTTP/2.0") {
        return Kind::Http2Preface;
    }

    let mut parts = content.split(|&byte| byte == b' ').skip(1);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(target), None, _) if target.starts_with(b"/") => Kind::Http09,
        (Some(target), Some(version), None) if !target.is_empty() && !version.is_empty() => {
            if !is_acceptable_target(target) {
                Kind::InvalidTarget
            } else if error != httparse::Error::Version {
                Kind::MalformedRequestLine
            } else if is_version_shaped(version) {
                Kind::UnsupportedVersion
            } else {
                Kind::MalformedVersion
            }
        }
        _ => Kind::MalformedRequestLine,
    }
}

/// What httparse accepts in a target: visible ASCII and UTF-8 above it.
fn is_acceptable_target(target: &[u8]) -> bool {
    target.iter().all(|&byte| byte > b' ' && byte != 0x7f) && std::str::from_utf8(target).is_ok()
}

/// `HTTP/<digit>.<digit>`.
fn is_version_shaped(version: &[u8]) -> bool {
    matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

/// Checks the syntax of one header line, `line` ending in CRLF.
fn validate_header_line(line: &[u8]) -> Result<(), RequestError> {
    let mut slot = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(line, &mut slot) {
        // Partial: httparse waits for the empty line that ends the head.
        Ok(_) => Ok(()),
        Err(error) => Err(classify_header_error(&line[..line.len() - 2], error).into()),
    }
}

/// The first header line that fails on its own, for a precise reason.
fn first_header_error(fields: &[u8]) -> RequestError {
    fields
        .split_inclusive(|&byte| byte == b'\n')
        .find_map(|line| validate_header_line(line).err())
        .unwrap_or_else(|| Kind::InvalidHeaderName.into())
}

fn classify_header_error(content: &[u8], error: httparse::Error) -> Kind {
    if error == httparse::Error::HeaderValue {
        return Kind::InvalidHeaderValue;
    }
    let name = match content.iter().position(|&byte| byte == b':') {
        Some(colon) => &content[..colon],
        None => return Kind::InvalidHeaderName,
    };
    let trimmed = name.trim_ascii_end();
    if trimmed.len() < name.len() && !trimmed.is_empty() && trimmed.iter().all(|&b| is_token_byte(b)) {
        Kind::WhitespaceBeforeColon
    } else if error == httparse::Error::HeaderName || error == httparse::Error::Token {
        Kind::InvalidHeaderName
    } else {
        Kind::InvalidHeaderValue
    }
}

/// RFC 9110 `tchar`.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// What the framing-relevant headers said.
#[derive(Default)]
struct FramingFacts {
    content_length: Option<u64>,
    transfer_encoding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
    hosts: usize,
    content_types: usize,
}

/// Drops `_` names, refuses ambiguous framing and builds the head.
fn apply_header_policy(
    line: RequestLine<'_>,
    parsed: &[httparse::Header<'_>],
) -> Result<RequestHead, RequestError> {
    let kept = || parsed.iter().filter(|header| !header.name.contains('_'));

    let mut facts = FramingFacts::default();
    for header in kept() {
        note_header(&mut facts, header)?;
    }
    let framing = decide_framing(&facts, line.minor_version, kept())?;

    let headers = collect_headers(kept(), parsed.len());
    let keep_alive = match line.minor_version {
        1 => !facts.close,
        _ => facts.keep_alive && !facts.close,
    };

    Ok(RequestHead {
        method: line.method.into(),
        target: line.target.into(),
        path: line.path.into(),
        query: line.query.into(),
        minor_version: line.minor_version,
        headers,
        framing,
        keep_alive,
        expect_continue: facts.expect_continue && line.minor_version == 1,
    })
}

/// Records what one kept header means for framing and connection handling.
fn note_header(facts: &mut FramingFacts, header: &httparse::Header<'_>) -> Result<(), RequestError> {
    let value = header.value;
    if value.iter().any(|&byte| (byte < b' ' && byte != b'\t') || byte == 0x7f) {
        return Err(Kind::InvalidHeaderValue.into());
    }

    let name = header.name;
    if name.eq_ignore_ascii_case("content-length") {
        let length = parse_content_length(value)?;
        if facts.content_length.is_some_and(|seen| seen != length) {
            return Err(Kind::ConflictingContentLength.into());
        }
        facts.content_length = Some(length);
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        facts.transfer_encoding = true;
    } else if name.eq_ignore_ascii_case("connection") {
        for option in list_elements(value) {
            facts.close |= option.eq_ignore_ascii_case(b"close");
            facts.keep_alive |= option.eq_ignore_ascii_case(b"keep-alive");
        }
    } else if name.eq_ignore_ascii_case("expect") {
        facts.expect_continue |= value.eq_ignore_ascii_case(b"100-continue");
    } else if name.eq_ignore_ascii_case("host") {
        facts.hosts += 1;
    } else if name.eq_ignore_ascii_case("content-type") {
        facts.content_types += 1;
    }
    Ok(())
}

/// A plain decimal number: no sign, no spaces, no list, no overflow.
fn parse_content_length(value: &[u8]) -> Result<u64, RequestError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(Kind::InvalidContentLength.into());
    }
    value
        .iter()
        .try_fold(0u64, |total, &digit| {
            total.checked_mul(10)?.checked_add(u64::from(digit - b'0'))
        })
        .ok_or_else(|| Kind::InvalidContentLength.into())
}

/// Refuses what could be read two ways, then says how the body is delimited.
fn decide_framing<'h>(
    facts: &FramingFacts,
    minor_version: u8,
    kept: impl Iterator<Item = &'h httparse::Header<'h>>,
) -> Result<BodyFraming, RequestError> {
    if facts.hosts > 1 {
        return Err(Kind::DuplicateHost.into());
    }
    if facts.content_types > 1 {
        return Err(Kind::DuplicateContentType.into());
    }

    if !facts.transfer_encoding {
        return Ok(match facts.content_length {
            None | Some(0) => BodyFraming::Empty,
            Some(length) => BodyFraming::Length(length),
        });
    }
    if minor_version == 0 {
        return Err(Kind::TransferEncodingInHttp10.into());
    }
    if facts.content_length.is_some() {
        return Err(Kind::ContentLengthWithTransferEncoding.into());
    }

    let codings = kept
        .filter(|header| header.name.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|header| header.value.split(|&byte| byte == b','));
    check_transfer_codings(codings)?;
    Ok(BodyFraming::Chunked)
}

/// Only a single, final `chunked` is accepted (RFC 9112 section 6.1 and 6.3).
fn check_transfer_codings<'v>(codings: impl Iterator<Item = &'v [u8]>) -> Result<(), RequestError> {
    let mut chunked_count = 0;
    let mut last_is_chunked = false;
    let mut others = false;

    for element in codings {
        let element = trim_ows(element);
        let (name, parameters) = match element.iter().position(|&byte| byte == b';') {
            Some(semicolon) => (trim_ows(&element[..semicolon]), true),
            None => (element, false),
        };
        if name.is_empty() || !name.iter().all(|&byte| is_token_byte(byte)) {
            return Err(Kind::MalformedTransferEncoding.into());
        }

        last_is_chunked = name.eq_ignore_ascii_case(b"chunked");
        if last_is_chunked && parameters {
            return Err(Kind::MalformedTransferEncoding.into());
        }
        chunked_count += usize::from(last_is_chunked);
        others |= !last_is_chunked;
    }

    if chunked_count != 1 || !last_is_chunked {
        return Err(Kind::ChunkedNotFinal.into());
    }
    if others {
        return Err(Kind::UnsupportedTransferCoding.into());
    }
    Ok(())
}

/// Copies the kept headers, keeping a repeated identical Content-Length once.
fn collect_headers<'h>(
    kept: impl Iterator<Item = &'h httparse::Header<'h>>,
    capacity: usize,
) -> Vec<Header> {
    let mut headers = Vec::with_capacity(capacity);
    let mut content_length_seen = false;

    for header in kept {
        if header.name.eq_ignore_ascii_case("content-length") {
            if content_length_seen {
                continue;
            }
            content_length_seen = true;
        }
        headers.push(Header {
            name: header.name.as_bytes().into(),
            value: header.value.into(),
        });
    }
    headers
}

/// The non-empty elements of a comma-separated list, trimmed.
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&byte| byte == b',')
        .map(trim_ows)
        .filter(|element| !element.is_empty())
}

fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t').unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(start, |last| last + 1);
    &bytes[start..end]
}
