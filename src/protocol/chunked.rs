//! Incremental decoder for chunked request bodies (RFC 9112 section 7.1); checks trailers.

use std::fmt;

use super::policy::is_token_byte;

/// Bounds on the parts of a chunked body that are not data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// One chunk-size line with its extensions and CRLF.
    pub max_line: usize,
    /// The whole trailer section, final CRLF included.
    pub max_trailer_bytes: usize,
    /// Trailer fields.
    pub max_trailer_fields: usize,
}

impl Default for ChunkLimits {
    fn default() -> Self {
        ChunkLimits {
            max_line: 4096,
            max_trailer_bytes: 8192,
            max_trailer_fields: 100,
        }
    }
}

/// What [`ChunkedDecoder::decode`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    /// Body bytes, borrowed from the input; never empty.
    Data(&'a [u8]),
    /// Everything given was used (partial lines are kept inside); call again with more.
    NeedMore,
    /// The body ended; the count includes the trailer section's final CRLF.
    End,
}

/// What was wrong with a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChunkErrorKind {
    /// The chunk size is missing, not hexadecimal, signed, padded or over 64 bits.
    InvalidSize,
    /// A chunk extension does not follow `;name[=token|"quoted"]`.
    InvalidExtension,
    /// A chunk-size line longer than [`ChunkLimits::max_line`].
    LineTooLong,
    /// Chunk data is not followed by CRLF, or the body ended before its final CRLF.
    MissingTerminator,
    /// A line ends in LF without CR.
    BareLf,
    /// A trailer line that is not a valid header field.
    InvalidTrailer,
    /// A trailer field that must not appear in trailers (framing, routing, ...).
    ForbiddenTrailer,
    /// The trailer section is over [`ChunkLimits::max_trailer_bytes`] or `max_trailer_fields`.
    TrailersTooLarge,
    /// The input ended in the middle of a chunk or line.
    UnexpectedEnd,
}

impl ChunkErrorKind {
    /// A short phrase for the log.
    pub fn reason(self) -> &'static str {
        match self {
            ChunkErrorKind::InvalidSize => "invalid chunk size",
            ChunkErrorKind::InvalidExtension => "invalid chunk extension",
            ChunkErrorKind::LineTooLong => "chunk size line too long",
            ChunkErrorKind::MissingTerminator => "missing chunk terminator",
            ChunkErrorKind::BareLf => "bare LF in chunked body",
            ChunkErrorKind::InvalidTrailer => "invalid trailer field",
            ChunkErrorKind::ForbiddenTrailer => "forbidden trailer field",
            ChunkErrorKind::TrailersTooLarge => "trailer section too large",
            ChunkErrorKind::UnexpectedEnd => "chunked body ended early",
        }
    }
}

/// A chunked body that mercy refuses; the answer is 400 and the connection closes.
///
/// `Display` adds the forbidden trailer's name: `forbidden trailer field (Host)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError {
    kind: ChunkErrorKind,
    field: Option<Box<str>>,
}

impl ChunkError {
    fn new(kind: ChunkErrorKind) -> Self {
        ChunkError { kind, field: None }
    }

    /// What was wrong.
    pub fn kind(&self) -> ChunkErrorKind {
        self.kind
    }

    /// A short phrase for the log.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// Always 400: the body cannot be trusted.
    pub fn status(&self) -> u16 {
        400
    }

    /// The trailer field's name, for [`ChunkErrorKind::ForbiddenTrailer`].
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{} ({field})", self.reason()),
            None => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for ChunkError {}

impl From<ChunkErrorKind> for ChunkError {
    fn from(kind: ChunkErrorKind) -> Self {
        ChunkError::new(kind)
    }
}

/// Where the decoder is in the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeLine,
    Data { remaining: u64 },
    DataCr,
    DataLf,
    Trailers,
    Done,
}

/// What a complete line meant.
enum LineOutcome {
    Size(u64),
    TrailerField,
    TrailerEnd,
}

