//! `_mercy`, the native module behind `import mercy`, and the loop each
//! request thread runs: take a request, call the app, send the response.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyModule, PyTuple};
use tracing::{error, info, warn};

use super::environ::{self, Constants, CONSTANTS};
use super::input::Input;
use super::response::{send_result, Response, StartResponse, Write};
use super::{Request, RequestBody};
use crate::worker;

/// The app's WSGI callable, set once the app is imported.
pub static APP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Builds the `_mercy` module.
pub fn native_module(py: Python<'_>) -> PyResult<Bound<'_, PyModule>> {
    let module = PyModule::new(py, "_mercy")?;
    module.add_function(wrap_pyfunction!(worker_id, &module)?)?;
    module.add_function(wrap_pyfunction!(generation, &module)?)?;
    module.add_function(wrap_pyfunction!(master_pid, &module)?)?;
    module.add_function(wrap_pyfunction!(is_shutting_down, &module)?)?;
    module.add_function(wrap_pyfunction!(request_reload, &module)?)?;
    module.add_function(wrap_pyfunction!(serve, &module)?)?;
    module.add_function(wrap_pyfunction!(log_exception, &module)?)?;
    module.add_function(wrap_pyfunction!(log_output, &module)?)?;
    module.add_function(wrap_pyfunction!(mode, &module)?)?;
    module.add_function(wrap_pyfunction!(core_request, &module)?)?;
    module.add_function(wrap_pyfunction!(numproc, &module)?)?;
    module.add_function(wrap_pyfunction!(options, &module)?)?;
    module.add_function(wrap_pyfunction!(version, &module)?)?;
    module.add_function(wrap_pyfunction!(hostname, &module)?)?;
    module.add_function(wrap_pyfunction!(set_process_name, &module)?)?;
    module.add_function(wrap_pyfunction!(set_step, &module)?)?;
    module.add_function(wrap_pyfunction!(is_fast_retirement, &module)?)?;
    module.add_function(wrap_pyfunction!(hub_fd, &module)?)?;
    module.add_function(wrap_pyfunction!(hub_take_ready, &module)?)?;
    module.add_function(wrap_pyfunction!(requests_waiting, &module)?)?;
    module.add_function(wrap_pyfunction!(handle_next, &module)?)?;
    module.add_class::<Errors>()?;
    module.add_class::<StartResponse>()?;
    module.add_class::<Write>()?;
    module.add_class::<Input>()?;
    Ok(module)
}

/// Stores the app and the environ's per-worker constants.
pub fn install_app(
    py: Python<'_>,
    app: Py<PyAny>,
    file_wrapper: Py<PyAny>,
    multithread: bool,
    processes: u32,
) -> PyResult<()> {
    let constants = Constants {
        version: PyTuple::new(py, [1, 0])?.unbind(),
        errors: Bound::new(py, Errors)?.into_any().unbind(),
        file_wrapper,
        multithread,
        multiprocess: processes > 1,
    };
    let _ = CONSTANTS.set(py, constants);
    let _ = APP.set(py, app);
    Ok(())
}

#[pyfunction]
fn worker_id() -> u32 {
    worker::context().spec.id
}

#[pyfunction]
fn generation() -> u64 {
    worker::context().spec.generation
}

#[pyfunction]
fn master_pid() -> u32 {
    worker::context().spec.master_pid
}

#[pyfunction]
fn is_shutting_down() -> bool {
    worker::context().is_retiring()
}

#[pyfunction]
fn request_reload() {
    worker::context().request_reload();
}

/// The number of worker processes.
#[pyfunction]
fn numproc() -> u32 {
    worker::context().config.processes
}

/// The options mercy was started with, as uWSGI's `uwsgi.opt` has them:
/// values as bytes, flags as True, repeated options as lists.
#[pyfunction]
fn options(py: Python<'_>) -> PyResult<Bound<'_, pyo3::types::PyDict>> {
    let options = pyo3::types::PyDict::new(py);
    for (name, value) in crate::config::seen_options().iter().cloned() {
        let value = match value {
            Some(text) => pyo3::types::PyBytes::new(py, text.as_bytes()).into_any(),
            None => pyo3::types::PyBool::new(py, true).to_owned().into_any(),
        };
        match options.get_item(&name)? {
            None => options.set_item(name, value)?,
            Some(existing) => match existing.cast::<pyo3::types::PyList>() {
                Ok(list) => list.append(value)?,
                Err(_) => {
                    options.set_item(name, pyo3::types::PyList::new(py, [existing, value])?)?
                }
            },
        }
    }
    Ok(options)
}

#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

#[pyfunction]
fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Names the process as `ps` and `top` show it (up to 15 bytes). The name
/// is written to /proc/self/comm, the process's main thread: prctl would
/// name only the calling thread, and the app may run on another one.
#[pyfunction]
fn set_process_name(name: &str) -> PyResult<()> {
    let name: Vec<u8> = name.as_bytes().iter().copied().take(15).collect();
    if name.contains(&0) {
        return Err(pyo3::exceptions::PyValueError::new_err(
            "a process name cannot contain NUL",
        ));
    }
    std::fs::write("/proc/self/comm", name)
        .map_err(|error| pyo3::exceptions::PyOSError::new_err(error.to_string()))
}

/// (requests started, in a request now) of request slot `core`.
#[pyfunction]
fn core_request(core: usize) -> Option<(u64, bool)> {
    worker::context().core_state(core)
}

/// `"threads"` or `"gevent"`.
#[pyfunction]
fn mode() -> &'static str {
    if super::hub().is_some() {
        "gevent"
    } else {
        "threads"
    }
}

/// Records the retirement step the worker is in, for the diagnostic.
#[pyfunction]
fn set_step(step: u8) {
    worker::context().set_step(worker::Step::from_u8(step));
}

#[pyfunction]
fn is_fast_retirement() -> bool {
    worker::context().retire_mode() == Some(crate::control::RetireMode::Fast)
}

/// The eventfd the gevent hub watches.
#[pyfunction]
fn hub_fd() -> PyResult<i32> {
    super::hub()
        .map(super::Hub::fd)
        .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("not a gevent worker"))
}

