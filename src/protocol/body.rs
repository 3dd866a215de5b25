//! Request bodies, sans-IO: which bytes of a connection's buffer belong to
//! the body of the current request, for Content-Length and chunked framing.
//!
//! The connection reads the socket into a buffer and asks a [`BodyDecoder`]
//! what the bytes at its front are: body data (at most as many bytes as the
//! reader asked for), the end of the body, or too little to tell. The bytes
//! after the body belong to the next request and are never taken.
//!
//! ```
//! use mercy::protocol::{BodyDecoder, BodyFraming, BodyPart};
//!
//! let mut body = BodyDecoder::new(BodyFraming::Chunked);
//! let wire = b"5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
//! assert_eq!(body.decode(wire, 3)?, (6, BodyPart::Data(b"hel")));
//! assert_eq!(body.decode(&wire[6..], 100)?, (2, BodyPart::Data(b"lo")));
//! assert_eq!(body.decode(&wire[8..], 100)?, (7, BodyPart::End));
//! assert_eq!(&wire[15..], b"GET / HTTP/1.1\r\n");
//! # Ok::<(), mercy::protocol::ChunkError>(())
//! ```

use super::chunked::{Chunk, ChunkError, ChunkedDecoder};
use super::http::BodyFraming;

/// What [`BodyDecoder::decode`] found at the front of its input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPart<'a> {
    /// Body bytes, borrowed from the input; never empty.
    Data(&'a [u8]),
    /// The input holds no body byte yet; read more and call again with
    /// what follows the used bytes.
    NeedMore,
    /// The body ended; its framing bytes are in the used count. Every later
    /// call returns `(0, End)`.
    End,
}

/// The body of one request as it arrives; keep it across reads.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone)]
enum State {
    /// This many body bytes are still to come.
    Length(u64),
    Chunked(Box<ChunkedDecoder>),
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as the request head said.
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::Empty | BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(length) => State::Length(length),
            BodyFraming::Chunked => State::Chunked(Box::default()),
        };
        BodyDecoder { state }
    }

    /// The whole body was decoded.
    pub fn is_done(&self) -> bool {
        match &self.state {
            State::Done => true,
            State::Chunked(decoder) => decoder.is_done(),
            State::Length(_) => false,
        }
    }

    /// Body bytes still to come, when the framing says (Content-Length);
    /// `None` for a chunked body that has not ended.
    pub fn known_remaining(&self) -> Option<u64> {
        match &self.state {
            State::Done => Some(0),
            State::Length(remaining) => Some(*remaining),
            State::Chunked(decoder) if decoder.is_done() => Some(0),
            State::Chunked(_) => None,
        }
    }

    /// Decodes from the front of `input`: returns how many bytes were used
    /// and what they were. `Data` holds at most `max` bytes (at least one)
    /// and borrows the bytes just before the used count. A malformed
    /// chunked body gives its error, on this call and every later one.
    pub fn decode<'a>(
        &mut self,
        input: &'a [u8],
        max: usize,
    ) -> Result<(usize, BodyPart<'a>), ChunkError> {
        let max = max.max(1);
        match &mut self.state {
            State::Done => Ok((0, BodyPart::End)),
            State::Length(_) if input.is_empty() => Ok((0, BodyPart::NeedMore)),
            State::Length(remaining) => {
                let taken = usize::try_from(*remaining)
                    .map_or(input.len(), |left| left.min(input.len()))
                    .min(max);
                *remaining -= taken as u64;
                if *remaining == 0 {
                    self.state = State::Done;
                }
                Ok((taken, BodyPart::Data(&input[..taken])))
            }
            State::Chunked(decoder) => Ok(match decoder.decode_at_most(input, max)? {
                (used, Chunk::Data(data)) => (used, BodyPart::Data(data)),
                (used, Chunk::NeedMore) => (used, BodyPart::NeedMore),
                (used, Chunk::End) => {
                    self.state = State::Done;
                    (used, BodyPart::End)
                }
            }),
        }
    }

    /// Call when the input ended (the client closed): `Ok` if the body was
    /// complete, else what is missing.
    pub fn finish(&self) -> Result<(), ChunkError> {
        match &self.state {
            State::Done => Ok(()),
            State::Chunked(decoder) => decoder.finish(),
            State::Length(_) => Err(super::chunked::ChunkErrorKind::UnexpectedEnd.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` whole in reads of at most `max` bytes: the body, and
    /// where it ended.
    fn collect(framing: BodyFraming, input: &[u8], max: usize) -> (Vec<u8>, Option<usize>) {
        let mut decoder = BodyDecoder::new(framing);
        let (mut body, mut position) = (Vec::new(), 0);
        loop {
            match decoder.decode(&input[position..], max).expect("valid") {
                (used, BodyPart::Data(data)) => {
                    assert!(!data.is_empty() && data.len() <= max.max(1));
                    body.extend_from_slice(data);
                    position += used;
                }
                (used, BodyPart::End) => return (body, Some(position + used)),
                (used, BodyPart::NeedMore) => {
                    assert_eq!(position + used, input.len());
                    return (body, None);
                }
            }
        }
    }

    #[test]
    fn content_length_bodies_stop_at_their_length() {
        let input = b"helloGET / HTTP/1.1\r\n";
        for max in [0, 1, 2, 5, 100] {
            let (body, end) = collect(BodyFraming::Length(5), input, max);
            assert_eq!((&body[..], end), (&b"hello"[..], Some(5)), "max {max}");
        }
        assert_eq!(
            collect(BodyFraming::Length(9), b"hello", 3),
            (b"hello".to_vec(), None)
        );
        assert_eq!(
            collect(BodyFraming::Empty, b"GET", 3),
            (Vec::new(), Some(0))
        );
    }

    #[test]
    fn chunked_bodies_give_at_most_max_bytes() {
        let input = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nA: b\r\n\r\nNEXT";
        for max in [1, 2, 3, 7, 1000] {
            let (body, end) = collect(BodyFraming::Chunked, input, max);
            assert_eq!(&body[..], b"hello world", "max {max}");
            assert_eq!(end, Some(input.len() - 4), "max {max}");
        }
    }

    #[test]
    fn known_remaining_only_for_lengths() {
        let mut decoder = BodyDecoder::new(BodyFraming::Length(10));
        assert_eq!(decoder.known_remaining(), Some(10));
        decoder.decode(b"abc", 100).expect("valid");
        assert_eq!(decoder.known_remaining(), Some(7));
        assert_eq!(
            BodyDecoder::new(BodyFraming::Chunked).known_remaining(),
            None
        );
    }

    #[test]
    fn errors_stay_and_ends_are_reported() {
        let mut decoder = BodyDecoder::new(BodyFraming::Chunked);
        assert!(decoder.decode(b"zz\r\n", 10).is_err());
        assert!(decoder.decode(b"0\r\n\r\n", 10).is_err());
        assert!(decoder.finish().is_err());

        let mut short = BodyDecoder::new(BodyFraming::Length(3));
        short.decode(b"ab", 10).expect("valid");
        assert!(short.finish().is_err());
        short.decode(b"c", 10).expect("valid");
        assert_eq!(short.finish(), Ok(()));
        assert_eq!(short.decode(b"more", 10), Ok((0, BodyPart::End)));
    }
}
