//! Starting a worker: the running binary executed again in the worker role,
//! with the listening sockets and one end of a control channel inherited.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use tokio::process::{Child, Command};

use crate::control::{WorkerSpec, FIRST_INHERITED_FD, WORKER_ENV};

/// A started worker process and the master's end of its control channel.
pub struct Spawned {
    pub child: Child,
    pub control: UnixStream,
}

/// Executes `/proc/self/exe` with the master's own arguments, so master and
/// workers always run the same build and read the same options.
pub fn spawn_worker(spec: &WorkerSpec, listeners: &[OwnedFd]) -> std::io::Result<Spawned> {
    let (master_end, worker_end) = UnixStream::pair()?;

    let mut sources: Vec<RawFd> = listeners.iter().map(AsRawFd::as_raw_fd).collect();
    sources.push(worker_end.as_raw_fd());

    let mut command = Command::new("/proc/self/exe");
    command
        .arg0(format!(
            "mercy worker {} (generation {})",
            spec.id, spec.generation
        ))
        .args(std::env::args_os().skip(1))
        .env(
            WORKER_ENV,
            serde_json::to_string(spec).expect("a worker spec always serializes"),
        )
        .kill_on_drop(false);
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls fcntl and dup2, which are async-signal-safe; it allocates nothing
    // (`sources` was built before the fork and is only read).
    unsafe {
        command.pre_exec(move || place_inherited_fds(&sources));
    }
    let child = command.spawn()?;
    drop(worker_end);
    Ok(Spawned {
        child,
        control: master_end,
    })
}

/// Moves each source descriptor to 3, 4, ... in order, without CLOEXEC.
/// The sources are first copied above the target range so that placing one
/// never overwrites another that is still to be placed.
fn place_inherited_fds(sources: &[RawFd]) -> std::io::Result<()> {
    // Just above the targets: a fixed high floor would fail under a low
    // `ulimit -n`, since F_DUPFD refuses a floor at or above the limit.
    let scratch_floor = FIRST_INHERITED_FD + sources.len() as RawFd;
    let mut scratch = [0 as RawFd; 64];
    if sources.len() > scratch.len() {
        return Err(std::io::Error::other(
            "too many sockets to pass to a worker",
        ));
    }
    for (slot, &source) in scratch.iter_mut().zip(sources) {
        // SAFETY: F_DUPFD_CLOEXEC on a descriptor the parent keeps open.
        *slot = check(unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, scratch_floor) })?;
    }
    for (index, &copy) in scratch[..sources.len()].iter().enumerate() {
        let target = FIRST_INHERITED_FD + index as RawFd;
        // SAFETY: dup2 between two open descriptors; the copy is CLOEXEC and
        // goes away at exec, the target is left without CLOEXEC.
        check(unsafe { libc::dup2(copy, target) })?;
    }
    Ok(())
}

fn check(result: libc::c_int) -> std::io::Result<RawFd> {
    if result < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(result)
    }
}
