//! A worker process: embeds CPython, imports the app, serves requests on
//! the inherited sockets, and retires in the order of DESIGN.md section 3
//! when the master says so (or when the master is gone).

mod connection;
mod context;
mod harakiri;
mod interpreter;
mod server;
mod transport;

use std::io::{BufRead, BufReader};
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::sync::Arc;

use pyo3::prelude::*;
use tracing::{debug, error, info};

use crate::config::{Concurrency, Config};
use crate::control::{RetireMode, ToMaster, ToWorker, WorkerSpec};
use crate::wsgi;
pub use context::{context, Step, WorkerContext};
use interpreter::PythonSide;
use server::Server;

/// Exit status of a worker whose app could not be loaded.
const EXIT_LOAD_FAILED: u8 = 3;
/// Exit status of a worker that outlived its master and its mercy.
const EXIT_MERCY_EXPIRED: libc::c_int = 1;
/// How long an orphaned worker past its mercy waits for its diagnostic to
/// be written before it exits anyway.
const ORPHAN_DIAGNOSTIC_GRACE: std::time::Duration = std::time::Duration::from_secs(3);

/// Runs this process as worker `spec.id`.
pub fn run(config: Config, spec: WorkerSpec) -> ExitCode {
    ignore_terminal_signals();
    spec.close_inherited_on_exec();
    // SAFETY: the master placed the worker's end of the control channel on
    // this descriptor before exec; nothing else owns it.
    let control = unsafe { UnixStream::from_raw_fd(spec.control_fd()) };
    let reader = control
        .try_clone()
        .expect("a socket descriptor can be duplicated");
    let concurrency = config.concurrency;
    match concurrency {
        Concurrency::Threads(_) => wsgi::set_mode(wsgi::Mode::Threads),
        Concurrency::Gevent { .. } => match wsgi::Hub::new() {
            Ok(hub) => wsgi::set_mode(wsgi::Mode::Gevent(hub)),
            Err(error) => {
                error!(%error, "cannot create the eventfd for the gevent hub");
                return ExitCode::from(EXIT_LOAD_FAILED);
            }
        },
    }
    let (jobs_tx, jobs_rx) = flume::unbounded();
    let context = WorkerContext::install(spec, config, jobs_rx, control);

    let side = match start_app(context) {
        Ok(side) => side,
        Err(load) => return load_failed(context, load),
    };

    let request_threads = match concurrency {
        Concurrency::Threads(threads) => match start_request_threads(&side, threads) {
            Ok(threads) => Some(threads),
            Err(reason) => return load_failed(context, reason.into()),
        },
        Concurrency::Gevent { .. } => None,
    };
    let mut server = match Server::start(context, jobs_tx) {
        Ok(server) => server,
        Err(error) => {
            let reason = format!("cannot serve on the inherited sockets: {error}");
            return load_failed(context, reason.into());
        }
    };
    context.send_master(&ToMaster::Ready);
    debug!(worker.id = context.spec.id, "worker serving");
    server.runtime.spawn(report_stats(context));

    std::thread::Builder::new()
        .name("mercy-control".into())
        .spawn(move || follow_master(reader))
        .expect("the control thread starts");

    match (concurrency, request_threads) {
        (
            Concurrency::Gevent {
                greenlets,
                wait_for_hub,
                ..
            },
            _,
        ) => run_gevent(context, &side, &mut server, greenlets, wait_for_hub),
        (Concurrency::Threads(_), Some(threads)) => {
            let mut retire = context.watch_retire();
            let mode = server
                .runtime
                .block_on(async {
                    *retire
                        .wait_for(Option::is_some)
                        .await
                        .expect("the sender lives in the context")
                })
                .expect("wait_for returns a set mode");
            retire_worker(context, &side, &mut server, threads, mode)
        }
        (Concurrency::Threads(_), None) => unreachable!("threads mode starts request threads"),
    }
}

fn load_failed(context: &WorkerContext, load: interpreter::LoadError) -> ExitCode {
    error!(
        event = "app_load_failed",
        worker.id = context.spec.id,
        worker.pid = std::process::id(),
        generation = context.spec.generation,
        error = %load.reason,
        traceback = %load.traceback,
        "the app could not be loaded: {}{}",
        load.reason,
        crate::logging::inline(&load.traceback)
    );
    context.send_master(&ToMaster::LoadFailed { error: load.reason });
    ExitCode::from(EXIT_LOAD_FAILED)
}

/// gevent mode: the main thread runs the hub until retirement is done.
fn run_gevent(
    context: &Arc<WorkerContext>,
    side: &PythonSide,
    server: &mut Server,
    greenlets: u32,
    wait_for_hub: bool,
) -> ExitCode {
    let hub = wsgi::hub().expect("gevent mode has a hub");
    let stopped_accepting = hub.next_wait_id();
    let drained = hub.next_wait_id();
    let accept_loops = server.take_accept_loops();
    let watched = context.clone();
    server.runtime.spawn(async move {
        let mut retire = watched.watch_retire();
        let _ = retire.wait_for(Option::is_some).await;
        for handle in accept_loops {
            let _ = handle.await;
        }
        hub.complete(stopped_accepting);
        let mut connections = watched.watch_connections();
        let _ = connections.wait_for(|count| *count == 0).await;
        hub.complete(drained);
    });

    let engine = side
        .gevent
        .as_ref()
        .expect("gevent mode registers its engine");
    let result = Python::attach(|py| {
        engine
            .bind(py)
            .call_method1("run", (greenlets, stopped_accepting, drained, wait_for_hub))
            .map(drop)
    });
    if let Err(error) = result {
        error!(%error, "the gevent engine failed");
    }
    context.set_step(Step::Exit);
    exit_now()
}

