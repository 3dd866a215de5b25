//! `start_response`, the `write` callable, and sending the app's response
//! iterable back to the connection task.

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use pyo3::exceptions::{PyAssertionError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use tokio::sync::mpsc;

use super::wait::reply_channel;
use super::{Event, HeaderPair, ResponseHead};

/// Body bytes a response may have queued for the connection before the app
/// waits for them to be written.
const FLOW_WINDOW: usize = 256 * 1024;

/// The response of one request, shared by `start_response`, `write` and the
/// thread that iterates the app's result.
pub struct Response {
    state: Mutex<State>,
    events: mpsc::UnboundedSender<Event>,
    /// A HEAD request: no body byte is ever written, so the response ends
    /// with its head and the app's iterable is not advanced further.
    head_only: bool,
}

#[derive(Default)]
struct State {
    status: Option<(u16, Box<[u8]>)>,
    headers: Vec<HeaderPair>,
    content_length: Option<u64>,
    close: bool,
    head_sent: bool,
    /// The connection is gone: stop producing the response.
    disconnected: bool,
    /// The last event of the response went out.
    finished: bool,
    /// Body bytes sent since the connection last confirmed a flush.
    unflushed: usize,
}

/// The client went away; the response cannot be delivered.
#[derive(Debug)]
pub struct Disconnected;

impl Response {
    pub fn new(events: mpsc::UnboundedSender<Event>, head_only: bool) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State::default()),
            events,
            head_only,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn head_sent(&self) -> bool {
        self.lock().head_sent
    }

    /// Queues an event for the connection. Once a window of body bytes is
    /// queued, waits until the connection has written them: this is where a
    /// slow client pushes back on the app.
    pub fn send(&self, py: Python<'_>, event: Event) -> Result<(), Disconnected> {
        let size = match &event {
            Event::Head { body, .. } | Event::Body(body) => body.len(),
            _ => 0,
        };
        if self.events.send(event).is_err() {
            self.lock().disconnected = true;
            return Err(Disconnected);
        }
        let must_flush = {
            let mut state = self.lock();
            state.unflushed += size;
            if state.unflushed >= FLOW_WINDOW {
                state.unflushed = 0;
                true
            } else {
                false
            }
        };
        if must_flush {
            self.flush(py)?;
        }
        Ok(())
    }

    /// Waits until everything queued so far is written to the client.
    fn flush(&self, py: Python<'_>) -> Result<(), Disconnected> {
        self.round_trip(py, Event::Flush)
    }

    /// Whether the client is still connected. Asked when the app yields an
    /// empty chunk (an SSE-style keep-alive): nothing is written then, so
    /// no write would find out that the client left.
    pub fn client_present(&self, py: Python<'_>) -> bool {
        !self.lock().disconnected && self.round_trip(py, Event::Probe).is_ok()
    }

    /// Sends the event `make` builds and waits for the connection's answer.
    fn round_trip(
        &self,
        py: Python<'_>,
        make: fn(super::Reply<()>) -> Event,
    ) -> Result<(), Disconnected> {
        let (reply, written) = reply_channel();
        if let Err(unsent) = self.events.send(make(reply)) {
            unsent.0.abandon();
            self.lock().disconnected = true;
            return Err(Disconnected);
        }
        match written.wait(py) {
            Ok(Some(())) => Ok(()),
            _ => {
                self.lock().disconnected = true;
                Err(Disconnected)
            }
        }
    }

    /// Sends body bytes, preceded by the head if it has not gone out yet.
    /// Returns whether more of the body is wanted: false once the client is
    /// gone, or once the head of a HEAD response went out.
    pub fn send_body(&self, py: Python<'_>, body: Bytes, end: bool) -> PyResult<bool> {
        let event = {
            let mut state = self.lock();
            if state.disconnected || (self.head_only && state.head_sent) {
                return Ok(false);
            }
            if state.head_sent {
                None
            } else {
                let head = state.take_head()?;
                state.head_sent = true;
                state.finished = end;
                Some(Event::Head {
                    head,
                    body: body.clone(),
                    end,
                })
            }
        };
        let sent = match event {
            Some(head) if self.head_only => {
                // The head is all a HEAD response has: end it now rather
                // than iterate a body nobody will see (PEP 3333 lets the
                // server stop early; close() still runs once).
                let sent = self.send(py, head);
                if sent.is_ok() && !end {
                    self.lock().finished = true;
                    let _ = self.send(py, Event::End);
                }
                return Ok(false);
            }
            Some(head) => self.send(py, head),
            None => {
                let sent = if body.is_empty() {
                    Ok(())
                } else {
                    self.send(py, Event::Body(body))
                };
                match sent {
                    Ok(()) if end => {
                        self.lock().finished = true;
                        self.send(py, Event::End)
                    }
                    other => other,
                }
            }
        };
        Ok(sent.is_ok())
    }

    /// The app failed. Before the head went out the client gets a 500;
    /// after it, the connection is closed.
    pub fn fail(&self, py: Python<'_>) {
        let event = {
            let mut state = self.lock();
            if state.disconnected || state.finished {
                return;
            }
            state.finished = true;
            if state.head_sent {
                Event::Abort
            } else {
                state.head_sent = true;
                internal_error()
            }
        };
        let _ = self.send(py, event);
    }

    /// Sends a file region: the head (with a Content-Length of the region
    /// if the app set none), the file, then the end.
    fn send_file(
        &self,
        py: Python<'_>,
        file: std::os::fd::OwnedFd,
        offset: u64,
        length: u64,
    ) -> PyResult<()> {
        {
            let mut state = self.lock();
            if !state.head_sent && state.content_length.is_none() {
                state.content_length = Some(length);
                let value = length.to_string().into_bytes().into_boxed_slice();
                state
                    .headers
                    .push((Box::from(&b"Content-Length"[..]), value));
            }
        }
        if !self.send_body(py, Bytes::new(), false)? {
            return Ok(());
        }
        let length = self
            .lock()
            .content_length
            .map_or(length, |cl| cl.min(length));
        if self
            .send(
                py,
                Event::File {
                    file,
                    offset,
                    length,
                },
            )
            .is_ok()
        {
            self.send_body(py, Bytes::new(), true)?;
        }
        Ok(())
    }

    /// Makes sure the connection task hears the end of the response, even
    /// when the app left it unfinished.
    pub fn finish(&self, py: Python<'_>) {
        self.fail(py);
    }

    fn start(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let mut state = self.lock();
        match exc_info {
            Some(info) if !info.is_none() => {
                if state.head_sent {
                    // PEP 3333: too late to change the response; re-raise.
                    let value = info.get_item(1)?;
                    return Err(PyErr::from_value(value));
                }
            }
            _ => {
                if state.status.is_some() {
                    return Err(PyAssertionError::new_err(
                        "start_response() called a second time without exc_info",
                    ));
                }
            }
        }
        let status = parse_status(status)?;
        let (headers, content_length, close) = parse_headers(headers)?;
        state.status = Some(status);
        state.headers = headers;
        state.content_length = content_length;
        state.close = close;
        Ok(())
    }
}

