//! mercy's refusal policy on a request line and its header fields (DESIGN.md section 6).
//!
//! httparse tokenises; this module names what it refused, and refuses what
//! it accepts but mercy does not: ambiguous framing, unsupported codings,
//! lower-case methods, CONNECT, and target forms a WSGI app cannot use.

use super::error::{RequestError, RequestErrorKind as Kind};
use super::http::{BodyFraming, Header, RequestHead};
use super::target::split_target;

/// The request line's parts, borrowed from the buffer.
pub(crate) struct RequestLine<'a> {
    method: &'a str,
    target: &'a [u8],
    minor_version: u8,
    path: &'a [u8],
    query: &'a [u8],
}

/// Parses and checks one request line, `line` ending in CRLF.
pub(crate) fn parse_request_line(line: &[u8]) -> Result<RequestLine<'_>, RequestError> {
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
pub(crate) fn validate_header_line(line: &[u8]) -> Result<(), RequestError> {
    let mut slot = [httparse::EMPTY_HEADER; 1];
    match httparse::parse_headers(line, &mut slot) {
        // Partial: httparse waits for the empty line that ends the head.
        Ok(_) => Ok(()),
        Err(error) => Err(classify_header_error(&line[..line.len() - 2], error).into()),
    }
}

/// The first header line that fails on its own, for a precise reason.
pub(crate) fn first_header_error(fields: &[u8]) -> RequestError {
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
    if trimmed.len() < name.len()
        && !trimmed.is_empty()
        && trimmed.iter().all(|&b| is_token_byte(b))
    {
        Kind::WhitespaceBeforeColon
    } else if error == httparse::Error::HeaderName || error == httparse::Error::Token {
        Kind::InvalidHeaderName
    } else {
        Kind::InvalidHeaderValue
    }
}

/// RFC 9110 `tchar`.
pub(crate) fn is_token_byte(byte: u8) -> bool {
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
pub(crate) fn apply_header_policy(
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
fn note_header(
    facts: &mut FramingFacts,
    header: &httparse::Header<'_>,
) -> Result<(), RequestError> {
    // httparse refuses these too; checked again because the policy depends on it.
    let value = header.value;
    if has_control_byte(value) {
        return Err(Kind::InvalidHeaderValue.into());
    }

    let name = header.name;
    if name.eq_ignore_ascii_case("content-length") {
        let length = parse_content_length(value)?;
        // Even the same value twice: a proxy in front may have kept either
        // line, or joined them, so the request is not framed one way only.
        if facts.content_length.is_some() {
            return Err(Kind::RepeatedContentLength.into());
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

/// NUL, CR, LF, DEL or another control byte except HTAB.
pub(crate) fn has_control_byte(bytes: &[u8]) -> bool {
    // No early exit, so the compiler can check many bytes at once.
    bytes.iter().fold(false, |found, &byte| {
        found | ((byte < b' ') & (byte != b'\t')) | (byte == 0x7f)
    })
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

/// Only a single, final `chunked` is accepted (RFC 9112 section 6.1 and 6.3):
/// a list that misplaces or repeats `chunked` is 400; one that is otherwise
/// well placed but names a coding mercy does not decode is 501.
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

    if chunked_count > 1 || (chunked_count == 1 && !last_is_chunked) {
        return Err(Kind::ChunkedNotFinal.into());
    }
    if others {
        return Err(Kind::UnsupportedTransferCoding.into());
    }
    Ok(())
}

/// Copies the kept headers.
fn collect_headers<'h>(
    kept: impl Iterator<Item = &'h httparse::Header<'h>>,
    capacity: usize,
) -> Vec<Header> {
    let mut headers = Vec::with_capacity(capacity);
    headers.extend(kept.map(|header| Header {
        name: header.name.as_bytes().into(),
        value: header.value.into(),
    }));
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
    let start = bytes
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |last| last + 1);
    &bytes[start..end]
}
