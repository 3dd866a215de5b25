//! Log set-up: readable lines or JSON lines on standard error (which
//! `--logto` points at a file), shared by the master and its workers.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use std::sync::atomic::{AtomicBool, Ordering};

use tracing_subscriber::field::MakeExt;
use tracing_subscriber::EnvFilter;

/// Fields that carry long, multi-line text (tracebacks, stacks). Readable
/// lines show that text in the message instead, so they skip the field.
const LONG_FIELDS: [&str; 4] = ["traceback", "threads", "requests", "stack"];

static JSON: AtomicBool = AtomicBool::new(false);

/// Long text for a readable line's message: on a line of its own after the
/// message in readable logs, nothing in JSON logs (where it is a field).
pub fn inline(detail: &str) -> String {
    if JSON.load(Ordering::Relaxed) || detail.is_empty() {
        String::new()
    } else {
        format!("\n{}", detail.trim_end())
    }
}

/// The environment variable that overrides the log filter (`debug`, ...).
pub const FILTER_ENV: &str = "MERCY_LOG";

/// Installs the global subscriber. Call once per process.
pub fn init(json: bool) {
    let filter = EnvFilter::try_from_env(FILTER_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr);
    JSON.store(json, Ordering::Relaxed);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
            if LONG_FIELDS.contains(&field.name()) {
                Ok(())
            } else if field.name() == "message" {
                write!(writer, "{value:?}")
            } else {
                write!(writer, "{field}={value:?}")
            }
        })
        .delimited(" ");
        builder.with_ansi(false).fmt_fields(fields).init();
    }
}

/// Standard error that drops a line it cannot write. A log whose reader
/// went away (a closed pipe, a full disk) must not stop the server: the
/// line is lost, the requests are not.
struct LossyStderr;

impl std::io::Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = std::io::stderr().flush();
        Ok(())
    }
}

/// Points standard output and standard error at `path` (appending), so
/// this process, its workers and Python's own prints all log there.
pub fn redirect_to_file(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    for target in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 on two valid descriptors; `file` stays open for the
        // duration of the call and the targets are the standard streams.
        if unsafe { libc::dup2(file.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