impl State {
    fn take_head(&mut self) -> PyResult<ResponseHead> {
        let Some((status, status_line)) = self.status.take() else {
            return Err(PyAssertionError::new_err(
                "the app returned a body before it called start_response()",
            ));
        };
        Ok(ResponseHead {
            status,
            status_line,
            headers: std::mem::take(&mut self.headers),
            content_length: self.content_length,
            close: self.close,
        })
    }
}

/// The bare 500 sent when the app fails before its response started.
pub fn internal_error() -> Event {
    let body = Bytes::from_static(b"Internal Server Error\n");
    Event::Head {
        head: ResponseHead {
            status: 500,
            status_line: Box::from(&b"500 Internal Server Error"[..]),
            headers: vec![
                (
                    Box::from(&b"Content-Type"[..]),
                    Box::from(&b"text/plain; charset=utf-8"[..]),
                ),
                (
                    Box::from(&b"Content-Length"[..]),
                    body.len().to_string().into_bytes().into_boxed_slice(),
                ),
            ],
            content_length: Some(body.len() as u64),
            close: true,
        },
        body,
        end: true,
    }
}

/// The `start_response` callable of PEP 3333.
#[pyclass(frozen, module = "mercy")]
pub struct StartResponse {
    pub response: Arc<Response>,
}

