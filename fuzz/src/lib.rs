//! Helpers shared by mercy's fuzz targets: how an input chooses limits and
//! read sizes, and a connection driver that frames a whole stream (PROXY
//! header, heads, bodies, pipelining) with mercy's own sans-IO parts, in the
//! order `worker::connection` calls them: `HeadParser` for heads and
//! `BodyDecoder` for Content-Length and chunked bodies, read in pieces of
//! the sizes an app asks for. A target compares feeding the same bytes
//! whole and in pieces.
//!
//! Inputs start with one control byte; the rest is what a client sent.

use mercy::protocol::{
    parse_proxy, proxy_header_present, BodyDecoder, BodyFraming, BodyPart, Chunk, ChunkError,
    ChunkLimits, ChunkedDecoder, HeadParser, Limits, ProxyHeader, RequestError, RequestHead,
};

/// Splits an input into its control byte and the wire bytes.
pub fn split_control(data: &[u8]) -> Option<(u8, &[u8])> {
    data.split_first().map(|(&control, wire)| (control, wire))
}

/// Head limits chosen by the low two bits of the control byte: mercy's
/// defaults, tight limits that the corpus breaks often, no line limits with
/// a large head, and the smallest `--buffer-size` mercy accepts.
pub fn head_limits(control: u8) -> Limits {
    match control & 0b11 {
        0 => Limits::default(),
        1 => Limits {
            max_head_bytes: 96,
            max_request_line: 40,
            max_header_count: 3,
            max_field_size: 24,
        },
        2 => Limits {
            max_head_bytes: 1 << 16,
            max_request_line: 0,
            max_header_count: 0,
            max_field_size: 0,
        },
        _ => Limits {
            max_head_bytes: 64,
            ..Limits::default()
        },
    }
}

/// Chunked-body limits chosen by bit 2 of the control byte.
pub fn chunk_limits(control: u8) -> ChunkLimits {
    if control & 0b100 == 0 {
        ChunkLimits::default()
    } else {
        ChunkLimits {
            max_line: 16,
            max_trailer_bytes: 40,
            max_trailer_fields: 2,
        }
    }
}

/// Read sizes for feeding `length` bytes: seeded by the control byte and
/// the length, mostly small, sometimes large, never zero.
pub fn piece_sizes(control: u8, length: usize) -> Vec<usize> {
    let mut state =
        (u64::from(control) << 32 | length as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut sizes = Vec::new();
    let mut total = 0;
    while total < length.max(1) {
        let roll = next();
        let size = if roll % 4 == 0 {
            1 + (next() as usize) % (length / 2 + 1)
        } else {
            1 + (roll as usize >> 8) % 16
        };
        sizes.push(size);
        total += size;
    }
    sizes
}

/// Everything a chunked decoder produced from one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded {
    pub body: Vec<u8>,
    /// Where the body ended (after the trailer section), the error, or
    /// `None` if the input ended before the body did.
    pub end: Option<Result<usize, ChunkError>>,
}

/// Decodes `input` as a chunked body arriving in reads of the given sizes
/// (cycled), checking the decoder's contract on every call.
pub fn decode_chunked(input: &[u8], limits: ChunkLimits, sizes: &[usize]) -> Decoded {
    let mut decoder = ChunkedDecoder::with_limits(limits);
    let mut body = Vec::new();
    let (mut arrived, mut position) = (0, 0);
    let mut sizes = sizes.iter().cycle();

    loop {
        let available = &input[position..arrived];
        match decoder.decode(available) {
            Ok((used, Chunk::Data(data))) => {
                assert!(!data.is_empty(), "Data is never empty");
                assert!(used <= available.len());
                assert_eq!(
                    &available[used - data.len()..used],
                    data,
                    "Data borrows the bytes just before `used`"
                );
                body.extend_from_slice(data);
                position += used;
            }
            Ok((used, Chunk::End)) => {
                assert!(decoder.is_done());
                assert_eq!(decoder.decode(b"more"), Ok((0, Chunk::End)));
                assert_eq!(decoder.finish(), Ok(()));
                return Decoded {
                    body,
                    end: Some(Ok(position + used)),
                };
            }
            Ok((used, Chunk::NeedMore)) => {
                assert_eq!(used, available.len(), "NeedMore uses all it was given");
                position += used;
                if arrived == input.len() {
                    assert!(
                        decoder.finish().is_err(),
                        "an unfinished body cannot finish"
                    );
                    return Decoded { body, end: None };
                }
                let size = *sizes.next().expect("the cycle never ends");
                arrived = (arrived + size).min(input.len());
            }
            Err(error) => {
                assert_eq!(decoder.decode(b"0\r\n\r\n"), Err(error.clone()));
                assert_eq!(decoder.finish(), Err(error.clone()));
                return Decoded {
                    body,
                    end: Some(Err(error)),
                };
            }
        }
    }
}

