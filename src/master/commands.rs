//! What an operator can ask of the master, and every way to ask it: Unix
//! signals, the control FIFO's letters (uWSGI's), and touched files. The
//! meaning of each trigger is written here, once.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tracing::warn;

/// A request to the master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// A new generation of every worker, then the old one retires.
    Reload,
    /// The same, one worker at a time.
    ChainReload,
    /// Drain and retire every worker, then exit 0. A second one escalates.
    Shutdown,
    /// Workers get a second, then are killed; exit 0.
    FastShutdown,
    /// Reopen the log file (after rotation).
    ReopenLogs,
    /// One more worker.
    AddWorker,
    /// One worker fewer (never below one).
    RemoveWorker,
    /// Write the stats document to the log.
    LogStats,
    /// Write the pidfile again.
    WritePidfile,
}

/// The signal table (DESIGN.md section 4).
const SIGNALS: [(SignalKind, Command, &str); 9] = [
    (SignalKind::hangup(), Command::Reload, "SIGHUP"),
    (SignalKind::user_defined2(), Command::ChainReload, "SIGUSR2"),
    (SignalKind::terminate(), Command::Shutdown, "SIGTERM"),
    (SignalKind::interrupt(), Command::FastShutdown, "SIGINT"),
    (SignalKind::quit(), Command::FastShutdown, "SIGQUIT"),
    (SignalKind::user_defined1(), Command::ReopenLogs, "SIGUSR1"),
    (
        SignalKind::from_raw(libc::SIGTTIN),
        Command::AddWorker,
        "SIGTTIN",
    ),
    (
        SignalKind::from_raw(libc::SIGTTOU),
        Command::RemoveWorker,
        "SIGTTOU",
    ),
    (
        SignalKind::from_raw(libc::SIGWINCH),
        Command::LogStats,
        "SIGWINCH",
    ),
];

/// The control FIFO's letters, as uWSGI's master FIFO has them.
pub fn for_fifo_letter(letter: u8) -> Option<Command> {
    Some(match letter {
        b'r' | b'R' | b'w' => Command::Reload,
        b'c' => Command::ChainReload,
        b'q' => Command::Shutdown,
        b'Q' => Command::FastShutdown,
        b'l' => Command::ReopenLogs,
        b'+' => Command::AddWorker,
        b'-' => Command::RemoveWorker,
        b's' => Command::LogStats,
        b'P' => Command::WritePidfile,
        _ => return None,
    })
}

/// Every source of commands the master listens to.
pub struct Triggers {
    signals: Vec<(Signal, Command, &'static str)>,
    fifo: Option<pipe::Receiver>,
    touched: Vec<Touched>,
}

/// A file whose modification starts a command (`--touch-reload`).
struct Touched {
    path: PathBuf,
    command: Command,
    cause: String,
    seen: Option<SystemTime>,
}

impl Triggers {
    pub fn install(
        fifo: Option<&Path>,
        touch_reload: &[PathBuf],
        touch_chain_reload: &[PathBuf],
    ) -> std::io::Result<Self> {
        let signals = SIGNALS
            .iter()
            .map(|(kind, command, name)| {
                let handler = signal(*kind).map_err(|error| {
                    std::io::Error::new(error.kind(), format!("cannot handle {name}: {error}"))
                })?;
                Ok((handler, *command, *name))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let fifo = fifo.map(open_fifo).transpose()?;
        let touched = touch_reload
            .iter()
            .map(|path| (path, Command::Reload, "--touch-reload"))
            .chain(
                touch_chain_reload
                    .iter()
                    .map(|path| (path, Command::ChainReload, "--touch-chain-reload")),
            )
            .map(|(path, command, option)| Touched {
                path: path.clone(),
                command,
                cause: format!("{option} {}", path.display()),
                seen: modified(path),
            })
            .collect();
        Ok(Self {
            signals,
            fifo,
            touched,
        })
    }

    /// Waits for the next command from a signal or the FIFO.
    pub async fn next(&mut self) -> (Command, String) {
        let signals = futures_select(&mut self.signals);
        match &mut self.fifo {
            Some(fifo) => {
                tokio::select! {
                    found = signals => found,
                    Some(found) = read_letter(fifo) => found,
                }
            }
            None => signals.await,
        }
    }

    /// Commands for files touched since the last look.
    pub fn touched(&mut self) -> Vec<(Command, String)> {
        let mut found = Vec::new();
        for file in &mut self.touched {
            let now = modified(&file.path);
            if now.is_some() && now != file.seen {
                found.push((file.command, file.cause.clone()));
            }
            file.seen = now;
        }
        found
    }
}

/// Resolves with the first signal to arrive.
async fn futures_select(signals: &mut [(Signal, Command, &'static str)]) -> (Command, String) {
    std::future::poll_fn(|cx| {
        for (signal, command, name) in signals.iter_mut() {
            if signal.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready((*command, (*name).to_owned()));
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Reads the next known letter from the FIFO; unknown bytes and newlines
/// are skipped.
async fn read_letter(fifo: &mut pipe::Receiver) -> Option<(Command, String)> {
    loop {
        let mut byte = [0u8; 1];
        match fifo.read(&mut byte).await {
            Ok(1) => {
                if let Some(command) = for_fifo_letter(byte[0]) {
                    return Some((command, format!("master FIFO '{}'", byte[0] as char)));
                }
                if !byte[0].is_ascii_whitespace() {
                    warn!("unknown master FIFO command {:?}", byte[0] as char);
                }
            }
            Ok(_) => return None,
            Err(error) => {
                warn!(%error, "cannot read the master FIFO");
                return None;
            }
        }
    }
}

/// Creates the FIFO if needed and opens it for reading and writing, so it
/// never reports end of file when a writer leaves. Errors name the option
/// and the path.
fn open_fifo(path: &Path) -> std::io::Result<pipe::Receiver> {
    use std::os::unix::fs::FileTypeExt;
    let fail = |error: std::io::Error, doing: &str| {
        let message = format!("--master-fifo {}: {doing}: {error}", path.display());
        std::io::Error::new(error.kind(), message)
    };
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.file_type().is_fifo() => {}
        Ok(_) => {
            let error = std::io::Error::other("remove it or choose another path");
            return Err(fail(error, "it exists and is not a FIFO"));
        }
        Err(_) => nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|error| fail(error.into(), "cannot create the FIFO"))?,
    }
    pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .map_err(|error| fail(error, "cannot open the FIFO"))
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_letters_follow_uwsgi() {
        assert_eq!(for_fifo_letter(b'r'), Some(Command::Reload));
        assert_eq!(for_fifo_letter(b'c'), Some(Command::ChainReload));
        assert_eq!(for_fifo_letter(b'q'), Some(Command::Shutdown));
        assert_eq!(for_fifo_letter(b'Q'), Some(Command::FastShutdown));
        assert_eq!(for_fifo_letter(b'+'), Some(Command::AddWorker));
        assert_eq!(for_fifo_letter(b'P'), Some(Command::WritePidfile));
        assert_eq!(for_fifo_letter(b'x'), None);
    }
}
