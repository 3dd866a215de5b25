//! The embedded CPython: initialised once per worker, without its own signal
//! handlers, with the home of the interpreter mercy was built against.

use std::ffi::{CStr, CString};
use std::mem::MaybeUninit;

use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::types::{PyList, PyModule};

use crate::config::{AppSource, Config, EMBEDDED_PYTHON_EXECUTABLE, EMBEDDED_PYTHON_HOME};
use crate::wsgi;

const MERCY_MODULE: &CStr = embedded(concat!(
    include_str!("../../python/mercy/__init__.py"),
    "\0"
));
const PREPARE_MODULE: &CStr = embedded(concat!(
    include_str!("../../python/mercy/_prepare.py"),
    "\0"
));
const UWSGI_MODULE: &CStr = embedded(concat!(include_str!("../../python/compat/uwsgi.py"), "\0"));
const UWSGIDECORATORS_MODULE: &CStr = embedded(concat!(
    include_str!("../../python/compat/uwsgidecorators.py"),
    "\0"
));
const GEVENT_MODULE: &CStr = embedded(concat!(include_str!("../../python/mercy/_gevent.py"), "\0"));
const WORKER_MODULE: &CStr = embedded(concat!(include_str!("../../python/mercy/_worker.py"), "\0"));

/// Makes a `&CStr` of embedded Python source at compile time.
const fn embedded(source: &'static str) -> &'static CStr {
    match CStr::from_bytes_with_nul(source.as_bytes()) {
        Ok(text) => text,
        Err(_) => panic!("embedded Python source has a NUL byte inside"),
    }
}

/// The interpreter could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the embedded Python ({home}): {message}")]
pub struct InitError {
    home: &'static str,
    message: String,
}

/// Where CPython takes its large blocks (its object arenas, and the frame
/// stack chunk each new thread or greenlet starts with) from: mercy's own
/// allocator instead of a fresh mmap each time. In gevent mode every request
/// starts a greenlet, and an mmap and munmap per greenlet (with the TLB
/// flush the munmap sends to every core) cost more than the request.
fn use_allocator_for_arenas() {
    extern "C" fn alloc(_ctx: *mut std::ffi::c_void, size: usize) -> *mut std::ffi::c_void {
        match std::alloc::Layout::from_size_align(size.max(1), ARENA_ALIGN) {
            // SAFETY: the layout has a non-zero size.
            Ok(layout) => unsafe { std::alloc::alloc(layout).cast() },
            Err(_) => std::ptr::null_mut(),
        }
    }
    extern "C" fn free(_ctx: *mut std::ffi::c_void, block: *mut std::ffi::c_void, size: usize) {
        if block.is_null() {
            return;
        }
        let layout = std::alloc::Layout::from_size_align(size.max(1), ARENA_ALIGN)
            .expect("the layout was valid when the block was allocated");
        // SAFETY: CPython frees a block it got from `alloc` above, with the
        // size it asked for, exactly once.
        unsafe { std::alloc::dealloc(block.cast(), layout) }
    }
    let mut allocator = ffi::PyObjectArenaAllocator {
        ctx: std::ptr::null_mut(),
        alloc: Some(alloc),
        free: Some(free),
    };
    // SAFETY: called before Py_InitializeFromConfig, so no arena or frame
    // chunk exists yet that the previous allocator would have to free;
    // CPython copies the struct.
    unsafe { ffi::PyObject_SetArenaAllocator(&mut allocator) };
}

/// Alignment of the blocks handed to CPython's arena allocator: a page, as
/// mmap gives.
const ARENA_ALIGN: usize = 4096;

/// Starts CPython and leaves the GIL released. Python installs no signal
/// handlers: the worker's signals are Rust's.
pub fn initialize() -> Result<(), InitError> {
    use_allocator_for_arenas();
    let fail = |message: String| InitError {
        home: EMBEDDED_PYTHON_HOME,
        message,
    };
    let home = CString::new(EMBEDDED_PYTHON_HOME).map_err(|e| fail(e.to_string()))?;
    // SAFETY: the PyConfig API is used as documented: initialised by
    // PyConfig_InitPythonConfig before any field is read or written, strings
    // set through PyConfig_SetBytesString, cleared after use. Python is not
    // running yet, so nothing else touches it. PyEval_SaveThread releases
    // the GIL the initialising thread holds afterwards.
    unsafe {
        let mut config = MaybeUninit::<ffi::PyConfig>::uninit();
        ffi::PyConfig_InitPythonConfig(config.as_mut_ptr());
        let mut config = config.assume_init();
        config.install_signal_handlers = 0;
        // `site` runs later, once the virtualenv is known (see
        // python/mercy/_prepare.py): run now, it would put the base
        // interpreter's site-packages first.
        config.site_import = 0;
        config.parse_argv = 0;
        config.buffered_stdio = 0;
        let home_field = &raw mut config.home;
        let status = ffi::PyConfig_SetBytesString(&mut config, home_field, home.as_ptr());
        if ffi::PyStatus_Exception(status) != 0 {
            ffi::PyConfig_Clear(&mut config);
            return Err(fail(status_message(&status)));
        }
        let status = ffi::Py_InitializeFromConfig(&config);
        ffi::PyConfig_Clear(&mut config);
        if ffi::PyStatus_Exception(status) != 0 {
            return Err(fail(status_message(&status)));
        }
        ffi::PyEval_SaveThread();
    }
    Ok(())
}

fn status_message(status: &ffi::PyStatus) -> String {
    if status.err_msg.is_null() {
        return "unknown error".to_owned();
    }
    // SAFETY: a non-null err_msg of a PyStatus is a static NUL-terminated
    // C string.
    unsafe { CStr::from_ptr(status.err_msg) }
        .to_string_lossy()
        .into_owned()
}

/// The app failed to load: a one-line reason and the full traceback.
#[derive(Debug)]
pub struct LoadError {
    pub reason: String,
    pub traceback: String,
}

impl From<String> for LoadError {
    fn from(reason: String) -> Self {
        Self {
            reason,
            traceback: String::new(),
        }
    }
}

/// mercy's own Python modules, registered in `sys.modules` before the app is
/// imported so that they take precedence over same-named packages.
pub struct PythonSide {
    pub worker: Py<PyModule>,
    /// The gevent engine, in gevent mode.
    pub gevent: Option<Py<PyModule>>,
}

/// Registers `_mercy`, `mercy`, mercy's worker module, and the `uwsgi` and
/// `uwsgidecorators` compatibility modules.
pub fn register_modules(py: Python<'_>) -> PyResult<PythonSide> {
    let modules = py.import("sys")?.getattr("modules")?;
    let native = wsgi::native_module(py)?;
    modules.set_item("_mercy", &native)?;
    let mercy = PyModule::from_code(py, MERCY_MODULE, c"mercy/__init__.py", c"mercy")?;
    modules.set_item("mercy", &mercy)?;
    let worker = PyModule::from_code(py, WORKER_MODULE, c"mercy/_worker.py", c"mercy._worker")?;
    modules.set_item("mercy._worker", &worker)?;
    mercy.setattr("_worker", &worker)?;
    let uwsgi = PyModule::from_code(py, UWSGI_MODULE, c"uwsgi.py", c"uwsgi")?;
    modules.set_item("uwsgi", &uwsgi)?;
    let decorators = PyModule::from_code(
        py,
        UWSGIDECORATORS_MODULE,
        c"uwsgidecorators.py",
        c"uwsgidecorators",
    )?;
    modules.set_item("uwsgidecorators", &decorators)?;
    Ok(PythonSide {
        worker: worker.unbind(),
        gevent: None,
    })
}

/// Monkey-patches the standard library for gevent. Runs before any of
/// mercy's Python code or the app is imported.
pub fn monkey_patch(py: Python<'_>) -> PyResult<()> {
    py.import("gevent.monkey")?.call_method0("patch_all")?;
    Ok(())
}

/// Registers mercy's gevent engine and the function greenlets wait with.
pub fn register_gevent(py: Python<'_>, side: &mut PythonSide) -> PyResult<()> {
    let engine = PyModule::from_code(py, GEVENT_MODULE, c"mercy/_gevent.py", c"mercy._gevent")?;
    py.import("sys")?
        .getattr("modules")?
        .set_item("mercy._gevent", &engine)?;
    wsgi::set_gevent_wait(py, engine.getattr("wait")?.unbind());
    side.gevent = Some(engine.unbind());
    Ok(())
}

/// Makes the virtualenv and `--pythonpath` folders importable. Runs before
/// anything else is imported, gevent's monkey-patching included.
pub fn prepare_paths(py: Python<'_>, config: &Config) -> PyResult<()> {
    let prepare = PyModule::from_code(py, PREPARE_MODULE, c"mercy/_prepare.py", c"mercy._prepare")?;
    let virtualenv = config
        .virtualenv
        .as_ref()
        .map(|path| path.to_string_lossy().into_owned());
    let pythonpath: Vec<String> = config
        .pythonpath
        .iter()
        .map(|path| path.to_string_lossy().into_owned())
        .collect();
    prepare.call_method1(
        "prepare",
        (
            virtualenv,
            PyList::new(py, pythonpath)?,
            EMBEDDED_PYTHON_EXECUTABLE,
        ),
    )?;
    Ok(())
}

/// Imports the app, returning its WSGI callable.
pub fn load_app(
    py: Python<'_>,
    side: &PythonSide,
    config: &Config,
) -> Result<Py<PyAny>, LoadError> {
    let worker = side.worker.bind(py);
    let result = (|| -> PyResult<Py<PyAny>> {
        let app = match &config.app {
            AppSource::File(path) => worker.call_method1(
                "load_file",
                (path.to_string_lossy().into_owned(), &config.callable),
            )?,
            AppSource::Module(spec) => {
                worker.call_method1("load_module", (spec, &config.callable))?
            }
        };
        worker.call_method0("after_app_loaded")?;
        Ok(app.unbind())
    })();
    result.map_err(|error| describe(py, worker, &error))
}

/// Turns a Python exception into a one-line reason and a traceback.
pub fn describe(py: Python<'_>, worker: &Bound<'_, PyModule>, error: &PyErr) -> LoadError {
    let value = error.value(py);
    // An exception that reached Rust without passing an `except` clause
    // (raised by an app factory or a post-fork hook) has its traceback in
    // the error only, not in `__traceback__` (before Python 3.12).
    if let Some(traceback) = error.traceback(py) {
        if value
            .getattr("__traceback__")
            .is_ok_and(|current| current.is_none())
        {
            let _ = value.setattr("__traceback__", traceback);
        }
    }
    let reason = worker
        .call_method1("describe_error", (value,))
        .and_then(|text| text.extract::<String>())
        .unwrap_or_else(|_| error.to_string());
    let traceback = worker
        .call_method1("format_error", (value,))
        .and_then(|text| text.extract::<String>())
        .unwrap_or_default();
    LoadError { reason, traceback }
}

/// Calls a function of mercy's worker module with no arguments.
pub fn call_worker<'py>(
    py: Python<'py>,
    side: &PythonSide,
    name: &str,
) -> PyResult<Bound<'py, PyAny>> {
    side.worker.bind(py).call_method0(name)
}

/// Keyword-less call with positional arguments.
pub fn call_worker1<'py>(
    py: Python<'py>,
    side: &PythonSide,
    name: &str,
    args: impl pyo3::call::PyCallArgs<'py>,
) -> PyResult<Bound<'py, PyAny>> {
    side.worker.bind(py).call_method1(name, args)
}