/// Decodes one chunked body; keep it across reads until [`Chunk::End`].
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    limits: ChunkLimits,
    /// The part of a size or trailer line that arrived in an earlier call.
    line: Vec<u8>,
    trailer_bytes: usize,
    trailer_fields: usize,
    /// `End` was already returned once.
    end_reported: bool,
    /// The error already returned; the body cannot be read past it.
    failed: Option<ChunkError>,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    /// A decoder with the default [`ChunkLimits`].
    pub fn new() -> Self {
        ChunkedDecoder::with_limits(ChunkLimits::default())
    }

    /// A decoder with the given limits.
    pub fn with_limits(limits: ChunkLimits) -> Self {
        ChunkedDecoder {
            state: State::SizeLine,
            limits,
            line: Vec::new(),
            trailer_bytes: 0,
            trailer_fields: 0,
            end_reported: false,
            failed: None,
        }
    }

    /// The body's end was decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`; returns how many bytes were used and what they were.
    ///
    /// `Data` slices borrow from `input`; the count covers the control bytes
    /// before them. `NeedMore` uses all of `input`. After `End` every call
    /// returns `(0, End)`; after an error every call returns that error.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<(usize, Chunk<'a>), ChunkError> {
        self.decode_at_most(input, usize::MAX)
    }

    /// Like [`ChunkedDecoder::decode`], with `Data` of at most `max` bytes
    /// (at least one); the rest of the chunk comes on the next calls.
    pub fn decode_at_most<'a>(
        &mut self,
        input: &'a [u8],
        max: usize,
    ) -> Result<(usize, Chunk<'a>), ChunkError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }

        let result = self.decode_step(input, max.max(1));
        if let Err(error) = &result {
            self.failed = Some(error.clone());
        }
        result
    }

    fn decode_step<'a>(
        &mut self,
        input: &'a [u8],
        max: usize,
    ) -> Result<(usize, Chunk<'a>), ChunkError> {
        let mut position = 0;
        loop {
            match self.state {
                State::SizeLine | State::Trailers => {
                    if !self.step_line(input, &mut position)? {
                        return Ok((position, Chunk::NeedMore));
                    }
                }
                State::Data { remaining } => {
                    return Ok(self.take_data(input, position, remaining, max))
                }
                State::DataCr | State::DataLf => {
                    let Some(&byte) = input.get(position) else {
                        return Ok((position, Chunk::NeedMore));
                    };
                    self.step_terminator(byte)?;
                    position += 1;
                }
                State::Done if self.end_reported => return Ok((0, Chunk::End)),
                State::Done => {
                    self.end_reported = true;
                    return Ok((position, Chunk::End));
                }
            }
        }
    }

    /// Call when the input ended: `Ok` if the body was complete, else what is missing.
    pub fn finish(&self) -> Result<(), ChunkError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        match self.state {
            State::Done => Ok(()),
            State::DataCr | State::DataLf => Err(ChunkErrorKind::MissingTerminator.into()),
            State::Trailers if self.line.is_empty() => {
                Err(ChunkErrorKind::MissingTerminator.into())
            }
            _ => Err(ChunkErrorKind::UnexpectedEnd.into()),
        }
    }

    fn take_data<'a>(
        &mut self,
        input: &'a [u8],
        position: usize,
        remaining: u64,
        max: usize,
    ) -> (usize, Chunk<'a>) {
        let available = (input.len() - position).min(max);
        if available == 0 {
            return (position, Chunk::NeedMore);
        }

        let taken = usize::try_from(remaining).map_or(available, |left| left.min(available));
        let left = remaining - taken as u64;
        self.state = if left == 0 {
            State::DataCr
        } else {
            State::Data { remaining: left }
        };
        let end = position + taken;
        (end, Chunk::Data(&input[position..end]))
    }

    fn step_terminator(&mut self, byte: u8) -> Result<(), ChunkError> {
        self.state = match (self.state, byte) {
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataLf, b'\n') => State::SizeLine,
            _ => return Err(ChunkErrorKind::MissingTerminator.into()),
        };
        Ok(())
    }

    /// Feeds the current size or trailer line; `true` once it was complete and handled.
    fn step_line(&mut self, input: &[u8], position: &mut usize) -> Result<bool, ChunkError> {
        let rest = &input[*position..];
        let trailer = self.state == State::Trailers;
        if !trailer && self.line.is_empty() {
            // Refuse garbage at once rather than after a whole line of it.
            if rest.first().is_some_and(|byte| !byte.is_ascii_hexdigit()) {
                return Err(ChunkErrorKind::InvalidSize.into());
            }
        }

        let Some(line_feed) = rest.iter().position(|&byte| byte == b'\n') else {
            self.check_line_length(self.line.len() + rest.len())?;
            self.line.extend_from_slice(rest);
            *position = input.len();
            return Ok(false);
        };

        let length = self.line.len() + line_feed + 1;
        self.check_line_length(length)?;
        let outcome = if self.line.is_empty() {
            line_outcome(&rest[..=line_feed], trailer)
        } else {
            self.line.extend_from_slice(&rest[..=line_feed]);
            line_outcome(&self.line, trailer)
        };
        self.line.clear();
        *position += line_feed + 1;

        self.apply_line(outcome?, length)?;
        Ok(true)
    }

    fn check_line_length(&self, length: usize) -> Result<(), ChunkError> {
        let too_long = match self.state {
            State::Trailers => self.trailer_bytes + length > self.limits.max_trailer_bytes,
            _ => length > self.limits.max_line,
        };
        if !too_long {
            return Ok(());
        }
        Err(match self.state {
            State::Trailers => ChunkErrorKind::TrailersTooLarge.into(),
            _ => ChunkErrorKind::LineTooLong.into(),
        })
    }

    fn apply_line(&mut self, outcome: LineOutcome, length: usize) -> Result<(), ChunkError> {
        self.state = match outcome {
            LineOutcome::Size(0) => State::Trailers,
            LineOutcome::Size(size) => State::Data { remaining: size },
            LineOutcome::TrailerEnd => State::Done,
            LineOutcome::TrailerField => {
                self.trailer_bytes += length;
                self.trailer_fields += 1;
                if self.trailer_fields > self.limits.max_trailer_fields {
                    return Err(ChunkErrorKind::TrailersTooLarge.into());
                }
                State::Trailers
            }
        };
        Ok(())
    }
}

