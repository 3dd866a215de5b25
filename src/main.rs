//! The `mercy` binary: read options, set up logging, run the master or a
//! worker, and map the outcome to an exit status.

use std::io::Write as _;
use std::process::ExitCode;

use mercy::config;
use mercy::control::{WorkerSpec, WORKER_ENV};
use mercy::{logging, master, worker};

/// Rust's allocations come from mimalloc: its per-thread heaps keep the I/O
/// thread and the request threads, which free each other's buffers, from
/// contending for glibc's arena locks on every request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for a configuration or socket error at start.
const EXIT_CONFIG: u8 = 1;
/// Exit status when the app cannot be loaded at first start.
const EXIT_APP_LOAD: u8 = 3;

/// mimalloc reads its options from the environment once, as the process
/// starts: this one makes it commit arena memory as it is used rather than
/// a whole arena up front, which keeps the master and each worker several
/// MiB smaller.
const ALLOCATOR_ENV: &str = "MIMALLOC_ARENA_EAGER_COMMIT";

/// Starts the binary again, at once, with mimalloc's option set, unless it
/// is set already (by an earlier start, or by the operator). The process
/// keeps its pid, arguments and descriptors; if the exec fails, it goes on
/// as it is.
fn restart_with_allocator_option() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os(ALLOCATOR_ENV).is_some() {
        return;
    }
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    let _ = std::process::Command::new("/proc/self/exe")
        .arg0(program)
        .args(args)
        .env(ALLOCATOR_ENV, "0")
        .exec();
}