/// Sends the worker's counters to the master about once a second while
/// they change.
async fn report_stats(context: &'static Arc<WorkerContext>) {
    let mut last = None;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        tick.tick().await;
        let stats = context.stats();
        if last.as_ref() != Some(&stats) {
            context.send_master(&ToMaster::Stats(stats.clone()));
            last = Some(stats);
        }
    }
}

/// Workers obey the master only: a Ctrl-C or terminal hang-up reaches the
/// whole process group, and only the master acts on it.
///
/// The signals get a handler that does nothing rather than SIG_IGN: an
/// ignored signal stays ignored across exec, so every program the app
/// started would ignore SIGTERM and SIGINT too, while a handler is reset
/// to the default in the new program. A blocked signal would not do
/// either: the blocked mask also survives exec. SIGPIPE stays ignored, as
/// in any Rust program; Python's subprocess restores it for its children.
fn ignore_terminal_signals() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let ignore = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGTSTP,
        Signal::SIGTTIN,
        Signal::SIGTTOU,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
    ] {
        // SAFETY: the handler does nothing at all, so it is trivially
        // async-signal-safe; this runs before any thread is started.
        let _ = unsafe { sigaction(sig, &ignore) };
    }
    // SAFETY: installing SIG_IGN runs no handler code.
    let _ = unsafe { nix::sys::signal::signal(Signal::SIGPIPE, SigHandler::SigIgn) };
}

/// The handler of the signals a worker ignores.
extern "C" fn ignore_signal(_: libc::c_int) {}

/// Applies `--chdir` and `--env`, starts Python and imports the app.
fn start_app(context: &WorkerContext) -> Result<PythonSide, interpreter::LoadError> {
    let config = &context.config;
    let fail = |reason: String| interpreter::LoadError {
        reason,
        traceback: String::new(),
    };
    for (key, value) in &config.env {
        // SAFETY: no other thread runs yet, so nothing reads the
        // environment concurrently.
        unsafe { std::env::set_var(key, value) };
    }
    if let Some(dir) = &config.chdir {
        std::env::set_current_dir(dir)
            .map_err(|e| fail(format!("cannot change to {} (--chdir): {e}", dir.display())))?;
    }
    interpreter::initialize().map_err(|e| fail(e.to_string()))?;

    Python::attach(|py| {
        let gevent = match config.concurrency {
            Concurrency::Gevent { monkey_patch, .. } => Some(monkey_patch),
            Concurrency::Threads(_) => None,
        };
        interpreter::prepare_paths(py, config)
            .map_err(|error| fail(format!("cannot prepare sys.path: {error}")))?;
        if gevent == Some(true) {
            interpreter::monkey_patch(py)
                .map_err(|error| fail(format!("cannot monkey-patch with gevent: {error}")))?;
        }
        let mut side = interpreter::register_modules(py)
            .map_err(|error| fail(format!("cannot register mercy's Python modules: {error}")))?;
        if gevent.is_some() {
            interpreter::register_gevent(py, &mut side)
                .map_err(|error| fail(format!("cannot start gevent mode: {error}")))?;
        }
        if config.log_json {
            interpreter::call_worker(py, &side, "log_printed_lines")
                .map_err(|error| fail(format!("cannot log what the app prints: {error}")))?;
        }
        let app = interpreter::load_app(py, &side, config)?;
        let file_wrapper = side
            .worker
            .bind(py)
            .getattr("FileWrapper")
            .map_err(|error| fail(error.to_string()))?
            .unbind();
        let multithread = config.concurrency != Concurrency::Threads(1);
        wsgi::install_app(py, app, file_wrapper, multithread, config.processes)
            .map_err(|error| fail(error.to_string()))?;
        let _ = context.python.set(side.worker.clone_ref(py));
        Ok(side)
    })
}

fn start_request_threads(side: &PythonSide, threads: u32) -> Result<Py<PyAny>, String> {
    Python::attach(|py| {
        interpreter::call_worker1(py, side, "start_request_threads", (threads,))
            .map(Bound::unbind)
            .map_err(|error| format!("cannot start the request threads: {error}"))
    })
}

