//! Service managers and containers: systemd's readiness protocol
//! (`Type=notify`), socket activation (`LISTEN_FDS`), and reaping orphans
//! when mercy runs as PID 1.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;

use socket2::{SockAddr, Socket};
use tracing::{debug, warn};

/// The notify socket systemd gave the master, if any. Taken out of the
/// environment so that workers do not inherit it.
pub struct Notifier {
    address: Option<std::os::unix::net::SocketAddr>,
}

impl Notifier {
    pub fn from_environment() -> Self {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self { address: None };
        };
        // SAFETY: called by the master's main thread before any other thread
        // reads the environment.
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let path = path.to_string_lossy().into_owned();
        let address = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            }
            None => std::os::unix::net::SocketAddr::from_pathname(&path),
        };
        match address {
            Ok(address) => Self {
                address: Some(address),
            },
            Err(error) => {
                warn!(%error, "NOTIFY_SOCKET {path:?} is not a usable address");
                Self { address: None }
            }
        }
    }

    /// Sends `READY=1`, `RELOADING=1`, `STOPPING=1` or `STATUS=...` lines.
    pub fn notify(&self, message: &str) {
        let Some(address) = &self.address else {
            return;
        };
        let sent = UnixDatagram::unbound()
            .and_then(|socket| socket.send_to_addr(message.as_bytes(), address));
        if let Err(error) = sent {
            debug!(%error, "cannot notify the service manager");
        }
    }

    pub fn ready(&self, status: &str) {
        self.notify(&format!("READY=1\nSTATUS={status}"));
    }

    pub fn reloading(&self, status: &str) {
        let monotonic = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
            .unwrap_or(0);
        self.notify(&format!(
            "RELOADING=1\nMONOTONIC_USEC={monotonic}\nSTATUS={status}"
        ));
    }

    pub fn stopping(&self, status: &str) {
        self.notify(&format!("STOPPING=1\nSTATUS={status}"));
    }

    pub fn status(&self, status: &str) {
        self.notify(&format!("STATUS={status}"));
    }
}

/// The sockets systemd passed (socket activation), if `LISTEN_PID` names
/// this process. They start at fd 3.
pub fn activated_sockets() -> Vec<(OwnedFd, SockAddr)> {
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    let count = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<RawFd>().ok())
        .unwrap_or(0);
    // SAFETY: only the master's main thread runs yet.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    if !for_us || count <= 0 {
        return Vec::new();
    }
    // SAFETY: only the master's main thread runs yet.
    unsafe { std::env::set_var(crate::config::ACTIVATED_ENV, "1") };
    (3..3 + count)
        .filter_map(|fd| {
            // SAFETY: F_GETFD only queries the descriptor's flags.
            if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
                warn!(fd, "LISTEN_FDS names descriptor {fd}, which is not open");
                return None;
            }
            // SAFETY: systemd passes open listening sockets on 3..3+LISTEN_FDS
            // to the process named by LISTEN_PID, which is this one; nothing
            // else in the process owns them.
            let socket = unsafe { Socket::from_raw_fd(fd) };
            let _ = socket.set_cloexec(true);
            match socket.local_addr() {
                Ok(address) => Some((OwnedFd::from(socket), address)),
                Err(error) => {
                    warn!(fd, %error, "LISTEN_FDS: not a socket");
                    None
                }
            }
        })
        .collect()
}

/// As PID 1 (in a container), adopted orphans must be reaped or they stay
/// zombies. Reaps every zombie child that is not one of the master's own
/// workers (those are waited for by their watchers).
pub fn reap_orphans(workers: &[u32]) {
    if std::process::id() != 1 {
        return;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if workers.contains(&(pid as u32)) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The state follows the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        if state == Some("Z") {
            let _ = nix::sys::wait::waitpid(
                nix::unistd::Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
        }
    }
}
