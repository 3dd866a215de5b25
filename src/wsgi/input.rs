//! `wsgi.input`: the request body as a file-like object. Bytes come from
//! the connection task on demand; reading never blocks past the body's end.

use std::sync::Mutex;

use bytes::{Buf, Bytes, BytesMut};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::mpsc;

use super::wait::reply_channel;
use super::Event;

/// How much is asked of the connection at once when the app reads "all" or
/// a line.
const READ_CHUNK: usize = 64 * 1024;

#[pyclass(frozen, module = "mercy")]
pub struct Input {
    state: Mutex<InputState>,
}

struct InputState {
    buffer: BytesMut,
    eof: bool,
    /// Where more bytes come from; None when the whole body is buffered.
    source: Option<mpsc::UnboundedSender<Event>>,
}

impl Input {
    pub fn buffered(body: Bytes) -> Self {
        Self::with(BytesMut::from(&body[..]), true, None)
    }

    pub fn streamed(source: mpsc::UnboundedSender<Event>) -> Self {
        Self::with(BytesMut::new(), false, Some(source))
    }

    /// `first` is already here; the rest of the body comes from `source`.
    pub fn partial(first: Bytes, source: mpsc::UnboundedSender<Event>) -> Self {
        Self::with(BytesMut::from(&first[..]), false, Some(source))
    }

    pub fn empty() -> Self {
        Self::with(BytesMut::new(), true, None)
    }

    fn with(buffer: BytesMut, eof: bool, source: Option<mpsc::UnboundedSender<Event>>) -> Self {
        Self {
            state: Mutex::new(InputState {
                buffer,
                eof,
                source,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InputState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Fills the buffer until it holds `wanted` bytes or the body ends.
    /// `until_newline` stops early once a line is complete.
    fn fill(&self, py: Python<'_>, wanted: usize, until_newline: bool) -> PyResult<()> {
        loop {
            let source = {
                let state = self.lock();
                let have_line = until_newline && state.buffer.contains(&b'\n');
                if state.eof || state.buffer.len() >= wanted || have_line {
                    return Ok(());
                }
                state.source.clone()
            };
            let Some(source) = source else {
                self.lock().eof = true;
                return Ok(());
            };
            let max = wanted
                .saturating_sub(self.lock().buffer.len())
                .clamp(1, READ_CHUNK);
            let chunk = fetch(py, &source, max)?;
            let mut state = self.lock();
            match chunk {
                Ok(bytes) if bytes.is_empty() => state.eof = true,
                Ok(bytes) => state.buffer.extend_from_slice(&bytes),
                Err(message) => {
                    state.eof = true;
                    return Err(PyOSError::new_err(message));
                }
            }
        }
    }

    fn take<'py>(&self, py: Python<'py>, count: usize) -> Bound<'py, PyBytes> {
        let mut state = self.lock();
        let count = count.min(state.buffer.len());
        let out = PyBytes::new(py, &state.buffer[..count]);
        state.buffer.advance(count);
        out
    }
}

/// Asks the connection task for up to `max` body bytes and waits.
fn fetch(
    py: Python<'_>,
    source: &mpsc::UnboundedSender<Event>,
    max: usize,
) -> PyResult<Result<Bytes, String>> {
    let closed = || "the client connection is closed".to_owned();
    let (reply, answer) = reply_channel();
    if let Err(unsent) = source.send(Event::ReadBody { max, reply }) {
        unsent.0.abandon();
        return Ok(Err(closed()));
    }
    Ok(match answer.wait(py)? {
        Some(Ok(bytes)) => Ok(bytes),
        Some(Err(error)) => Err(error.0),
        None => Err(closed()),
    })
}

fn limit(size: Option<isize>) -> Option<usize> {
    size.and_then(|size| usize::try_from(size).ok())
}

#[pymethods]
impl Input {
    /// Reads up to `size` bytes, or the rest of the body.
    #[pyo3(signature = (size = None))]
    fn read<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        match limit(size) {
            Some(size) => {
                self.fill(py, size, false)?;
                Ok(self.take(py, size))
            }
            None => {
                self.fill(py, usize::MAX, false)?;
                Ok(self.take(py, usize::MAX))
            }
        }
    }

    /// Reads one line (with its newline), at most `size` bytes.
    #[pyo3(signature = (size = None))]
    fn readline<'py>(&self, py: Python<'py>, size: Option<isize>) -> PyResult<Bound<'py, PyBytes>> {
        let cap = limit(size).unwrap_or(usize::MAX);
        self.fill(py, cap, true)?;
        let end = {
            let state = self.lock();
            match state.buffer.iter().position(|&b| b == b'\n') {
                Some(newline) => (newline + 1).min(cap),
                None => state.buffer.len().min(cap),
            }
        };
        Ok(self.take(py, end))
    }

    /// Reads every remaining line.
    #[pyo3(signature = (hint = None))]
    fn readlines<'py>(&self, py: Python<'py>, hint: Option<isize>) -> PyResult<Bound<'py, PyList>> {
        let lines = PyList::empty(py);
        let mut total = 0usize;
        let hint = limit(hint).filter(|&h| h > 0);
        loop {
            let line = self.readline(py, None)?;
            if line.as_bytes().is_empty() {
                return Ok(lines);
            }
            total += line.as_bytes().len();
            lines.append(line)?;
            if hint.is_some_and(|h| total >= h) {
                return Ok(lines);
            }
        }
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let line = self.readline(py, None)?;
        Ok((!line.as_bytes().is_empty()).then_some(line))
    }
}