/// Reads one complete line (ending in LF) as a size line or a trailer line.
fn line_outcome(line: &[u8], trailer: bool) -> Result<LineOutcome, ChunkError> {
    if !trailer && !line[0].is_ascii_hexdigit() {
        return Err(ChunkErrorKind::InvalidSize.into());
    }
    let Some(content) = line.strip_suffix(b"\r\n") else {
        return Err(ChunkErrorKind::BareLf.into());
    };

    if !trailer {
        return parse_size_line(content).map(LineOutcome::Size);
    }
    if content.is_empty() {
        return Ok(LineOutcome::TrailerEnd);
    }
    check_trailer_field(line, content).map(|()| LineOutcome::TrailerField)
}

/// `1*HEXDIG [ BWS ";" extensions ]`; spaces without an extension are refused.
fn parse_size_line(content: &[u8]) -> Result<u64, ChunkError> {
    let digits_end = content
        .iter()
        .position(|byte| !byte.is_ascii_hexdigit())
        .unwrap_or(content.len());
    let size = content[..digits_end]
        .iter()
        .try_fold(0u64, |size, &digit| {
            let value = (digit as char).to_digit(16).map(u64::from)?;
            size.checked_mul(16)?.checked_add(value)
        })
        .ok_or(ChunkErrorKind::InvalidSize)?;

    let rest = &content[digits_end..];
    if rest.is_empty() {
        return Ok(size);
    }
    if !skip_bws(rest).starts_with(b";") {
        return Err(ChunkErrorKind::InvalidSize.into());
    }
    check_extensions(rest)?;
    Ok(size)
}

/// `*( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] )`.
fn check_extensions(mut rest: &[u8]) -> Result<(), ChunkError> {
    let invalid = ChunkErrorKind::InvalidExtension;
    while !rest.is_empty() {
        rest = skip_bws(rest).strip_prefix(b";").ok_or(invalid)?;
        rest = skip_bws(rest);

        let name_length = token_length(rest);
        if name_length == 0 {
            return Err(invalid.into());
        }
        rest = &rest[name_length..];

        if let Some(value) = skip_bws(rest).strip_prefix(b"=") {
            rest = skip_extension_value(skip_bws(value)).ok_or(invalid)?;
        }
    }
    Ok(())
}