/// Consumes the hub's wake-up; returns the wait ids whose answers are in.
#[pyfunction]
fn hub_take_ready() -> Vec<u64> {
    super::hub().map(super::Hub::take_ready).unwrap_or_default()
}

/// How many requests wait for a greenlet.
#[pyfunction]
fn requests_waiting() -> usize {
    worker::context().jobs.len()
}

/// Serves one queued request in the calling greenlet (request slot
/// `core`); False if none waits.
#[pyfunction]
fn handle_next(py: Python<'_>, core: usize) -> bool {
    let context = worker::context();
    let Ok(request) = context.jobs.try_recv() else {
        return false;
    };
    context.job_taken.notify_one();
    let app = APP
        .get(py)
        .expect("the app is installed before requests are served")
        .clone_ref(py);
    handle(py, app.bind(py), request, core);
    true
}

/// Logs the exception being handled, with its traceback.
#[pyfunction]
fn log_exception(py: Python<'_>, message: &str) {
    let traceback = py
        .import("traceback")
        .and_then(|module| module.call_method0("format_exc"))
        .and_then(|text| text.extract::<String>())
        .unwrap_or_default();
    let context = worker::context();
    error!(
        event = "app_error",
        worker.id = context.spec.id,
        worker.pid = std::process::id(),
        generation = context.spec.generation,
        traceback = %traceback,
        "{message}{}",
        crate::logging::inline(&traceback)
    );
}

/// The loop of request thread `core`. Returns when the worker stops taking
/// requests (the queue closes during retirement).
#[pyfunction]
fn serve(py: Python<'_>, core: usize) -> PyResult<()> {
    let jobs = worker::context().jobs.clone();
    let app = APP
        .get(py)
        .expect("the app is installed before request threads start")
        .clone_ref(py);
    let context = worker::context();
    loop {
        // A request already queued is taken without letting go of the GIL:
        // releasing it only to take it back hands it to another request
        // thread and back, two thread switches for nothing.
        let request = match jobs.try_recv() {
            Ok(request) => request,
            Err(flume::TryRecvError::Empty) => match py.detach(|| jobs.recv()) {
                Ok(request) => request,
                Err(flume::RecvError::Disconnected) => break,
            },
            Err(flume::TryRecvError::Disconnected) => break,
        };
        context.job_taken.notify_one();
        handle(py, app.bind(py), request, core);
    }
    Ok(())
}

fn handle(py: Python<'_>, app: &Bound<'_, PyAny>, request: Request, core: usize) {
    let context = worker::context();
    if request.events.is_closed() {
        // The connection gave up while the request waited for a thread
        // (the client left, or --harakiri answered it): never run it.
        return;
    }
    request
        .slot
        .store(core, std::sync::atomic::Ordering::Relaxed);
    context.core_busy(core, true);
    let response = Response::new(request.events.clone(), &*request.method == "HEAD");
    let outcome = call_app(py, app, &request, &response);
    if let Err(error) = outcome {
        context.record_exception();
        log_app_error(py, &error, &request);
        response.fail(py);
    }
    response.finish(py);
    context.core_busy(core, false);
    if context.take_harakiri(core) {
        clear_pending_harakiri(py);
    }
}

