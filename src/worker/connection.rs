//! One HTTP/1.1 client connection: read a request head, hand the request to
//! a Python thread, write the response it sends back, repeat while the
//! connection is kept alive. Framing and the limits are mercy's own; the
//! head is parsed by `protocol::http`.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::context::WorkerContext;
use super::transport::Transport;
use crate::control::RetireMode;
use crate::protocol::body::{BodyDecoder, BodyPart};
use crate::protocol::http::{BodyFraming, HeadParser, RequestError, RequestHead};
use crate::protocol::proxy::{parse_proxy, proxy_header_present};
use crate::protocol::uwsgi::{parse_packet, Packet};
use crate::wsgi::{BodyError, Endpoints, Event, Request, RequestBody, ResponseHead, Source};

/// Unread request body bytes a connection reads and discards after the
/// response, to reach the next request; beyond this it is closed instead.
const DRAIN_LIMIT: u64 = 1024 * 1024;

/// Why reading a request head stopped.
enum HeadOutcome {
    Request(RequestHead),
    /// The client closed, stayed idle too long, or the worker is going.
    Closed,
    Rejected(RequestError),
    /// A request head began but did not end within `--socket-timeout`.
    TimedOut,
}

/// Serves requests on one connection until it closes.
pub async fn serve<S>(
    mut stream: S,
    endpoints: Endpoints,
    context: Arc<WorkerContext>,
    jobs: flume::Sender<Request>,
) where
    S: Transport,
{
    let mut buffer = BytesMut::with_capacity(8 * 1024);
    let mut endpoints = endpoints;
    if context.config.proxy_protocol {
        match read_proxy_header(&mut stream, &mut buffer, &context).await {
            Ok(Some(source)) => endpoints.remote = Some(source),
            Ok(None) => {}
            Err(Some(error)) => {
                reject(&mut stream, &error, &endpoints).await;
                return;
            }
            Err(None) => return,
        }
    }
    let mut parser = HeadParser::new(context.config.limits);
    let mut first = true;
    loop {
        let head = match read_head(&mut stream, &mut buffer, &mut parser, &context, first).await {
            HeadOutcome::Request(head) => head,
            HeadOutcome::Closed => return,
            HeadOutcome::Rejected(error) => {
                reject(&mut stream, &error, &endpoints).await;
                return;
            }
            HeadOutcome::TimedOut => {
                time_out_head(&mut stream, &endpoints, &context).await;
                return;
            }
        };
        first = false;
        let incoming = Incoming::http(head);
        let keep_alive = match exchange(
            &mut stream,
            &mut buffer,
            incoming,
            &endpoints,
            &context,
            &jobs,
        )
        .await
        {
            Ok(keep_alive) => keep_alive,
            Err(error) => {
                debug!(%error, "connection ended");
                false
            }
        };
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// Serves the one request of a uwsgi-protocol connection (nginx's
/// `uwsgi_pass`): a packet of variables, the body, then the response as
/// plain HTTP, and the connection closes.
pub async fn serve_uwsgi<S>(
    mut stream: S,
    endpoints: Endpoints,
    context: Arc<WorkerContext>,
    jobs: flume::Sender<Request>,
) where
    S: Transport,
{
    let config = &context.config;
    let mut buffer = BytesMut::with_capacity(4096);
    // One deadline for the whole packet, however the client splits it.
    let deadline = tokio::time::Instant::now() + config.socket_timeout;
    let packet = loop {
        match parse_packet(&buffer, config.limits.max_head_bytes, config.max_vars) {
            Ok(Some((packet, consumed))) => {
                buffer.advance(consumed);
                break packet;
            }
            Ok(None) => {}
            Err(error) => {
                warn!(event = "bad_request", client = %client(&endpoints), "refused a uwsgi packet: {error}");
                return;
            }
        }
        let reason = match tokio::time::timeout_at(deadline, stream.read_buf(&mut buffer)).await {
            Ok(Ok(n)) if n > 0 => continue,
            Ok(Ok(_)) if buffer.is_empty() => return,
            Ok(Ok(_)) => "the client closed the connection inside a uwsgi packet".to_owned(),
            Ok(Err(error)) => format!("reading the uwsgi packet failed: {error}"),
            Err(_) => format!(
                "no complete uwsgi packet within --socket-timeout ({}s)",
                config.socket_timeout.as_secs()
            ),
        };
        warn!(
            event = "bad_request",
            client = %client(&endpoints),
            received = buffer.len(),
            "refused a uwsgi packet: {reason}"
        );
        return;
    };
    if packet.modifier1 != 0 {
        warn!(
            event = "bad_request",
            modifier1 = packet.modifier1,
            "refused a uwsgi packet: modifier1 {} is not a WSGI request (set uwsgi_modifier1 0)",
            packet.modifier1
        );
        return;
    }
    let incoming = match Incoming::uwsgi(packet) {
        Ok(incoming) => incoming,
        Err(reason) => {
            warn!(event = "bad_request", "refused a uwsgi packet: {reason}");
            return;
        }
    };
    if let Err(error) = exchange(
        &mut stream,
        &mut buffer,
        incoming,
        &endpoints,
        &context,
        &jobs,
    )
    .await
    {
        debug!(%error, "uwsgi connection ended");
    }
    let _ = stream.shutdown().await;
}

/// The client's address for the log.
fn client(endpoints: &Endpoints) -> String {
    endpoints
        .remote
        .map_or_else(|| "unix socket".to_owned(), |address| address.to_string())
}

/// A request as the connection handles it, from either protocol.
struct Incoming {
    source: Source,
    method: Box<str>,
    path: Box<[u8]>,
    framing: BodyFraming,
    minor_version: u8,
    keep_alive: bool,
    expect_continue: bool,
    /// A uwsgi-protocol request: the response is delimited by the close.
    uwsgi: bool,
    /// The protocol the response's status line names.
    response_protocol: Box<[u8]>,
}

impl Incoming {
    fn http(head: RequestHead) -> Self {
        Self {
            method: head.method.clone(),
            path: head.path.clone(),
            framing: head.framing,
            minor_version: head.minor_version,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue && head.minor_version >= 1,
            uwsgi: false,
            response_protocol: Box::from(&b"HTTP/1.1"[..]),
            source: Source::Http(head),
        }
    }

    fn uwsgi(packet: Packet) -> Result<Self, String> {
        let text = |name: &str| {
            packet
                .var(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
        };
        let length = match text("CONTENT_LENGTH").as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(digits) => digits
                .parse::<u64>()
                .map_err(|_| format!("invalid CONTENT_LENGTH {digits:?}"))?,
        };
        let response_protocol = uwsgi_response_protocol(packet.var("SERVER_PROTOCOL"))?;
        let path = packet
            .var("PATH_INFO")
            .or_else(|| packet.var("REQUEST_URI"))
            .unwrap_or(b"/");
        Ok(Self {
            method: text("REQUEST_METHOD")
                .unwrap_or_else(|| "GET".to_owned())
                .into(),
            path: Box::from(path),
            framing: if length == 0 {
                BodyFraming::Empty
            } else {
                BodyFraming::Length(length)
            },
            minor_version: u8::from(packet.var("SERVER_PROTOCOL") != Some(b"HTTP/1.0")),
            keep_alive: false,
            expect_continue: false,
            uwsgi: true,
            response_protocol,
            source: Source::Uwsgi(packet),
        })
    }
}

/// The status line of a uwsgi-protocol response names the request's
/// SERVER_PROTOCOL, as uWSGI's does (`HTTP/1.0` when the front end sent
/// none). A value that could not stand in a status line is refused.
fn uwsgi_response_protocol(server_protocol: Option<&[u8]>) -> Result<Box<[u8]>, String> {
    match server_protocol {
        None | Some(b"") => Ok(Box::from(&b"HTTP/1.0"[..])),
        Some(value) if value.len() <= 32 && value.iter().all(u8::is_ascii_graphic) => {
            Ok(Box::from(value))
        }
        Some(value) => Err(format!(
            "invalid SERVER_PROTOCOL {:?}",
            String::from_utf8_lossy(value)
        )),
    }
}

/// Reads until a whole request head is buffered. Waiting for the first
/// byte of a follow-up request is the keep-alive idle time; once a request
/// has begun, its whole head must arrive within `--socket-timeout` of its
/// first byte, however the client spreads it over reads.
async fn read_head<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    parser: &mut HeadParser,
    context: &WorkerContext,
    first: bool,
) -> HeadOutcome
where
    S: AsyncRead + Unpin,
{
    let config = &context.config;
    let mut retire = context.watch_retire();
    // Set when the head's first byte is in the buffer (pipelined bytes are).
    let mut deadline = head_deadline(buffer, config.socket_timeout);
    loop {
        if !buffer.is_empty() {
            match parser.parse(buffer) {
                Ok(Some((head, consumed))) => {
                    buffer.advance(consumed);
                    return HeadOutcome::Request(head);
                }
                Ok(None) => {}
                Err(error) => return HeadOutcome::Rejected(error),
            }
        }

        let result = match deadline {
            Some(at) => tokio::time::timeout_at(at, stream.read_buf(buffer)).await,
            None => {
                let idle_wait = if first {
                    config.socket_timeout
                } else {
                    config.keep_alive
                };
                tokio::select! {
                    result = tokio::time::timeout(idle_wait, stream.read_buf(buffer)) => result,
                    () = fast_retirement(&mut retire) => return HeadOutcome::Closed,
                }
            }
        };

        match result {
            Ok(Ok(0)) => {
                if deadline.is_some() {
                    debug!("the client closed inside a request head");
                }
                return HeadOutcome::Closed;
            }
            Ok(Ok(_)) => deadline = deadline.or(head_deadline(buffer, config.socket_timeout)),
            Ok(Err(error)) => {
                debug!(%error, "read failed");
                return HeadOutcome::Closed;
            }
            Err(_) if deadline.is_some() => return HeadOutcome::TimedOut,
            Err(_) => {
                debug!(
                    first,
                    "the connection stayed idle past its wait; closing it"
                );
                return HeadOutcome::Closed;
            }
        }
    }
}

/// When the head that starts in `buffer` must be complete; None while no
/// byte of it has arrived.
fn head_deadline(buffer: &BytesMut, socket_timeout: Duration) -> Option<tokio::time::Instant> {
    (!buffer.is_empty()).then(|| tokio::time::Instant::now() + socket_timeout)
}

/// With `--enable-proxy-protocol`: reads a PROXY protocol header (v1 or v2)
/// if the connection starts with one, and returns the client address it
/// names. Err(None) when the client went away.
async fn read_proxy_header<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    context: &WorkerContext,
) -> Result<Option<std::net::SocketAddr>, Option<RequestError>>
where
    S: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + context.config.socket_timeout;
    loop {
        match proxy_header_present(buffer) {
            Some(false) => return Ok(None),
            Some(true) => match parse_proxy(buffer) {
                Ok(Some((header, consumed))) => {
                    buffer.advance(consumed);
                    return Ok(header.source);
                }
                Ok(None) => {}
                Err(error) => return Err(Some(error)),
            },
            None => {}
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(buffer)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return Err(None),
        }
    }
}