#[pymethods]
impl StartResponse {
    #[pyo3(signature = (status, headers, exc_info = None))]
    fn __call__(
        &self,
        status: &Bound<'_, PyAny>,
        headers: &Bound<'_, PyAny>,
        exc_info: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Write> {
        self.response.start(status, headers, exc_info)?;
        Ok(Write {
            response: self.response.clone(),
        })
    }
}

/// The `write` callable that `start_response` returns.
#[pyclass(frozen, module = "mercy")]
pub struct Write {
    response: Arc<Response>,
}

#[pymethods]
impl Write {
    fn __call__(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let bytes = body_bytes(data)?;
        if !self.response.send_body(py, bytes, false)? && !self.response.head_only {
            return Err(pyo3::exceptions::PyConnectionError::new_err(
                "the client closed the connection",
            ));
        }
        Ok(())
    }
}

/// Sends the app's result: a list or tuple in one piece (with a
/// Content-Length when the app set none), anything else item by item.
/// Returns Err with the app's exception; the caller logs it.
pub fn send_result(py: Python<'_>, response: &Response, result: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Some((file, offset, length)) = sendable_file(result)? {
        return response.send_file(py, file, offset, length);
    }
    if let Ok(list) = result.cast::<PyList>() {
        return send_sequence(py, response, list.iter());
    }
    if let Ok(tuple) = result.cast::<PyTuple>() {
        return send_sequence(py, response, tuple.iter());
    }
    if result.is_none() {
        return Err(PyTypeError::new_err(
            "the app returned None instead of an iterable of bytes: it must return \
             the body, such as [b\"...\"] or a generator of bytes (is a return missing?)",
        ));
    }
    for item in result.try_iter()? {
        let bytes = body_bytes(&item?)?;
        if bytes.is_empty() {
            if !response.client_present(py) {
                return Ok(());
            }
            continue;
        }
        if !response.send_body(py, bytes, false)? {
            return Ok(());
        }
    }
    response.send_body(py, Bytes::new(), true)?;
    Ok(())
}

/// For a `wsgi.file_wrapper` around a real file: a copy of its descriptor,
/// its current offset and the bytes from there to its end. None for
/// anything else (which is then iterated).
fn sendable_file(result: &Bound<'_, PyAny>) -> PyResult<Option<(std::os::fd::OwnedFd, u64, u64)>> {
    let py = result.py();
    let constants = super::environ::CONSTANTS
        .get(py)
        .expect("the environ constants are set before requests are served");
    if !result.get_type().is(constants.file_wrapper.bind(py)) {
        return Ok(None);
    }
    let filelike = result.getattr(pyo3::intern!(py, "filelike"))?;
    let (Ok(fileno), Ok(offset)) = (
        filelike.call_method0(pyo3::intern!(py, "fileno")),
        filelike.call_method0(pyo3::intern!(py, "tell")),
    ) else {
        return Ok(None);
    };
    let (Ok(fd), Ok(offset)) = (fileno.extract::<i32>(), offset.extract::<u64>()) else {
        return Ok(None);
    };
    // SAFETY: the descriptor belongs to the file object, which outlives
    // this call; it is only borrowed to be duplicated.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let Ok(stat) = nix::sys::stat::fstat(borrowed) else {
        return Ok(None);
    };
    if stat.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Ok(None);
    }
    let file = borrowed
        .try_clone_to_owned()
        .map_err(|error| pyo3::exceptions::PyOSError::new_err(error.to_string()))?;
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    Ok(Some((file, offset, size.saturating_sub(offset))))
}

fn send_sequence<'py>(
    py: Python<'py>,
    response: &Response,
    items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
) -> PyResult<()> {
    let body = if items.len() == 1 {
        let only = items.into_iter().next().expect("one item");
        body_bytes(&only)?
    } else {
        let mut joined = BytesMut::new();
        for item in items {
            let item = item
                .cast_into::<PyBytes>()
                .map_err(|e| not_bytes(e.into_inner().as_any()))?;
            joined.extend_from_slice(item.as_bytes());
        }
        joined.freeze()
    };
    response.send_body(py, body, true)?;
    Ok(())
}

fn body_bytes(item: &Bound<'_, PyAny>) -> PyResult<Bytes> {
    match item.cast::<PyBytes>() {
        Ok(bytes) => Ok(Bytes::copy_from_slice(bytes.as_bytes())),
        Err(_) => Err(not_bytes(item)),
    }
}

fn not_bytes(item: &Bound<'_, PyAny>) -> PyErr {
    let kind = item
        .get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "?".to_owned());
    PyTypeError::new_err(format!(
        "the response body must be bytes, but the app gave {kind}"
    ))
}

