//! mercy's sans-IO HTTP/1.1 request framing: heads, bodies, PROXY protocol.
//!
//! No sockets and no Python here: each parser takes bytes and says what they
//! are, what is still missing, or why the request is refused. The policy is
//! DESIGN.md section 6: framing ambiguities are refused, never guessed.
//!
//! ```
//! use mercy::protocol::{BodyFraming, Chunk, ChunkedDecoder, HeadParser, Limits};
//!
//! let wire = b"POST /upload?x=1 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
//!              5\r\nhello\r\n0\r\n\r\n";
//! let mut parser = HeadParser::new(Limits::default());
//! let (head, consumed) = parser.parse(wire)?.expect("the whole head is there");
//! assert_eq!((&*head.method, &*head.path, &*head.query), ("POST", &b"/upload"[..], &b"x=1"[..]));
//! assert_eq!(head.framing, BodyFraming::Chunked);
//!
//! let mut decoder = ChunkedDecoder::new();
//! let (used, chunk) = decoder.decode(&wire[consumed..])?;
//! assert_eq!(chunk, Chunk::Data(b"hello"));
//! assert_eq!(decoder.decode(&wire[consumed + used..])?, (7, Chunk::End));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod body;
pub mod chunked;
mod error;
pub mod http;
mod policy;
pub mod proxy;
mod target;
pub mod uwsgi;

pub use body::{BodyDecoder, BodyPart};
pub use chunked::{Chunk, ChunkError, ChunkErrorKind, ChunkLimits, ChunkedDecoder};
pub use http::{
    parse_head, percent_decode, BodyFraming, HeadParser, Header, Limits, RequestError,
    RequestErrorKind, RequestHead,
};
pub use proxy::{parse_proxy, proxy_header_present, ProxyHeader};
