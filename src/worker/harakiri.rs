//! `--harakiri`: a per-request deadline. The connection answers 504 (or is
//! cut) at the deadline; this module then counts the request, starts the
//! timer that has the worker replaced if the request does not stop, and
//! logs it with the Python stack of the thread or greenlet running it,
//! where an exception is raised to stop it. Only the stack and the
//! exception need the GIL, which C code may keep for good: they are taken
//! on a thread of their own, and the log line waits for them within a
//! bound.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use tracing::error;

use super::context::{context, WorkerContext};
use crate::control::ToMaster;

/// How long a thread or greenlet gets to stop after the exception is
/// raised in it.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// How long the `harakiri` line waits for the stack.
const STACK_WAIT: Duration = Duration::from_secs(1);

/// The stack logged when the GIL was not free within `STACK_WAIT`.
const GIL_HELD: &str = "stack unavailable: the GIL is held";

/// One request past its deadline.
struct Case {
    method: String,
    path: String,
    place: Place,
}

/// Where a request was when it passed its deadline.
#[derive(Clone, Copy)]
enum Place {
    /// Still queued: no thread or greenlet had taken it.
    Queued,
    /// Its thread or greenlet had just finished it.
    Finished,
    /// In request slot `core`, as the slot's request number `sequence`.
    Running { core: usize, sequence: u64 },
}

static WATCHDOG: OnceLock<mpsc::Sender<Case>> = OnceLock::new();

/// Called by the connection task (no GIL) when a request passed
/// `--harakiri`; the rest runs on the watchdog thread.
pub fn report(slot: &Arc<AtomicUsize>, method: &str, path: &str, context: &WorkerContext) {
    let core = slot.load(Ordering::Relaxed);
    let place = match context.core_state(core) {
        _ if core == usize::MAX => Place::Queued,
        Some((sequence, true)) => Place::Running { core, sequence },
        _ => Place::Finished,
    };
    let case = Case {
        method: method.to_owned(),
        path: path.to_owned(),
        place,
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

/// The watchdog: never takes the GIL, so that no request can hold it up.
fn watch(cases: mpsc::Receiver<Case>) {
    let context = context();
    let stacks = start_stack_taker();
    for case in cases {
        context.send_master(&ToMaster::Harakiri);
        let Place::Running { core, sequence } = case.place else {
            log_harakiri(&case, "");
            continue;
        };
        context.mark_harakiri(core);
        let pending = Arc::new(PendingStack::default());
        let job = StackJob {
            core,
            sequence,
            method: case.method.clone(),
            path: case.path.clone(),
            pending: pending.clone(),
        };
        if stacks.send(job).is_err() {
            pending.give_up();
        }
        std::thread::Builder::new()
            .name("mercy-harakiri-case".into())
            .spawn(move || follow(&case, core, sequence, &pending))
            .expect("a harakiri thread starts");
    }
}

/// Logs one running request past its deadline once its stack is in (or
/// after `STACK_WAIT`), then asks for the worker to be replaced if the
/// request goes on `STOP_GRACE` after the exception was raised in it.
fn follow(case: &Case, core: usize, sequence: u64, pending: &PendingStack) {
    let started = Instant::now();
    let taken = pending.wait(STACK_WAIT);
    log_harakiri(case, taken.as_ref().map_or(GIL_HELD, |t| t.stack.as_str()));

    let raised = taken.map_or(started, |t| t.raised_at);
    std::thread::sleep((raised + STOP_GRACE).saturating_duration_since(Instant::now()));
    let context = context();
    if context.core_state(core) == Some((sequence, true)) {
        context.send_master(&ToMaster::Stuck {
            reason: format!(
                "{} {} is stuck past --harakiri and could not be stopped",
                case.method, case.path
            ),
        });
    }
}

fn log_harakiri(case: &Case, stack: &str) {
    let context = context();
    let limit = context.config.harakiri.map_or(0, |d| d.as_secs());
    let what = match case.place {
        Place::Queued => "waited to be taken up (every thread busy, or the GIL held) longer than",
        Place::Finished => "ended just as it passed",
        Place::Running { .. } => "ran longer than",
    };
    error!(
        event = "harakiri",
        worker.id = context.spec.id,
        worker.pid = std::process::id(),
        generation = context.spec.generation,
        method = %case.method,
        path = %case.path,
        stack = %stack,
        "{} {} {what} --harakiri ({limit}s){}",
        case.method,
        case.path,
        crate::logging::inline(stack)
    );
}

/// A stack for the thread that takes stacks to fetch.
struct StackJob {
    core: usize,
    sequence: u64,
    method: String,
    path: String,
    pending: Arc<PendingStack>,
}

/// A stack and when the exception was raised with it.
struct Taken {
    stack: String,
    raised_at: Instant,
}

/// A stack being fetched, which the `harakiri` line waits for.
#[derive(Default)]
struct PendingStack {
    state: Mutex<StackState>,
    filled: Condvar,
}

#[derive(Default)]
enum StackState {
    #[default]
    Waiting,
    Taken(Taken),
    /// Nobody waits any more: a stack that comes is logged on its own.
    Closed,
}

impl PendingStack {
    /// The stack if it comes within `bound`; afterwards nobody waits.
    fn wait(&self, bound: Duration) -> Option<Taken> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (mut state, _) = self
            .filled
            .wait_timeout_while(state, bound, |state| matches!(state, StackState::Waiting))
            .unwrap_or_else(|p| p.into_inner());
        match std::mem::replace(&mut *state, StackState::Closed) {
            StackState::Taken(taken) => Some(taken),
            _ => None,
        }
    }

    fn give_up(&self) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = StackState::Closed;
    }

    /// Hands the stack over; gives it back if nobody waits any more.
    fn fill(&self, taken: Taken) -> Result<(), Taken> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if matches!(*state, StackState::Closed) {
            return Err(taken);
        }
        *state = StackState::Taken(taken);
        self.filled.notify_all();
        Ok(())
    }
}

