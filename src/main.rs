//! The `mercy` binary: read options, set up logging, run the master or a
//! worker, and map the outcome to an exit status.

use std::process::ExitCode;

use clap::Parser;
use mercy::config::{self, Options};
use mercy::control::{WorkerSpec, WORKER_ENV};
use mercy::{logging, master, worker};

/// Exit status for a configuration or socket error at start.
const EXIT_CONFIG: u8 = 1;
/// Exit status when the app cannot be loaded at first start.
const EXIT_APP_LOAD: u8 = 3;

fn main() -> ExitCode {
    let options = match Options::try_parse() {
        Ok(options) => options,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if options.version {
        print_version();
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

    let config = match options.validate() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(event = "config_error", "configuration error: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };

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
    let listeners = match master::bind_all(&config.listen, config.backlog) {
        Ok(listeners) => listeners,
        Err(error) => {
            tracing::error!(event = "config_error", "{error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for listener in &listeners {
        tracing::info!(address = %listener.address, "listening on {}", listener.address);
    }
    match master::run(config, listeners) {
        Ok(master::Outcome::Stopped) => ExitCode::SUCCESS,
        Ok(master::Outcome::AppLoadFailed) => ExitCode::from(EXIT_APP_LOAD),
        Err(error) => {
            tracing::error!("the master failed: {error:#}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn print_version() {
    println!("mercy {}", env!("CARGO_PKG_VERSION"));
    println!(
        "Python {} ({}, library {})",
        config::EMBEDDED_PYTHON_VERSION,
        config::EMBEDDED_PYTHON_EXECUTABLE,
        config::EMBEDDED_PYTHON_LIBRARY
    );
}
