//! `--harakiri`: a per-request deadline. The connection answers 504 (or is
//! cut) at the deadline; this module then logs the request with the Python
//! stack of the thread or greenlet running it, stops that thread or
//! greenlet (an exception raised in it), and asks the master to replace
//! the worker if it does not stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use pyo3::prelude::*;
use tracing::error;

use super::context::{context, WorkerContext};
use crate::control::ToMaster;

/// How long a thread or greenlet gets to stop after the exception is
/// raised in it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// One request past its deadline.
struct Case {
    core: Option<usize>,
    method: String,
    path: String,
}

static WATCHDOG: OnceLock<mpsc::Sender<Case>> = OnceLock::new();

/// Called by the connection task (no GIL) when a request passed
/// `--harakiri`; the work that needs Python runs on the watchdog thread.
pub fn report(slot: &Arc<AtomicUsize>, method: &str, path: &str, _context: &WorkerContext) {
    let core = slot.load(Ordering::Relaxed);
    let case = Case {
        core: (core != usize::MAX).then_some(core),
        method: method.to_owned(),
        path: path.to_owned(),
    };
    let sender = WATCHDOG.get_or_init(|| {
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("mercy-harakiri".into())
            .spawn(move || watch(receiver))
            .expect("the harakiri thread starts");
        sender
    });
    let _ = sender.send(case);
}

fn watch(cases: mpsc::Receiver<Case>) {
    let context = context();
    for case in cases {
        let limit = context.config.harakiri.map_or(0, |d| d.as_secs());
        let Some(core) = case.core else {
            error!(
                event = "harakiri",
                worker.id = context.spec.id,
                worker.pid = std::process::id(),
                method = %case.method,
                path = %case.path,
                "{} {} waited longer than --harakiri ({limit}s) for a free thread",
                case.method,
                case.path
            );
            context.send_master(&ToMaster::Harakiri);
            continue;
        };
        let Some((sequence, true)) = context.core_state(core) else {
            continue;
        };
        context.mark_harakiri(core);
        let stack = Python::attach(|py| {
            context
                .python
                .get()
                .map(|module| module.bind(py).call_method1("harakiri", (core, sequence)))
                .and_then(Result::ok)
                .and_then(|text| text.extract::<String>().ok())
                .unwrap_or_default()
        });
        error!(
            event = "harakiri",
            worker.id = context.spec.id,
            worker.pid = std::process::id(),
            generation = context.spec.generation,
            method = %case.method,
            path = %case.path,
            stack = %stack,
            "{} {} ran longer than --harakiri ({limit}s): answered 504 and stopped{}",
            case.method,
            case.path,
            crate::logging::inline(&stack)
        );
        context.send_master(&ToMaster::Harakiri);

        // Whether the thread stopped is checked apart, so that the next
        // case is not held up.
        let reason = format!(
            "{} {} is stuck past --harakiri and could not be stopped",
            case.method, case.path
        );
        std::thread::spawn(move || {
            std::thread::sleep(STOP_GRACE);
            if context.core_state(core) == Some((sequence, true)) {
                context.send_master(&ToMaster::Stuck { reason });
            }
        });
    }
}
