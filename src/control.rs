//! The control channel between the master and one worker: a unix socket pair
//! carrying one JSON message per line.

use serde::{Deserialize, Serialize};

/// The environment variable that puts the binary in the worker role; its
/// value is a [`WorkerSpec`] as JSON.
pub const WORKER_ENV: &str = "MERCY_WORKER";

/// The first file descriptor a worker inherits its listening sockets on;
/// the control channel comes right after the last listener.
pub const FIRST_INHERITED_FD: i32 = 3;

/// What the master tells a worker process about itself when it starts it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub id: u32,
    pub generation: u64,
    pub master_pid: u32,
    /// The protocol of each inherited listening socket, from fd 3 on.
    pub listeners: Vec<crate::config::Protocol>,
}

impl WorkerSpec {
    /// The fd of the worker's end of the control channel.
    pub fn control_fd(&self) -> i32 {
        FIRST_INHERITED_FD + self.listeners.len() as i32
    }

    /// Marks the inherited descriptors close-on-exec (they came without,
    /// to survive the worker's own exec), so that the programs an app
    /// starts hold neither a listening socket nor the control channel.
    pub fn close_inherited_on_exec(&self) {
        for fd in FIRST_INHERITED_FD..=self.control_fd() {
            // SAFETY: F_SETFD only changes the flags of a descriptor the
            // master placed here; on a closed one it fails harmlessly.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
        }
    }
}

/// How a worker should retire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetireMode {
    /// A reload: the new generation accepts already; finish and leave.
    Reload,
    /// A graceful shutdown: first accept what the kernel has queued.
    Shutdown,
    /// A fast shutdown: stop now, close idle connections, skip the waits.
    Fast,
}

/// Master to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToWorker {
    /// Begin retirement (DESIGN.md section 3).
    Retire { mode: RetireMode },
    /// The grace deadline passed: write the diagnostic, the kill follows.
    /// `option` names the option whose time ran out, `grace_s` its value.
    Expired { option: String, grace_s: f64 },
    /// Reopen the log file (it was rotated).
    ReopenLog,
}

/// Worker to master.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToMaster {
    /// The app is imported and the worker accepts connections.
    Ready,
    /// The app could not be loaded; the worker exits.
    LoadFailed { error: String },
    /// The app asked for a graceful reload of the whole instance.
    Reload,
    /// The diagnostic for an expired retirement is written.
    Diagnosed,
    /// The worker's counters, sent about once a second while they change.
    Stats(WorkerStats),
    /// The worker reached a limit (`--max-requests`): replace it.
    Recycle { reason: String },
    /// A request passed `--harakiri` and was answered with a 504.
    Harakiri,
    /// A request passed `--harakiri` and its thread cannot be stopped:
    /// replace the worker.
    Stuck { reason: String },
}

/// A worker's counters since it started, for `--stats` and `--metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    pub requests: u64,
    pub exceptions: u64,
    /// Response bytes sent.
    pub tx: u64,
    /// Time spent in requests, in microseconds.
    pub running_time_us: u64,
    /// Average request time, in microseconds.
    pub avg_rt_us: u64,
    pub cores: Vec<CoreStats>,
}

/// One request slot of a worker: a thread, or a greenlet in gevent mode.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoreStats {
    pub requests: u64,
    pub in_request: bool,
}

/// Encodes a message as one line.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    let mut line = serde_json::to_vec(message).expect("control messages always serialize");
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_lines() {
        let line = encode(&ToWorker::Retire {
            mode: RetireMode::Shutdown,
        });
        assert_eq!(line, b"{\"type\":\"retire\",\"mode\":\"shutdown\"}\n");
        let back: ToMaster =
            serde_json::from_slice(&encode(&ToMaster::LoadFailed { error: "x".into() }))
                .expect("decodes");
        assert!(matches!(back, ToMaster::LoadFailed { error } if error == "x"));
    }
}