/// `"200 OK"` -> (200, the text as bytes). A three-digit code, then a space
/// and a reason (or nothing); latin-1; no control characters.
fn parse_status(status: &Bound<'_, PyAny>) -> PyResult<(u16, Box<[u8]>)> {
    let bad = |why: &str| PyValueError::new_err(format!("invalid status {status:?}: {why}"));
    let text = status
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err("the status must be a str, like '200 OK'"))?;
    let bytes = latin1(text).ok_or_else(|| bad("not latin-1"))?;
    let digits = bytes.get(..3).ok_or_else(|| bad("too short"))?;
    if !digits.iter().all(u8::is_ascii_digit) || digits[0] == b'0' {
        return Err(bad("it must start with a three-digit code"));
    }
    if bytes.len() > 3 && bytes[3] != b' ' {
        return Err(bad("a space must follow the code"));
    }
    if bytes.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f) {
        return Err(bad("control characters are not allowed"));
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    if !(200..=599).contains(&code) {
        // A 1xx would leave the request without a final response and the
        // next one on the connection answered as this one.
        return Err(bad("an app's status must be a final response, 200 to 599 \
             (mercy sends 100 Continue itself when the app reads the body)"));
    }
    Ok((code, bytes))
}

type ParsedHeaders = (Vec<HeaderPair>, Option<u64>, bool);

/// Checks every header before anything is sent: names are tokens, values
/// are latin-1 without CR, LF or NUL. Hop-by-hop headers are the server's:
/// they are dropped, except that `Connection: close` is honoured.
fn parse_headers(headers: &Bound<'_, PyAny>) -> PyResult<ParsedHeaders> {
    let mut parsed = Vec::with_capacity(headers.len().unwrap_or(0));
    let mut content_length = None;
    let mut close = false;
    for pair in headers.try_iter()? {
        let pair = pair?;
        let (name, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract().map_err(|_| {
            PyTypeError::new_err("each response header must be a (name, value) tuple")
        })?;
        let name_str = name
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("a header name must be a str"))?;
        let value_str = value.cast::<PyString>().map_err(|_| {
            PyTypeError::new_err(format!("the value of header {name} must be a str"))
        })?;
        let name_bytes = latin1(name_str)
            .filter(|n| !n.is_empty() && n.iter().all(|&b| is_token(b)))
            .ok_or_else(|| PyValueError::new_err(format!("invalid header name {name_str:?}")))?;
        let value_bytes = latin1(value_str)
            .filter(|v| !v.iter().any(|&b| matches!(b, b'\r' | b'\n' | 0)))
            .ok_or_else(|| {
                PyValueError::new_err(format!(
                    "invalid value for header {name_str}: not latin-1, or it has CR, LF or NUL"
                ))
            })?;
        let is = |known: &[u8]| name_bytes.eq_ignore_ascii_case(known);
        match () {
            () if is(b"content-length") => {
                let text = std::str::from_utf8(&value_bytes).unwrap_or("");
                let length = text.trim().parse::<u64>().map_err(|_| {
                    PyValueError::new_err(format!("invalid Content-Length {text:?}"))
                })?;
                match content_length {
                    // The same length twice frames the body one way: send it once.
                    Some(earlier) if earlier == length => continue,
                    Some(earlier) => {
                        return Err(PyValueError::new_err(format!(
                            "two different Content-Length headers, {earlier} and {length}: \
                             the response would be framed two ways"
                        )));
                    }
                    None => content_length = Some(length),
                }
            }
            () if is(b"connection") => {
                close |= value_bytes.eq_ignore_ascii_case(b"close");
                continue;
            }
            () if is(b"transfer-encoding")
                || is(b"keep-alive")
                || is(b"upgrade")
                || is(b"proxy-connection") =>
            {
                continue
            }
            () => {}
        }
        parsed.push((name_bytes, value_bytes));
    }
    Ok((parsed, content_length, close))
}

/// The latin-1 bytes of a str, or None if it has a character above U+00FF.
fn latin1(text: &Bound<'_, PyString>) -> Option<Box<[u8]>> {
    let text = text.to_str().ok()?;
    // Header names and values are nearly always ASCII: one exact copy.
    if text.is_ascii() {
        return Some(Box::from(text.as_bytes()));
    }
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok())
        .collect()
}

fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}