/// The bytes after a token or quoted-string value; `None` if there is none.
fn skip_extension_value(value: &[u8]) -> Option<&[u8]> {
    let Some(mut quoted) = value.strip_prefix(b"\"") else {
        let length = token_length(value);
        return (length > 0).then(|| &value[length..]);
    };

    loop {
        match quoted {
            [b'"', after @ ..] => return Some(after),
            [b'\\', escaped, after @ ..]
                if is_quoted_byte(*escaped) || *escaped == b'"' || *escaped == b'\\' =>
            {
                quoted = after
            }
            [byte, after @ ..] if is_quoted_byte(*byte) => quoted = after,
            _ => return None,
        }
    }
}

/// qdtext: HTAB, SP, visible ASCII except `"` and `\`, obs-text.
fn is_quoted_byte(byte: u8) -> bool {
    matches!(byte, b'\t' | b' ' | 0x21 | 0x23..=0x5b | 0x5d..=0x7e | 0x80..=0xff)
}

fn token_length(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&byte| !is_token_byte(byte))
        .unwrap_or(bytes.len())
}

fn skip_bws(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|&byte| byte != b' ' && byte != b'\t')
        .unwrap_or(bytes.len());
    &bytes[start..]
}

/// Fields that change framing, routing, authentication or request handling
/// (RFC 9110 section 6.5.1); any of them in trailers is refused.
const FORBIDDEN_TRAILERS: &[&str] = &[
    "transfer-encoding",
    "content-length",
    "host",
    "trailer",
    "te",
    "connection",
    "keep-alive",
    "upgrade",
    "proxy-connection",
    "expect",
    "max-forwards",
    "cache-control",
    "pragma",
    "range",
    "if-match",
    "if-none-match",
    "if-modified-since",
    "if-unmodified-since",
    "if-range",
    "authorization",
    "proxy-authorization",
    "content-encoding",
    "content-range",
];