/// What every accepted head satisfies, whatever the input was.
pub fn check_head_policy(head: &RequestHead, consumed: usize, limits: &Limits) {
    assert!(consumed <= limits.max_head_bytes, "{consumed} > {limits:?}");
    assert!(!head.method.is_empty());
    assert!(!head.method.bytes().any(|byte| byte.is_ascii_lowercase()));
    assert_ne!(&*head.method, "CONNECT");
    assert!(head.minor_version <= 1);
    assert!(
        head.path.starts_with(b"/") || &*head.path == b"*",
        "{head:?}"
    );
    assert!(!head.path.contains(&b'#') && !head.query.contains(&b'#'));
    for header in &head.headers {
        assert!(!header.name.is_empty());
        assert!(!header.name.contains(&b'_'), "{head:?}");
        let control = |byte: &u8| (*byte < b' ' && *byte != b'\t') || *byte == 0x7f;
        assert!(!header.value.iter().any(control), "{head:?}");
        let blank = |byte: Option<&u8>| matches!(byte, Some(b' ' | b'\t'));
        assert!(!blank(header.value.first()) && !blank(header.value.last()));
    }

    let has = |name: &str| head.header(name).is_some();
    match head.framing {
        BodyFraming::Chunked => {
            assert!(
                !has("content-length") && head.minor_version == 1,
                "{head:?}"
            );
        }
        BodyFraming::Length(length) => {
            assert!(length > 0 && !has("transfer-encoding"), "{head:?}");
            let named: Vec<&[u8]> = head
                .headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case(b"content-length"))
                .map(|h| &*h.value)
                .collect();
            assert_eq!(named.len(), 1, "one Content-Length is kept: {head:?}");
            let value = std::str::from_utf8(named[0]).expect("digits");
            assert_eq!(value.parse::<u64>(), Ok(length), "{head:?}");
        }
        BodyFraming::Empty => assert!(!has("transfer-encoding"), "{head:?}"),
    }
    if head.minor_version == 0 {
        assert!(!head.expect_continue);
    }
}

/// One request as a connection would hand it to the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Framed {
    pub head: RequestHead,
    pub body: Vec<u8>,
}

/// How a simulated connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The input ended between requests.
    Clean,
    /// A request without keep-alive was complete; the connection closes.
    Closed,
    /// The PROXY header was refused.
    ProxyRefused(RequestError),
    /// A head was refused.
    Refused(RequestError),
    /// A chunked body was refused.
    BodyRefused(ChunkError),
    /// The input ended inside a PROXY header or a head.
    IncompleteHead,
    /// The input ended inside a body.
    IncompleteBody,
}

/// Everything a connection made of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    pub proxy: Option<ProxyHeader>,
    pub requests: Vec<Framed>,
    pub ending: Ending,
}

enum Stage {
    Proxy,
    Head,
    Body(BodyDecoder),
}