/// Resolves once the worker retires fast: idle connections close at once.
async fn fast_retirement(retire: &mut tokio::sync::watch::Receiver<Option<RetireMode>>) {
    let _ = retire
        .wait_for(|mode| *mode == Some(RetireMode::Fast))
        .await;
}

/// Answers a request that cannot be served, and logs why.
async fn reject<S>(stream: &mut S, error: &RequestError, endpoints: &Endpoints)
where
    S: AsyncWrite + Unpin,
{
    let status = error.status();
    warn!(
        event = "bad_request",
        status,
        client = %client(endpoints),
        "refused a request: {error}"
    );
    let (response, _) = closing_response(b"HTTP/1.1", status, error.reason());
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// Answers a request whose head did not arrive within `--socket-timeout`
/// with 408, and logs it with the limit.
async fn time_out_head<S>(stream: &mut S, endpoints: &Endpoints, context: &WorkerContext)
where
    S: AsyncWrite + Unpin,
{
    let limit = context.config.socket_timeout.as_secs();
    warn!(
        event = "bad_request",
        status = 408,
        client = %client(endpoints),
        limit = "--socket-timeout",
        "refused a request: its head did not arrive within --socket-timeout ({limit}s)"
    );
    let (response, _) = closing_response(
        b"HTTP/1.1",
        408,
        "the request head took longer than --socket-timeout",
    );
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// mercy's own plain-text answer, after which the connection closes: the
/// response and the length of its body.
fn closing_response(protocol: &[u8], status: u16, why: &str) -> (Vec<u8>, u64) {
    let reason = reason_phrase(status);
    let body = format!("{status} {reason}: {why}\n");
    let head = format!(
        " {status} {reason}\r\nContent-Type: text/plain\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let response = [protocol, head.as_bytes(), body.as_bytes()].concat();
    (response, body.len() as u64)
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        408 => "Request Timeout",
        504 => "Gateway Timeout",
        413 => "Content Too Large",
        414 => "URI Too Long",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// One request and its response. Returns whether the connection may carry
/// another request.
async fn exchange<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    incoming: Incoming,
    endpoints: &Endpoints,
    context: &WorkerContext,
    jobs: &flume::Sender<Request>,
) -> std::io::Result<bool>
where
    S: Transport,
{
    let started = Instant::now();
    let config = &context.config;
    let mut body = BodyReader::new(incoming.framing);
    let request_body = match read_before_app(&incoming, config.post_buffering) {
        Prebuffer::Nothing if body.is_done() => RequestBody::Empty,
        Prebuffer::Nothing => RequestBody::Streamed,
        Prebuffer::Whole => match body
            .prebuffer(stream, buffer, usize::MAX, config.socket_timeout)
            .await
        {
            Prebuffered::Complete(whole) => RequestBody::Buffered(whole),
            Prebuffered::Partial(_) => {
                let error = body.failure().unwrap_or_default();
                warn!(
                    event = "bad_request",
                    client = %client(endpoints),
                    method = %incoming.method,
                    "request body incomplete, the app was not called: {error}"
                );
                if let Some((status, why)) = body.refusal() {
                    let (response, _) = closing_response(&incoming.response_protocol, status, why);
                    let _ = stream.write_all(&response).await;
                }
                return Err(std::io::Error::other(error));
            }
        },
        // A chunked body's length is unknown: what arrives up to the bound
        // is read now, the rest (or the error that ended it) streams.
        Prebuffer::UpTo(limit) => match body
            .prebuffer(stream, buffer, limit, config.socket_timeout)
            .await
        {
            Prebuffered::Complete(whole) => RequestBody::Buffered(whole),
            Prebuffered::Partial(first) => RequestBody::Partial(first),
        },
    };

    let exchange = Exchange {
        method_is_head: &*incoming.method == "HEAD",
        minor_version: incoming.minor_version,
        // --keep-alive 0: every response closes its connection.
        client_keep_alive: incoming.keep_alive && !config.keep_alive.is_zero(),
        expect_continue: incoming.expect_continue,
        close_delimited: incoming.uwsgi,
        response_protocol: incoming.response_protocol,
        harakiri_at: config
            .harakiri
            .map(|limit| tokio::time::Instant::from_std(started) + limit),
    };
    let request_id = context.begin_request(&incoming.method, &incoming.path);
    let method = incoming.method.clone();
    let incoming_path_for_log = String::from_utf8_lossy(&incoming.path).into_owned();
    let path = config
        .request_log
        .then(|| String::from_utf8_lossy(&incoming.path).into_owned());

    let (events_tx, events) = mpsc::unbounded_channel();
    let slot = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let request = Request {
        slot: slot.clone(),
        source: incoming.source,
        method: incoming.method,
        path: incoming.path,
        body: request_body,
        endpoints: endpoints.clone(),
        events: events_tx,
    };
    if jobs.send_async(request).await.is_err() {
        context.end_request(request_id);
        return Ok(false);
    }
    crate::wsgi::wake_hub();
    let mut done = Done {
        status: 0,
        body_bytes: 0,
        unwritten: 0,
        keep_alive: false,
        harakiri: false,
        short_by: 0,
        dropped: 0,
    };
    // A failed write still leaves in `done` the status and the body bytes
    // that reached the socket before it, for the request log.
    let outcome = respond(
        stream, buffer, &mut body, events, &exchange, context, &mut done,
    )
    .await;
    if done.harakiri {
        super::harakiri::report(&slot, &method, &incoming_path_for_log, context);
    }
    context.end_request(request_id);

    if outcome.is_ok() {
        report_misframed_body(&done, &method, &incoming_path_for_log, context);
    }

    let status = done.status;
    let sent = done.body_bytes;
    let mut keep_alive = done.keep_alive && outcome.is_ok();
    let elapsed = started.elapsed();
    context.record_request(sent, elapsed);
    context.check_max_requests();
    if let Some(path) = path {
        info!(
            event = "request",
            method = %method,
            path = %path,
            status,
            size = sent,
            duration_ms = log_milliseconds(elapsed),
            worker.id = context.spec.id,
            "{method} {path} {status} {sent}"
        );
    }
    outcome?;

    // The next request starts after this one's body: read what the app
    // left unread, within a bound, or close.
    if keep_alive && !body.is_done() {
        keep_alive = body
            .drain(stream, buffer, DRAIN_LIMIT, config.socket_timeout)
            .await;
    }
    Ok(keep_alive)
}

/// A duration in milliseconds with microsecond precision, for the request
/// log: `0.317`, never the float noise of `0.31653200000000004`. A whole
/// number of microseconds divided by 1000 prints as its shortest decimal.
fn log_milliseconds(elapsed: Duration) -> f64 {
    let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
    micros as f64 / 1000.0
}

/// How much of a request body is read before the app is called.
enum Prebuffer {
    /// None: no body, a body over `--post-buffering`, or one the client
    /// sends only after `100 Continue`, which goes out when the app reads.
    Nothing,
    /// The whole body, whose length is within `--post-buffering`.
    Whole,
    /// A chunked body, up to this many bytes.
    UpTo(usize),
}

fn read_before_app(incoming: &Incoming, post_buffering: usize) -> Prebuffer {
    if incoming.expect_continue {
        return Prebuffer::Nothing;
    }
    match incoming.framing {
        BodyFraming::Length(length) if length > 0 && length <= post_buffering as u64 => {
            Prebuffer::Whole
        }
        BodyFraming::Chunked if post_buffering > 0 => Prebuffer::UpTo(post_buffering),
        _ => Prebuffer::Nothing,
    }
}

/// What the connection knows about a request when it writes the response.
struct Exchange {
    method_is_head: bool,
    minor_version: u8,
    client_keep_alive: bool,
    expect_continue: bool,
    /// The response ends when the connection closes (uwsgi protocol).
    close_delimited: bool,
    /// The protocol the status line names.
    response_protocol: Box<[u8]>,
    /// When the request passes `--harakiri`, if it is set.
    harakiri_at: Option<tokio::time::Instant>,
}

/// A response that was written.
struct Done {
    status: u16,
    /// Body bytes written to the socket.
    body_bytes: u64,
    /// Body bytes framed into the output buffer and not yet written.
    unwritten: u64,
    keep_alive: bool,
    /// The request passed `--harakiri`.
    harakiri: bool,
    /// Body bytes the app declared in its Content-Length and never sent.
    short_by: u64,
    /// Body bytes the app sent beyond its Content-Length, not sent on.
    dropped: u64,
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body may follow (HEAD, 1xx, 204, 304).
    None,
    Length {
        remaining: u64,
    },
    Chunked,
    /// Until the connection closes (HTTP/1.0 without a length).
    Close,
}

/// Writes the response as the Python thread produces it, and serves its
/// reads of the request body.
async fn respond<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    body: &mut BodyReader,
    mut events: mpsc::UnboundedReceiver<Event>,
    exchange: &Exchange,
    context: &WorkerContext,
    done: &mut Done,
) -> std::io::Result<()>
where
    S: Transport,
{
    let timeout = context.config.socket_timeout;
    let mut continue_sent = false;
    let mut framing = Framing::None;
    // Set once the request body turned out malformed or stalled (perhaps
    // before the app was called): whatever the app answers then, the client
    // gets a 400 or a 408 and the connection closes.
    let mut refusal = body.refusal();
    let mut out = BytesMut::new();
    loop {
        let next = match exchange.harakiri_at {
            Some(at) => tokio::select! {
                event = events.recv() => event,
                () = tokio::time::sleep_until(at) => {
                    // Past --harakiri: a 504 if nothing was sent, else the
                    // connection is cut; the app's thread is dealt with
                    // by the caller.
                    if done.status == 0 {
                        let (response, body_length) = closing_response(
                            &exchange.response_protocol,
                            504,
                            "the request ran longer than --harakiri allows",
                        );
                        let _ = stream.write_all(&response).await;
                        done.status = 504;
                        done.body_bytes = body_length;
                    }
                    done.keep_alive = false;
                    done.harakiri = true;
                    return Ok(());
                }
            },
            None => events.recv().await,
        };
        let Some(event) = next else { break };
        match event {
            Event::ReadBody { max, reply } => {
                if exchange.expect_continue && !continue_sent && !body.is_done() {
                    stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
                    continue_sent = true;
                }
                let result = body.read(stream, buffer, max, timeout).await;
                if result.is_err() {
                    done.keep_alive = false;
                    refusal = body.refusal();
                }
                reply.send(result);
            }
            Event::Head { .. } if refusal.is_some() => {
                let (status, why) = refusal.expect("checked by the guard");
                let (response, body_length) =
                    closing_response(&exchange.response_protocol, status, why);
                stream.write_all(&response).await?;
                done.status = status;
                done.body_bytes = body_length;
                done.keep_alive = false;
                return Ok(());
            }
            Event::Head {
                head,
                body: first,
                end,
            } => {
                done.status = head.status;
                done.keep_alive =
                    exchange.client_keep_alive && !head.close && !context.is_retiring();
                if exchange.expect_continue && !continue_sent && !body.is_done() {
                    // The app answered without reading the body: the client
                    // may still send it, so the connection cannot be reused.
                    done.keep_alive = false;
                }
                if body
                    .known_remaining()
                    .is_some_and(|left| left > DRAIN_LIMIT)
                {
                    // More unread body than the connection would drain: say
                    // so now rather than close under the client's next request.
                    done.keep_alive = false;
                }
                let whole_length = end.then_some(first.len() as u64);
                framing = encode_head(
                    &mut out,
                    &head,
                    exchange,
                    whole_length,
                    &mut done.keep_alive,
                );
                write_body(&mut out, &mut framing, &first, done);
                if end {
                    finish_body(&mut out, framing, done);
                }
                write_out(stream, &mut out, done).await?;
                if end {
                    return Ok(());
                }
            }
            Event::Body(bytes) => {
                write_body(&mut out, &mut framing, &bytes, done);
                write_out(stream, &mut out, done).await?;
            }
            Event::End => {
                finish_body(&mut out, framing, done);
                write_out(stream, &mut out, done).await?;
                return Ok(());
            }
            Event::Flush(reply) => reply.send(()),
            Event::Probe(reply) => {
                if stream.peer_gone() {
                    // Dropping the reply unanswered tells the app's thread.
                    debug!("the client left while the app produced only empty chunks");
                    done.keep_alive = false;
                    return Ok(());
                }
                reply.send(());
            }
            Event::File {
                file,
                offset,
                length,
            } => {
                send_file(stream, &mut out, &mut framing, &file, offset, length, done).await?;
            }
            Event::Abort => {
                done.keep_alive = false;
                return Ok(());
            }
        }
    }
    // The Python side went away without ending the response.
    done.keep_alive = false;
    Ok(())
}

/// Writes what `out` holds; the body bytes in it count as sent (for the
/// request log) once the write succeeded.
async fn write_out<S>(stream: &mut S, out: &mut BytesMut, done: &mut Done) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
{
    stream.write_all(out).await?;
    out.clear();
    done.body_bytes += std::mem::take(&mut done.unwritten);
    Ok(())
}

/// Writes the status line and headers, choosing the body framing.
fn encode_head(
    out: &mut BytesMut,
    head: &ResponseHead,
    exchange: &Exchange,
    whole_length: Option<u64>,
    keep_alive: &mut bool,
) -> Framing {
    // HEAD gets the framing headers the same GET would (RFC 9110 section
    // 9.3.2), and no body bytes: its framing becomes None once they are out.
    let head_method = exchange.method_is_head;
    let no_content = head.status < 200 || head.status == 204 || head.status == 304;
    let mut framing = match (head.content_length, whole_length) {
        _ if no_content => Framing::None,
        (Some(length), _) => Framing::Length { remaining: length },
        // An app that sends nothing for HEAD leaves the GET's length unknown.
        (None, Some(0)) if head_method => Framing::None,
        (None, Some(length)) => Framing::Length { remaining: length },
        (None, None) if exchange.minor_version >= 1 && !exchange.close_delimited => {
            Framing::Chunked
        }
        // Nothing follows a HEAD response, so its end needs no close.
        (None, None) if head_method => Framing::None,
        (None, None) => Framing::Close,
    };
    if framing == Framing::Close {
        *keep_alive = false;
    }

    out.extend_from_slice(&exchange.response_protocol);
    out.extend_from_slice(b" ");
    out.extend_from_slice(&head.status_line);
    out.extend_from_slice(b"\r\n");
    // RFC 9110 section 8.6: no Content-Length on a 1xx or 204 response.
    let length_forbidden = head.status < 200 || head.status == 204;
    for (name, value) in &head.headers {
        if length_forbidden && name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length { remaining } if head.content_length.is_none() => {
            let _ = write!(BytesWriter(out), "Content-Length: {remaining}\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
        _ => {}
    }
    if head_method {
        framing = Framing::None;
    }
    if !*keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if exchange.minor_version == 0 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// Sends a file region in the chosen framing, with sendfile. A file that
/// ends early leaves the response short, so the connection is closed.
async fn send_file<S: Transport>(
    stream: &mut S,
    out: &mut BytesMut,
    framing: &mut Framing,
    file: &std::os::fd::OwnedFd,
    offset: u64,
    length: u64,
    done: &mut Done,
) -> std::io::Result<()> {
    let allowed = match framing {
        Framing::None => return Ok(()),
        Framing::Length { remaining } => length.min(*remaining),
        Framing::Chunked | Framing::Close => length,
    };
    if allowed == 0 {
        return Ok(());
    }
    if *framing == Framing::Chunked {
        let _ = write!(BytesWriter(out), "{allowed:x}\r\n");
        stream.write_all(out).await?;
        out.clear();
    }
    let sent = stream.send_file(file, offset, allowed).await?;
    debug!(
        event = "sendfile",
        offset,
        bytes = sent,
        "sent {sent} bytes of a file from offset {offset} with sendfile"
    );
    done.body_bytes += sent;
    if let Framing::Length { remaining } = framing {
        *remaining -= sent;
    }
    if sent < allowed {
        warn!(
            missing = allowed - sent,
            "the file given to wsgi.file_wrapper ended early; closing the connection"
        );
        done.keep_alive = false;
    } else if *framing == Framing::Chunked {
        stream.write_all(b"\r\n").await?;
    }
    Ok(())
}

/// Appends body bytes in the chosen framing. Bytes beyond the app's
/// Content-Length are dropped and the connection is closed afterwards.
fn write_body(out: &mut BytesMut, framing: &mut Framing, bytes: &[u8], done: &mut Done) {
    if bytes.is_empty() {
        return;
    }
    match framing {
        Framing::None => {}
        Framing::Length { remaining } => {
            let allowed = (*remaining).min(bytes.len() as u64) as usize;
            if allowed < bytes.len() {
                done.dropped += (bytes.len() - allowed) as u64;
                done.keep_alive = false;
            }
            out.extend_from_slice(&bytes[..allowed]);
            *remaining -= allowed as u64;
            done.unwritten += allowed as u64;
        }
        Framing::Chunked => {
            let _ = write!(BytesWriter(out), "{:x}\r\n", bytes.len());
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
            done.unwritten += bytes.len() as u64;
        }
        Framing::Close => {
            out.extend_from_slice(bytes);
            done.unwritten += bytes.len() as u64;
        }
    }
}

fn finish_body(out: &mut BytesMut, framing: Framing, done: &mut Done) {
    match framing {
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        Framing::Length { remaining } if remaining > 0 => {
            done.short_by = remaining;
            done.keep_alive = false;
        }
        _ => {}
    }
}

/// Logs a response whose body did not match the app's Content-Length: the
/// client saw a cut or trimmed body, which is an app bug to fix.
fn report_misframed_body(done: &Done, method: &str, path: &str, context: &WorkerContext) {
    if done.short_by > 0 {
        error!(
            event = "response_short",
            method,
            path,
            missing = done.short_by,
            worker.id = context.spec.id,
            "the app's response to {method} {path} is {} bytes shorter than its \
             Content-Length; the connection was closed",
            done.short_by
        );
    }
    if done.dropped > 0 {
        error!(
            event = "response_too_long",
            method,
            path,
            extra = done.dropped,
            worker.id = context.spec.id,
            "the app's response to {method} {path} has {} bytes more than its \
             Content-Length; they were dropped and the connection was closed",
            done.dropped
        );
    }
}

/// `write!` into a BytesMut.
struct BytesWriter<'a>(&'a mut BytesMut);

impl std::io::Write for BytesWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The request body as it arrives on the connection: the sans-IO
/// [`BodyDecoder`] fed from the socket, remembering why it stopped.
struct BodyReader {
    decoder: BodyDecoder,
    /// Set once the body cannot be read further; every later read fails so.
    failure: Option<BodyFailure>,
}

enum BodyFailure {
    /// The chunked framing is malformed: the client gets a 400.
    Malformed(String),
    /// The client sent nothing for --socket-timeout: it gets a 408.
    Stalled(String),
    /// The client closed or failed before the body ended.
    Cut(String),
}

impl BodyFailure {
    fn why(&self) -> &str {
        match self {
            Self::Malformed(why) | Self::Stalled(why) | Self::Cut(why) => why,
        }
    }
}

/// What [`BodyReader::prebuffer`] read before the app is called.
enum Prebuffered {
    /// The whole body.
    Complete(Bytes),
    /// Its first bytes: the bound was reached, or reading failed (the
    /// failure is kept for the app's next read).
    Partial(Bytes),
}

impl BodyReader {
    fn new(framing: BodyFraming) -> Self {
        Self {
            decoder: BodyDecoder::new(framing),
            failure: None,
        }
    }

    fn is_done(&self) -> bool {
        self.decoder.is_done()
    }

    /// The answer the client gets, whatever the app says, once its body
    /// could not be read through its own fault.
    fn refusal(&self) -> Option<(u16, &'static str)> {
        match self.failure {
            Some(BodyFailure::Malformed(_)) => Some((400, "the request body is malformed")),
            Some(BodyFailure::Stalled(_)) => Some((
                408,
                "the request body did not arrive within --socket-timeout",
            )),
            Some(BodyFailure::Cut(_)) | None => None,
        }
    }

    /// Unread body bytes, when the framing says.
    fn known_remaining(&self) -> Option<u64> {
        self.decoder.known_remaining()
    }

    /// Why the body cannot be read further, if it cannot.
    fn failure(&self) -> Option<String> {
        self.failure
            .as_ref()
            .map(|failure| failure.why().to_owned())
    }

    /// Reads up to `max` body bytes; empty at the end of the body.
    async fn read<S>(
        &mut self,
        stream: &mut S,
        buffer: &mut BytesMut,
        max: usize,
        timeout: Duration,
    ) -> Result<Bytes, BodyError>
    where
        S: AsyncRead + Unpin,
    {
        if let Some(why) = self.failure() {
            return Err(BodyError(why));
        }
        loop {
            match self.decoder.decode(buffer, max) {
                Ok((used, BodyPart::Data(data))) => {
                    let framing = used - data.len();
                    let mut taken = buffer.split_to(used);
                    return Ok(taken.split_off(framing).freeze());
                }
                Ok((used, BodyPart::End)) => {
                    buffer.advance(used);
                    return Ok(Bytes::new());
                }
                Ok((used, BodyPart::NeedMore)) => {
                    buffer.advance(used);
                    if let Err(failure) = fill(stream, buffer, timeout).await {
                        let error = BodyError(failure.why().to_owned());
                        self.failure = Some(failure);
                        return Err(error);
                    }
                }
                Err(error) => {
                    let why = format!("malformed chunked request body: {error}");
                    self.failure = Some(BodyFailure::Malformed(why.clone()));
                    return Err(BodyError(why));
                }
            }
        }
    }

    /// Reads the body before the app is called, until it ends or `limit`
    /// bytes are held.
    async fn prebuffer<S>(
        &mut self,
        stream: &mut S,
        buffer: &mut BytesMut,
        limit: usize,
        timeout: Duration,
    ) -> Prebuffered
    where
        S: AsyncRead + Unpin,
    {
        let mut held = BytesMut::new();
        while held.len() < limit {
            match self.read(stream, buffer, limit - held.len(), timeout).await {
                Ok(bytes) if bytes.is_empty() => return Prebuffered::Complete(held.freeze()),
                Ok(bytes) => held.extend_from_slice(&bytes),
                Err(_) => return Prebuffered::Partial(held.freeze()),
            }
        }
        if self.is_done() {
            return Prebuffered::Complete(held.freeze());
        }
        Prebuffered::Partial(held.freeze())
    }

    /// Discards up to `limit` unread body bytes; true if the body ended.
    async fn drain<S>(
        &mut self,
        stream: &mut S,
        buffer: &mut BytesMut,
        limit: u64,
        timeout: Duration,
    ) -> bool
    where
        S: AsyncRead + Unpin,
    {
        let mut discarded = 0u64;
        while discarded <= limit {
            match self.read(stream, buffer, 64 * 1024, timeout).await {
                Ok(bytes) if bytes.is_empty() => return true,
                Ok(bytes) => discarded += bytes.len() as u64,
                Err(_) => return false,
            }
        }
        false
    }
}

/// Reads more bytes into the buffer, within the socket timeout.
async fn fill<S>(
    stream: &mut S,
    buffer: &mut BytesMut,
    timeout: Duration,
) -> Result<(), BodyFailure>
where
    S: AsyncRead + Unpin,
{
    buffer.reserve(16 * 1024);
    match tokio::time::timeout(timeout, stream.read_buf(buffer)).await {
        Ok(Ok(0)) => Err(BodyFailure::Cut(
            "the client closed the connection before the body ended".into(),
        )),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(BodyFailure::Cut(format!(
            "reading the body failed: {error}"
        ))),
        Err(_) => Err(BodyFailure::Stalled(format!(
            "the client sent no body bytes for {}s (--socket-timeout)",
            timeout.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_milliseconds_keep_three_decimals() {
        let cases = [
            (316_532, "0.316"),
            (1_234_567, "1.234"),
            (0, "0"),
            (999, "0"),
        ];
        for (nanos, printed) in cases {
            let value = log_milliseconds(Duration::from_nanos(nanos));
            assert_eq!(value.to_string(), printed, "for {nanos} ns");
        }
        let long = log_milliseconds(Duration::from_secs(86_400) + Duration::from_micros(7));
        assert_eq!(long.to_string(), "86400000.007");
    }
}