/// Reads the master's messages. A closed channel means the master is gone:
/// the worker retires on its own.
fn follow_master(reader: UnixStream) {
    let context = context();
    for line in BufReader::new(reader).lines() {
        let Ok(line) = line else { break };
        match serde_json::from_str::<ToWorker>(&line) {
            Ok(ToWorker::Retire { mode }) => context.retire(mode),
            Ok(ToWorker::ReopenLog) => {
                if let Some(path) = &context.config.logto {
                    if let Err(error) = crate::logging::redirect_to_file(path) {
                        error!(%error, "cannot reopen the log file {}", path.display());
                    }
                }
            }
            Ok(ToWorker::Expired { option, grace_s }) => {
                write_diagnostic(context, &option, grace_s);
                context.send_master(&ToMaster::Diagnosed);
            }
            Err(error) => error!(%error, "bad message from the master: {line:?}"),
        }
    }
    if !context.is_retiring() {
        info!(worker.id = context.spec.id, "the master is gone: retiring");
    }
    context.retire(RetireMode::Shutdown);
    enforce_own_mercy(context);
}

/// With the master gone, nobody kills a worker whose retirement never
/// ends: it keeps `--worker-reload-mercy` itself, counted from the moment
/// the master went away. At the deadline it writes the diagnostic, as it
/// would for the master, and exits.
fn enforce_own_mercy(context: &'static Arc<WorkerContext>) {
    std::thread::sleep(context.config.reload_mercy);
    // Reading the Python stacks needs the GIL: if the app never lets go of
    // it, the worker still leaves once this grace has passed too.
    std::thread::Builder::new()
        .name("mercy-last-grace".into())
        .spawn(|| {
            std::thread::sleep(ORPHAN_DIAGNOSTIC_GRACE);
            exit_orphaned();
        })
        .expect("the grace thread starts");
    write_diagnostic(
        context,
        "--worker-reload-mercy",
        context.config.reload_mercy.as_secs_f64(),
    );
    exit_orphaned()
}

/// Ends a worker whose master is gone and whose mercy ran out.
fn exit_orphaned() -> ! {
    error!(
        worker.id = context().spec.id,
        worker.pid = std::process::id(),
        "the master is gone and --worker-reload-mercy ran out: exiting"
    );
    // SAFETY: _exit ends the process at once; nothing after it runs and no
    // Rust destructor is relied upon.
    unsafe { libc::_exit(EXIT_MERCY_EXPIRED) }
}

/// The grace given by `option` (`grace_s` seconds) passed: say which step
/// the worker is in, what is unfinished, and where every thread is.
fn write_diagnostic(context: &WorkerContext, option: &str, grace_s: f64) {
    let step = context.step();
    let requests = context.describe_in_flight();
    let threads = Python::attach(|py| {
        context
            .python
            .get()
            .map(|module| module.bind(py).call_method0("thread_stacks"))
            .and_then(Result::ok)
            .and_then(|text| text.extract::<String>().ok())
            .unwrap_or_else(|| "(the thread stacks could not be read)".to_owned())
    });
    error!(
        event = "mercy_expired",
        worker.id = context.spec.id,
        worker.pid = std::process::id(),
        generation = context.spec.generation,
        step = step.describe(),
        requests = %requests,
        threads = %threads,
        "worker {} did not finish retiring within {option} ({grace_s}s); \
         it is in step {}{}{}",
        context.spec.id,
        step.describe(),
        crate::logging::inline(&format!("unfinished requests:\n{requests}")),
        crate::logging::inline(&format!("live threads:\n{threads}")),
    );
}

/// Retirement, in order (DESIGN.md section 3). Every step may be cut short
/// by the master's kill when `--worker-reload-mercy` runs out.
fn retire_worker(
    context: &Arc<WorkerContext>,
    side: &PythonSide,
    server: &mut Server,
    request_threads: Py<PyAny>,
    mode: RetireMode,
) -> ExitCode {
    debug!(worker.id = context.spec.id, ?mode, "retiring");

    context.set_step(Step::StopAccepting);
    server.wait_accept_loops_done();

    context.set_step(Step::FinishRequests);
    server.wait_connections_closed(context);
    // Every connection is closed, so every sender of the request queue is
    // gone and the request threads leave their loops.
    let steps = Python::attach(|py| -> PyResult<()> {
        interpreter::call_worker1(py, side, "wait_request_threads", (request_threads,))?;
        context.set_step(Step::TrackedWork);
        interpreter::call_worker(py, side, "wait_tracked_work")?;
        context.set_step(Step::ShutdownHooks);
        interpreter::call_worker(py, side, "run_shutdown_hooks")?;
        if context.retire_mode() != Some(RetireMode::Fast) {
            context.set_step(Step::NonDaemonThreads);
            interpreter::call_worker(py, side, "wait_non_daemon_threads")?;
        }
        let left = interpreter::call_worker(py, side, "daemon_threads")?;
        debug!(threads = %left, "daemon threads left behind");
        Ok(())
    });
    if let Err(error) = steps {
        error!(%error, "a retirement step failed");
    }

    context.set_step(Step::Exit);
    exit_now()
}

/// Leaves without Py_Finalize: Rust threads may still run, and everything
/// Python had to do at exit was done above.
fn exit_now() -> ExitCode {
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    // SAFETY: _exit ends the process at once; nothing after it runs and no
    // Rust destructor is relied upon.
    unsafe { libc::_exit(0) }
}