fn main() -> ExitCode {
    restart_with_allocator_option();
    let loaded = match config::load(std::env::args().collect()) {
        Ok(loaded) => loaded,
        Err(config::LoadError::Usage(error)) if config::is_bad_value(&error) => {
            // A value out of its range is a configuration error, logged as
            // the log format asked for.
            logging::init(config::log_json_requested());
            let reason = config::clap_reason(&error);
            tracing::error!(event = "config_error", "configuration error: {reason}");
            return ExitCode::from(EXIT_CONFIG);
        }
        Err(config::LoadError::Usage(error)) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
        Err(config::LoadError::Config(error)) => {
            eprintln!("mercy: configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let options = loaded.options;
    if options.version {
        print_version();
        return ExitCode::SUCCESS;
    }
    if options.options_table {
        // A reader that stops early (`| head`) is not an error.
        let _ = std::io::stdout().write_all(config::options_table().as_bytes());
        return ExitCode::SUCCESS;
    }

    let worker_spec = std::env::var(WORKER_ENV).ok();
    if worker_spec.is_none() {
        if let Some(path) = &options.logto {
            if let Err(error) = logging::redirect_to_file(path) {
                eprintln!(
                    "mercy: cannot open the log file {}: {error}",
                    path.display()
                );
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    logging::init(options.log_json);

    if worker_spec.is_none() {
        report_notices(&loaded.notices);
    }
    let config = match options.validate() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(event = "config_error", "configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

    if worker_spec.is_none() {
        report_unreachable_limits(&config);
        config::report_unmatched_pythonpath(&config.pythonpath_unmatched);
    }

    match worker_spec {
        Some(spec) => {
            let spec: WorkerSpec =
                serde_json::from_str(&spec).expect("the master always passes a valid worker spec");
            worker::run(config, spec)
        }
        None => run_master(config),
    }
}

fn run_master(config: config::Config) -> ExitCode {
    let notifier = master::Notifier::from_environment();
    let activated = master::activated_sockets();
    let listeners = match master::bind_all(&config, activated) {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(event = "config_error", "{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for listener in &listeners {
        tracing::info!(address = %listener.address, "listening on {}", listener.address);
    }
    let unix_paths: Vec<std::path::PathBuf> = listeners
        .iter()
        .filter(|listener| listener.bound_here)
        .filter_map(|listener| match &listener.address {
            config::ListenAddress::Unix(path) => Some(path.clone()),
            config::ListenAddress::Tcp(_) => None,
        })
        .collect();
    let pidfile = config.pidfile.clone();
    if let Some(path) = &pidfile {
        if let Err(error) = std::fs::write(path, format!("{}\n", std::process::id())) {
            tracing::error!(
                event = "config_error",
                "cannot write --pidfile {}: {error}",
                path.display()
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    if let Err(error) = drop_privileges(config.run_as) {
        tracing::error!(event = "config_error", "{error}");
        return ExitCode::from(EXIT_CONFIG);
    }
    let outcome = master::run(config, listeners, notifier);
    for path in pidfile.iter().chain(&unix_paths) {
        master::remove_at_exit(path);
    }
    match outcome {
        Ok(master::Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(master::Outcome::AppLoadFailed) => ExitCode::from(EXIT_APP_LOAD),
        Err(error) => {
            tracing::error!("the master failed: {error:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

/// Becomes the `--uid` and `--gid` user and group, once the sockets are
/// bound and the pidfile written; the workers inherit them. A master that
/// is not root (already that user) keeps its groups.
fn drop_privileges(run_as: config::RunAs) -> Result<(), String> {
    use nix::unistd::{self, Gid, Uid};
    let config::RunAs { uid, gid } = run_as;
    if let Some(gid) = gid {
        let gid = Gid::from_raw(gid);
        if unistd::geteuid().is_root() {
            let user = uid.and_then(|uid| unistd::User::from_uid(Uid::from_raw(uid)).ok()?);
            let groups = match user {
                Some(user) => std::ffi::CString::new(user.name)
                    .map_err(|e| e.to_string())
                    .and_then(|name| unistd::initgroups(&name, gid).map_err(|e| e.to_string())),
                None => unistd::setgroups(&[gid]).map_err(|e| e.to_string()),
            };
            groups.map_err(|e| format!("cannot set the groups for --gid {gid}: {e}"))?;
        }
        unistd::setgid(gid).map_err(|e| {
            format!("cannot become group {gid} (--gid): {e}; start mercy as root to use --gid")
        })?;
    }
    if let Some(uid) = uid {
        unistd::setuid(Uid::from_raw(uid)).map_err(|e| {
            format!("cannot become user {uid} (--uid): {e}; start mercy as root to use --uid")
        })?;
    }
    if uid.is_some() || gid.is_some() {
        tracing::info!(
            uid = %unistd::getuid(),
            gid = %unistd::getgid(),
            "running as uid {} gid {}",
            unistd::getuid(),
            unistd::getgid()
        );
    }
    Ok(())
}

/// Says at start which uWSGI options have no effect and which are not
/// supported, with what to do instead.
fn report_notices(notices: &[config::Notice]) {
    for notice in notices {
        match notice {
            config::Notice::AlreadySo { option, why } => {
                tracing::info!(option = %option, "option --{option} has no effect in mercy: {why}");
            }
            config::Notice::Unsupported { option, instead } => {
                tracing::warn!(
                    event = "unsupported_option",
                    option = %option,
                    "option --{option} is not supported by mercy and is ignored: {instead}"
                );
            }
            config::Notice::EnvironmentPlaceholder { variable, name } => {
                tracing::info!(
                    variable = %variable,
                    "environment variable {variable} names no uWSGI option: \
                     it only defines the placeholder %({name})"
                );
            }
        }
    }
}

/// Warns about request limits that `--buffer-size` makes unreachable.
fn report_unreachable_limits(config: &config::Config) {
    let seen = config::seen_options();
    let set = |option: &str| seen.iter().any(|(name, _)| name == option);
    for warning in config.unreachable_limits(set) {
        tracing::warn!(event = "unreachable_limit", "{warning}");
    }
}

fn print_version() {
    let _ = writeln!(
        std::io::stdout(),
        "mercy {}\nPython {} ({}, library {})",
        env!("CARGO_PKG_VERSION"),
        config::EMBEDDED_PYTHON_VERSION,
        config::EMBEDDED_PYTHON_EXECUTABLE,
        config::EMBEDDED_PYTHON_LIBRARY
    );
}
