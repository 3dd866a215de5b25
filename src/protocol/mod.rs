//! mercy's sans-IO HTTP/1.1 request framing: heads, chunked bodies, PROXY protocol.
//!
//! No sockets and no Python here: each parser takes bytes and says what they
//! are, what is still missing, or why the request is refused. The policy is
//! DESIGN.md section 6: framing ambiguities are refused, never guessed.

mod error;
pub mod chunked;
pub mod http;
pub mod proxy;
mod target;

pub use chunked::{Chunk, ChunkError, ChunkErrorKind, ChunkLimits, ChunkedDecoder};
pub use http::{
    parse_head, percent_decode, BodyFraming, HeadParser, Header, Limits, RequestError,
    RequestErrorKind, RequestHead,
};
pub use proxy::{parse_proxy, proxy_header_present, ProxyHeader};