/// Frames `wire` as one connection fed in reads of the given sizes
/// (cycled), the app reading bodies in pieces of the `reads` sizes
/// (cycled): an optional PROXY header first when `proxy` is set, then
/// requests until the input ends, one is refused or one closes.
pub fn converse(
    wire: &[u8],
    limits: Limits,
    proxy: bool,
    sizes: &[usize],
    reads: &[usize],
) -> Conversation {
    let mut sizes = sizes.iter().cycle();
    let mut reads = reads.iter().cycle();
    let (mut arrived, mut position) = (0, 0);
    let mut stage = if proxy { Stage::Proxy } else { Stage::Head };
    let mut parser = HeadParser::new(limits);
    let mut talk = Conversation {
        proxy: None,
        requests: Vec::new(),
        ending: Ending::Clean,
    };
    let mut current: Option<Framed> = None;

    loop {
        let available = &wire[position..arrived];
        // How many bytes the stage used; None when it needs more input.
        let used = match &mut stage {
            Stage::Proxy => match proxy_header_present(available) {
                None => None,
                Some(false) => {
                    stage = Stage::Head;
                    Some(0)
                }
                Some(true) => match parse_proxy(available) {
                    Ok(None) => None,
                    Ok(Some((header, used))) => {
                        talk.proxy = Some(header);
                        stage = Stage::Head;
                        Some(used)
                    }
                    Err(error) => return talk.end(Ending::ProxyRefused(error)),
                },
            },
            Stage::Head if available.is_empty() => None,
            Stage::Head => match parser.parse(available) {
                Ok(None) => None,
                Ok(Some((head, used))) => {
                    check_head_policy(&head, used, &limits);
                    stage = Stage::Body(BodyDecoder::new(head.framing));
                    current = Some(Framed {
                        head,
                        body: Vec::new(),
                    });
                    Some(used)
                }
                Err(error) => return talk.end(Ending::Refused(error)),
            },
            Stage::Body(decoder) => {
                let max = *reads.next().expect("the cycle never ends");
                let request = current.as_mut().expect("a body follows a head");
                match read_body(decoder, available, max, &mut request.body) {
                    Ok((used, more)) => {
                        position += used;
                        (!more).then_some(0)
                    }
                    Err(error) => return talk.end(Ending::BodyRefused(error)),
                }
            }
        };

        match used {
            Some(used) => {
                position += used;
                let complete = matches!(&stage, Stage::Body(decoder) if decoder.is_done());
                if complete {
                    let request = current.take().expect("a body follows a head");
                    let keep_alive = request.head.keep_alive;
                    talk.requests.push(request);
                    stage = Stage::Head;
                    if !keep_alive {
                        return talk.end(Ending::Closed);
                    }
                }
            }
            None if arrived < wire.len() => {
                let size = *sizes.next().expect("the cycle never ends");
                arrived = (arrived + size).min(wire.len());
            }
            None => {
                let ending = match stage {
                    Stage::Proxy | Stage::Head if position == wire.len() => Ending::Clean,
                    Stage::Proxy | Stage::Head => Ending::IncompleteHead,
                    Stage::Body(decoder) => {
                        assert!(
                            decoder.finish().is_err(),
                            "an unfinished body cannot finish"
                        );
                        Ending::IncompleteBody
                    }
                };
                if let Some(request) = current.take() {
                    talk.requests.push(request);
                }
                return talk.end(ending);
            }
        }
    }
}

/// One step of an app's read, as the connection serves it: decodes the
/// front of `available` (at most `max` body bytes) and checks the
/// decoder's contract. Returns the bytes used and whether more input is
/// needed.
fn read_body(
    decoder: &mut BodyDecoder,
    available: &[u8],
    max: usize,
    body: &mut Vec<u8>,
) -> Result<(usize, bool), ChunkError> {
    let before = decoder.known_remaining();
    match decoder.decode(available, max) {
        Ok((used, BodyPart::Data(data))) => {
            assert!(!data.is_empty() && data.len() <= max.max(1));
            assert!(used <= available.len());
            assert_eq!(&available[used - data.len()..used], data);
            if let Some(before) = before {
                let after = decoder.known_remaining().expect("a length stays known");
                assert_eq!(before - after, data.len() as u64);
            }
            body.extend_from_slice(data);
            Ok((used, false))
        }
        Ok((used, BodyPart::End)) => {
            assert!(decoder.is_done() && decoder.finish().is_ok());
            assert_eq!(decoder.known_remaining(), Some(0));
            assert_eq!(decoder.decode(b"more", max), Ok((0, BodyPart::End)));
            Ok((used, false))
        }
        Ok((used, BodyPart::NeedMore)) => {
            assert_eq!(used, available.len(), "NeedMore uses all it was given");
            Ok((used, true))
        }
        Err(error) => {
            assert_eq!(decoder.decode(b"0\r\n\r\n", max), Err(error.clone()));
            assert!(decoder.finish().is_err());
            Err(error)
        }
    }
}

impl Conversation {
    fn end(mut self, ending: Ending) -> Self {
        self.ending = ending;
        self
    }
}