/// A harakiri aimed at this thread's request may still be pending if the
/// request ended just before it was raised: it must not hit the next one.
fn clear_pending_harakiri(py: Python<'_>) {
    let Ok(ident) = py
        .import("threading")
        .and_then(|threading| threading.call_method0("get_ident"))
        .and_then(|ident| ident.extract::<std::os::raw::c_ulong>())
        .map(|ident| ident as std::os::raw::c_long)
    else {
        return;
    };
    // SAFETY: called with the GIL held; a NULL exception clears any
    // pending asynchronous exception of the thread with this id.
    unsafe {
        pyo3::ffi::PyThreadState_SetAsyncExc(ident, std::ptr::null_mut());
    }
}

fn call_app(
    py: Python<'_>,
    app: &Bound<'_, PyAny>,
    request: &Request,
    response: &std::sync::Arc<Response>,
) -> PyResult<()> {
    let input = match &request.body {
        RequestBody::Empty => Input::empty(),
        RequestBody::Buffered(body) => Input::buffered(body.clone()),
        RequestBody::Partial(first) => Input::partial(first.clone(), request.events.clone()),
        RequestBody::Streamed => Input::streamed(request.events.clone()),
    };
    let input = Bound::new(py, input)?.into_any();
    let environ = environ::build(py, request, input)?;
    let start_response = Bound::new(
        py,
        StartResponse {
            response: response.clone(),
        },
    )?;
    let result = app.call1((environ, start_response))?;
    let sent = send_result(py, response, &result);
    // PEP 3333: close() is called exactly once, whatever happened above.
    let closed = close_iterable(&result);
    sent.and(closed)
}

fn close_iterable(result: &Bound<'_, PyAny>) -> PyResult<()> {
    // A plain list or tuple has no close(): asking would raise and swallow
    // an AttributeError on every request.
    if result.is_exact_instance_of::<pyo3::types::PyList>()
        || result.is_exact_instance_of::<PyTuple>()
    {
        return Ok(());
    }
    let py = result.py();
    if result.hasattr(pyo3::intern!(py, "close"))? {
        result.call_method0(pyo3::intern!(py, "close"))?;
    }
    Ok(())
}

fn log_app_error(py: Python<'_>, error: &PyErr, request: &Request) {
    let traceback = py
        .import("traceback")
        .and_then(|module| {
            module.call_method1(
                "format_exception",
                (error.get_type(py), error.value(py), error.traceback(py)),
            )
        })
        .and_then(|lines| lines.extract::<Vec<String>>())
        .map(|lines| lines.concat())
        .unwrap_or_else(|_| error.to_string());
    let context = worker::context();
    let path = String::from_utf8_lossy(&request.path);
    error!(
        event = "app_error",
        worker.id = context.spec.id,
        worker.pid = std::process::id(),
        generation = context.spec.generation,
        method = %request.method,
        path = %path,
        traceback = %traceback,
        "the app raised an exception on {} {path}{}",
        request.method,
        crate::logging::inline(&traceback)
    );
}

/// `wsgi.errors`: each write becomes one `app_log` event in mercy's log
/// (a JSON line under `--log-json`), with the worker's fields. The text
/// loses its final line break; a write of only line breaks logs nothing.
#[pyclass(frozen, module = "mercy")]
pub struct Errors;

#[pymethods]
impl Errors {
    fn write(&self, text: &str) -> usize {
        log_app_text(text);
        text.len()
    }

    fn writelines(&self, lines: &Bound<'_, PyAny>) -> PyResult<()> {
        for line in lines.try_iter()? {
            self.write(line?.extract::<&str>()?);
        }
        Ok(())
    }

    /// Nothing is held back: every write is logged at once.
    fn flush(&self) {}
}

fn log_app_text(text: &str) {
    log_app_line(text, "wsgi.errors");
}

/// One line the app printed to `sys.stdout` or `sys.stderr`, which are
/// line writers under `--log-json` (python/mercy/_worker.py).
#[pyfunction]
fn log_output(text: &str, stream: &str) {
    log_app_line(text, stream);
}

/// An `app_log` event; `stream` says where the app wrote the text.
fn log_app_line(text: &str, stream: &str) {
    let text = text.trim_end_matches(['\r', '\n']);
    if text.is_empty() {
        return;
    }
    let context = worker::context();
    let (id, pid, generation) = (context.spec.id, std::process::id(), context.spec.generation);
    // What the app prints to standard output is its ordinary output; what
    // it writes to standard error or wsgi.errors is meant as a warning.
    if stream == "stdout" {
        info!(
            event = "app_log",
            worker.id = id,
            worker.pid = pid,
            generation,
            stream,
            "{text}"
        );
    } else {
        warn!(
            event = "app_log",
            worker.id = id,
            worker.pid = pid,
            generation,
            stream,
            "{text}"
        );
    }
}