fn start_stack_taker() -> mpsc::Sender<StackJob> {
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("mercy-harakiri-stack".into())
        .spawn(move || take_stacks(receiver))
        .expect("the harakiri stack thread starts");
    sender
}

/// Takes the GIL for each job, which may wait as long as C code keeps it.
/// A stack that comes after its `harakiri` line was written is logged as
/// `harakiri_stack`.
fn take_stacks(jobs: mpsc::Receiver<StackJob>) {
    let context = context();
    for job in jobs {
        let stack = if context.core_state(job.core) == Some((job.sequence, true)) {
            stack_and_stop(context, job.core, job.sequence)
        } else {
            "(the request ended before its stack was taken)".to_owned()
        };
        let taken = Taken {
            stack,
            raised_at: Instant::now(),
        };
        if let Err(late) = job.pending.fill(taken) {
            error!(
                event = "harakiri_stack",
                worker.id = context.spec.id,
                worker.pid = std::process::id(),
                generation = context.spec.generation,
                method = %job.method,
                path = %job.path,
                stack = %late.stack,
                "the stack of {} {}, past --harakiri, once the GIL was free{}",
                job.method,
                job.path,
                crate::logging::inline(&late.stack)
            );
        }
    }
}

/// The Python stack of the request in slot `core`; raises
/// mercy.HarakiriTimeout in its thread or greenlet if it is still there.
fn stack_and_stop(context: &WorkerContext, core: usize, sequence: u64) -> String {
    Python::attach(|py| {
        context
            .python
            .get()
            .map(|module| module.bind(py).call_method1("harakiri", (core, sequence)))
            .and_then(Result::ok)
            .and_then(|text| text.extract::<String>().ok())
            .unwrap_or_default()
    })
}
