//! The WSGI bridge: how a request parsed by Rust reaches the app on a
//! Python thread, and how the app's response travels back.
//!
//! The connection task (Rust, no GIL) sends a [`Request`] to a Python
//! thread. That thread builds the environ, calls the app and sends
//! [`Event`]s back over a bounded channel; reading `wsgi.input` is a
//! request to the connection task on the same channel, so the connection
//! task handles the socket alone and in order.

mod environ;
mod input;
mod native;
mod response;
mod wait;

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::http::RequestHead;
use crate::protocol::uwsgi::Packet;

pub use native::{install_app, native_module, APP};
pub use wait::{hub, set_gevent_wait, set_mode, wake_hub, Hub, Mode, Reply};

/// The request body as the app will read it.
#[derive(Debug)]
pub enum RequestBody {
    /// No body.
    Empty,
    /// Read whole before the app was called (small bodies, see
    /// `--post-buffering`).
    Buffered(Bytes),
    /// Its first bytes were read before the app was called (a chunked body
    /// longer than `--post-buffering`, or one whose reading failed); the
    /// rest is read on demand, as for [`RequestBody::Streamed`].
    Partial(Bytes),
    /// Read on demand from the connection with [`Event::ReadBody`].
    Streamed,
}

/// Where the connection came from and arrived at.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub remote: Option<SocketAddr>,
    pub server_name: String,
    pub server_port: String,
}

/// What the environ is built from.
#[derive(Debug)]
pub enum Source {
    /// An HTTP/1.1 request head.
    Http(RequestHead),
    /// The variables of a uwsgi packet, which are environ entries already.
    Uwsgi(Packet),
}

/// One request handed to a Python thread.
#[derive(Debug)]
pub struct Request {
    pub source: Source,
    /// The method and raw path, for the log.
    pub method: Box<str>,
    pub path: Box<[u8]>,
    pub body: RequestBody,
    pub endpoints: Endpoints,
    pub events: mpsc::UnboundedSender<Event>,
    /// The request slot (thread or greenlet) that runs the app for this
    /// request, once one does: `usize::MAX` before.
    pub slot: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// A response header as bytes: name and value, validated.
pub type HeaderPair = (Box<[u8]>, Box<[u8]>);

/// The status and headers of a response, with the framing the app asked for.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: u16,
    /// The whole status as the app gave it: `200 OK`.
    pub status_line: Box<[u8]>,
    /// Headers to send, without hop-by-hop ones.
    pub headers: Vec<HeaderPair>,
    /// The app's Content-Length, if it set one.
    pub content_length: Option<u64>,
    /// The app asked for the connection to be closed.
    pub close: bool,
}

/// What a Python thread tells the connection task.
#[derive(Debug)]
pub enum Event {
    /// The response starts, with its first body bytes; `end` when the whole
    /// response is in `body`.
    Head {
        head: ResponseHead,
        body: Bytes,
        end: bool,
    },
    /// More body bytes.
    Body(Bytes),
    /// `length` bytes of a file from `offset` (`wsgi.file_wrapper`), sent
    /// with sendfile.
    File {
        file: std::os::fd::OwnedFd,
        offset: u64,
        length: u64,
    },
    /// The response is complete.
    End,
    /// The app failed after the response started: close the connection.
    Abort,
    /// The app reads the request body: at most `max` bytes, empty at its end.
    ReadBody {
        max: usize,
        reply: Reply<Result<Bytes, BodyError>>,
    },
    /// Answer once every earlier event is written: the app's flow control,
    /// so a slow client holds back the app instead of filling memory.
    Flush(Reply<()>),
    /// Answer if the client is still connected; if it left, end the
    /// exchange without answering. Sent when the app yields an empty chunk,
    /// which writes nothing that could find out.
    Probe(Reply<()>),
}

impl Event {
    /// An event that could not be queued (the connection is gone): a reply
    /// inside it will never be waited for.
    pub fn abandon(self) {
        match self {
            Self::ReadBody { reply, .. } => reply.abandon(),
            Self::Flush(reply) | Self::Probe(reply) => reply.abandon(),
            _ => {}
        }
    }
}

/// The request body could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct BodyError(pub String);