/// A trailer line must be a valid field (httparse decides) and not a forbidden one.
fn check_trailer_field(line: &[u8], content: &[u8]) -> Result<(), ChunkError> {
    if matches!(content[0], b' ' | b'\t') {
        return Err(ChunkErrorKind::InvalidTrailer.into());
    }
    let mut slot = [httparse::EMPTY_HEADER; 1];
    if httparse::parse_headers(line, &mut slot).is_err() {
        return Err(ChunkErrorKind::InvalidTrailer.into());
    }

    // httparse accepted the line, so the name runs up to the colon.
    let colon = content
        .iter()
        .position(|&byte| byte == b':')
        .ok_or(ChunkErrorKind::InvalidTrailer)?;
    let name = &content[..colon];
    if FORBIDDEN_TRAILERS
        .iter()
        .any(|forbidden| name.eq_ignore_ascii_case(forbidden.as_bytes()))
    {
        return Err(ChunkError {
            kind: ChunkErrorKind::ForbiddenTrailer,
            field: Some(String::from_utf8_lossy(name).into()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes; returns the body and the
    /// bytes used through the end, or the error (`finish` at the input's end).
    fn decode_in_pieces(input: &[u8], piece: usize) -> Result<(Vec<u8>, usize), ChunkErrorKind> {
        let mut decoder = ChunkedDecoder::new();
        let mut body = Vec::new();
        let mut used = 0;

        for piece in input.chunks(piece) {
            let mut offset = 0;
            loop {
                let (consumed, chunk) = decoder.decode(&piece[offset..]).map_err(|e| e.kind())?;
                offset += consumed;
                used += consumed;
                match chunk {
                    Chunk::Data(data) => body.extend_from_slice(data),
                    Chunk::NeedMore => break,
                    Chunk::End => return Ok((body, used)),
                }
            }
        }
        decoder.finish().map_err(|e| e.kind())?;
        unreachable!("finish is an error before End");
    }

    /// Decodes whole, byte by byte and in pieces of 3, and checks they agree.
    fn decode(input: &[u8]) -> Result<(Vec<u8>, usize), ChunkErrorKind> {
        let whole = decode_in_pieces(input, input.len().max(1));
        assert_eq!(whole, decode_in_pieces(input, 1), "byte by byte: {input:?}");
        assert_eq!(whole, decode_in_pieces(input, 3), "pieces of 3: {input:?}");
        whole
    }

    fn body(input: &[u8]) -> Vec<u8> {
        let (body, used) = decode(input).expect("valid body");
        assert_eq!(used, input.len());
        body
    }

    #[test]
    fn simple_body() {
        assert_eq!(
            body(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            b"hello world"
        );
        assert_eq!(
            body(b"1e\r\nall your base are belong to us\r\n0\r\n\r\n").len(),
            30
        );
        assert_eq!(body(b"0\r\n\r\n"), b"");
    }

    #[test]
    fn size_forms() {
        assert_eq!(body(b"A\r\n0123456789\r\n000\r\n\r\n"), b"0123456789");
        assert_eq!(body(b"00a\r\n0123456789\r\n0\r\n\r\n"), b"0123456789");
    }

    #[test]
    fn end_stops_before_the_next_request() {
        let input = b"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n";
        let (body, used) = decode(input).expect("valid body");
        assert_eq!(
            (&body[..], &input[used..]),
            (&b"abc"[..], &b"GET / HTTP/1.1\r\n\r\n"[..])
        );
    }

    #[test]
    fn end_is_repeated_with_nothing_consumed() {
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(decoder.decode(b"0\r\n\r\n"), Ok((5, Chunk::End)));
        assert_eq!(decoder.decode(b"more"), Ok((0, Chunk::End)));
        assert!(decoder.is_done());
        assert_eq!(decoder.finish(), Ok(()));
    }

    #[test]
    fn extensions_are_checked_and_ignored() {
        let input =
            b"5; some; parameters=stuff\r\nhello\r\n6; blahblah; blah\r\n world\r\n0\r\n\r\n";
        assert_eq!(body(input), b"hello world");
        assert_eq!(body(b"5;foo=\"bar baz\"\r\nhello\r\n0\r\n\r\n"), b"hello");
        assert_eq!(
            body(b"5 ; a = \"q\\\"x\"\r\nhello\r\n0;last\r\n\r\n"),
            b"hello"
        );

        for bad in [
            &b"5;ext=val\rue\r\nhello\r\n0\r\n\r\n"[..],
            b"5;\r\n",
            b"5;a=\r\n",
            b"5;a \r\n",
            b"5;a=\"x\r\n",
            b"5;a=b c\r\n",
        ] {
            assert_eq!(
                decode(bad),
                Err(ChunkErrorKind::InvalidExtension),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn invalid_sizes() {
        for bad in [
            &b"5\r\nhello\r\n0 \r\n\r\n"[..],
            b"5\r\nhello\r\n 0\r\n\r\n",
            b" ;foo=bar\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"+5\r\nhello\r\n0\r\n\r\n",
            b"0x5\r\nhello\r\n0\r\n\r\n",
            b"10000000000000000\r\n",
            b"\n",
        ] {
            assert_eq!(decode(bad), Err(ChunkErrorKind::InvalidSize), "{bad:?}");
        }
        assert_eq!(
            decode(b"ffffffffffffffff\r\nab"),
            Err(ChunkErrorKind::UnexpectedEnd)
        );
    }

    #[test]
    fn bare_lf_is_refused() {
        assert_eq!(
            decode(b"5\nhello\r\n0\r\n\r\n"),
            Err(ChunkErrorKind::BareLf)
        );
        assert_eq!(decode(b"0\r\nA: b\n\r\n"), Err(ChunkErrorKind::BareLf));
        assert_eq!(decode(b"0\r\n\n"), Err(ChunkErrorKind::BareLf));
    }

    #[test]
    fn missing_terminators() {
        assert_eq!(
            decode(b"5\r\nhelloXX0\r\n\r\n"),
            Err(ChunkErrorKind::MissingTerminator)
        );
        assert_eq!(
            decode(b"5\r\nhello\n0\r\n\r\n"),
            Err(ChunkErrorKind::MissingTerminator)
        );
        assert_eq!(decode(b"0\r\n"), Err(ChunkErrorKind::MissingTerminator));
        assert_eq!(
            decode(b"5\r\nhello"),
            Err(ChunkErrorKind::MissingTerminator)
        );
        assert_eq!(decode(b"5\r\nhel"), Err(ChunkErrorKind::UnexpectedEnd));
        assert_eq!(decode(b"5\r"), Err(ChunkErrorKind::UnexpectedEnd));
        assert_eq!(decode(b""), Err(ChunkErrorKind::UnexpectedEnd));
    }

    #[test]
    fn trailers_are_checked_and_dropped() {
        let input = b"5\r\nhello\r\n0\r\nVary: *\r\nContent-Type: text/plain\r\n\r\n";
        assert_eq!(body(input), b"hello");

        for (bad, name) in [
            (&b"0\r\nContent-Length: 99\r\n\r\n"[..], "Content-Length"),
            (b"0\r\nHost: evil.example.com\r\n\r\n", "Host"),
            (
                b"0\r\ntransfer-encoding: chunked\r\n\r\n",
                "transfer-encoding",
            ),
        ] {
            let error = ChunkedDecoder::new().decode(bad).expect_err("forbidden");
            assert_eq!(
                (error.kind(), error.field()),
                (ChunkErrorKind::ForbiddenTrailer, Some(name))
            );
            assert_eq!(
                error.to_string(),
                format!("forbidden trailer field ({name})")
            );
            assert_eq!(decode(bad), Err(ChunkErrorKind::ForbiddenTrailer));
        }
        for bad in [
            &b"0\r\n folded\r\n\r\n"[..],
            b"0\r\nA : b\r\n\r\n",
            b"0\r\nA: \x01\r\n\r\n",
            b"0\r\nnocolon\r\n\r\n",
        ] {
            assert_eq!(decode(bad), Err(ChunkErrorKind::InvalidTrailer), "{bad:?}");
        }
    }

    #[test]
    fn limits_bound_lines_and_trailers() {
        let limits = ChunkLimits {
            max_line: 8,
            max_trailer_bytes: 16,
            max_trailer_fields: 2,
        };
        let run = |input: &[u8]| {
            ChunkedDecoder::with_limits(limits)
                .decode(input)
                .map(|(n, _)| n)
                .map_err(|e| e.kind())
        };

        assert_eq!(run(b"5;ab=c\r\n"), Ok(8));
        assert_eq!(run(b"5;ab=cd\r\n"), Err(ChunkErrorKind::LineTooLong));
        assert_eq!(run(b"5;ab=cde"), Ok(8));
        assert_eq!(run(b"5;ab=cdef"), Err(ChunkErrorKind::LineTooLong));
        assert_eq!(run(b"0\r\nA: 1\r\nB: 2\r\n\r\n"), Ok(17));
        assert_eq!(
            run(b"0\r\nA: 1\r\nB: 2\r\nC: 3\r\n"),
            Err(ChunkErrorKind::TrailersTooLarge)
        );
        assert_eq!(
            run(b"0\r\nA: 123456789012345\r\n"),
            Err(ChunkErrorKind::TrailersTooLarge)
        );
    }

    #[test]
    fn an_error_sticks() {
        let mut decoder = ChunkedDecoder::new();
        let error = decoder.decode(b"5 \r\n").expect_err("invalid size");
        assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(error.clone()));
        assert_eq!(decoder.finish(), Err(error));
    }

    #[test]
    fn data_borrows_from_input() {
        let mut decoder = ChunkedDecoder::new();
        let input = b"a\r\n01234";
        assert_eq!(decoder.decode(input), Ok((8, Chunk::Data(b"01234"))));
        assert_eq!(decoder.decode(b""), Ok((0, Chunk::NeedMore)));
        assert_eq!(decoder.decode(b"56789\r\n"), Ok((5, Chunk::Data(b"56789"))));
        assert_eq!(decoder.decode(b"\r\n"), Ok((2, Chunk::NeedMore)));
    }
}
