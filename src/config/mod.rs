//! Options, read from the command line (uWSGI's names), and their validation.

mod address;
pub mod compat;
mod pythonpath;
mod sources;
mod whole;

pub use address::ListenAddress;
pub use pythonpath::report_unmatched as report_unmatched_pythonpath;
pub use sources::{
    clap_reason, is_bad_value, load, log_json_requested, seen_options, LoadError, Loaded, Notice,
};
pub use whole::MAX_SECONDS;

use whole::Whole;

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

use crate::protocol::http::Limits;

/// An application server for Python WSGI apps.
///
/// Option names follow uWSGI's, so an existing deployment's options mostly
/// work unchanged.
#[derive(Parser, Debug, Clone)]
#[command(name = "mercy", disable_version_flag = true, args_override_self = true)]
pub struct Options {
    /// Print mercy's version and the embedded Python's, then exit.
    #[arg(long)]
    pub version: bool,

    /// Print the table of uWSGI options and how mercy treats each, then exit.
    #[arg(long, hide = true)]
    pub options_table: bool,

    /// uWSGI ini files to read (`mercy app.ini`).
    #[arg(value_name = "CONFIG.ini")]
    pub config_files: Vec<PathBuf>,

    /// Read options from an ini file's `[uwsgi]` and `[mercy]` sections, or
    /// from `FILE:SECTION`. Repeatable.
    #[arg(long, value_name = "FILE[:SECTION]")]
    pub ini: Vec<String>,

    /// Define a placeholder for ini files: `--set-ph NAME=VALUE`.
    #[arg(long, visible_alias = "set-placeholder", value_name = "NAME=VALUE")]
    pub set_ph: Vec<String>,

    /// Set an option (`--set processes=4` means `--processes 4`), or a
    /// placeholder when NAME is not an option, as uWSGI's `--set` does.
    #[arg(long, value_name = "NAME=VALUE")]
    pub set: Vec<String>,

    /// Refuse unsupported uWSGI options and unknown ini keys instead of
    /// warning.
    #[arg(long)]
    pub strict: bool,

    /// Serve HTTP/1.1 on ADDR (`host:port`, `:port` or a unix socket path).
    /// Repeatable. Unlike uWSGI, a bare IP address, `localhost` or a bare
    /// port number (the port or its colon forgotten) is a configuration
    /// error rather than a unix socket of that name; write `./8000` if that
    /// file is meant. uWSGI's `--http-socket` means the same, and so does
    /// its `--http`: mercy's workers serve HTTP themselves, with no router.
    #[arg(
        long = "http",
        visible_alias = "http-socket",
        aliases = ["http11-socket", "httprouter"],
        value_name = "ADDR"
    )]
    pub http: Vec<String>,

    /// Serve the uwsgi binary protocol (nginx `uwsgi_pass`) on ADDR.
    /// Repeatable. uWSGI's `--uwsgi-socket` means the same.
    #[arg(
        long = "socket",
        short = 's',
        visible_alias = "uwsgi-socket",
        value_name = "ADDR"
    )]
    pub socket: Vec<String>,

    /// Most variables in a uwsgi packet (1 to 32768).
    #[arg(long, default_value_t = 64, value_name = "N",
          value_parser = Whole::<usize>::new(1, 32768, ""))]
    pub max_vars: usize,

    /// Permissions of unix sockets, in octal (`--chmod-socket 660`); the
    /// flag alone means 666.
    #[arg(
        long,
        alias = "chmod",
        value_name = "MODE",
        num_args = 0..=1,
        default_missing_value = "666"
    )]
    pub chmod_socket: Option<String>,

    /// Owner of unix sockets: `user` or `user:group`.
    #[arg(long, value_name = "USER[:GROUP]")]
    pub chown_socket: Option<String>,

    /// Load the WSGI app from this Python file.
    #[arg(long, value_name = "PATH", visible_alias = "file")]
    pub wsgi_file: Option<PathBuf>,

    /// Load the WSGI app from this module (`pkg.mod` or `pkg.mod:callable`;
    /// `pkg.mod:factory()` calls `factory` once and serves what it returns).
    #[arg(long, visible_alias = "wsgi", value_name = "MODULE")]
    pub module: Option<String>,

    /// Load the WSGI app (a `.py` or `.wsgi` file, or `module:callable`)
    /// under a URL prefix: `--mount /prefix=app.py`. mercy serves one app,
    /// so one mount; with --manage-script-name the prefix is moved from
    /// PATH_INFO to SCRIPT_NAME.
    #[arg(long, value_name = "MOUNTPOINT=APP")]
    pub mount: Vec<String>,

    /// For a request under the --mount prefix, SCRIPT_NAME is the prefix and
    /// PATH_INFO the rest of the path.
    #[arg(long)]
    pub manage_script_name: bool,

    /// The name of the WSGI callable in the app's module; `NAME()` calls
    /// that app factory once, with no arguments, at load.
    #[arg(long, default_value = "application", value_name = "NAME")]
    pub callable: String,

    /// Number of worker processes (1 to 4096).
    #[arg(long, visible_alias = "workers", short = 'p', default_value_t = 1,
          value_parser = Whole::<u32>::new(1, MAX_PROCESSES, ""))]
    pub processes: u32,

    /// Python threads per worker that call the app (default 1; at most
    /// 4096).
    #[arg(long, value_name = "N", value_parser = Whole::<u32>::new(1, MAX_THREADS, ""))]
    pub threads: Option<u32>,

    /// gevent mode: the worker's main thread runs the gevent hub and each
    /// request runs in its own greenlet, at most N (1 to 1000000) at once.
    #[arg(long, value_name = "N", value_parser = Whole::<u32>::new(1, MAX_GREENLETS, ""))]
    pub gevent: Option<u32>,

    /// In gevent mode, do not monkey-patch the standard library.
    #[arg(long)]
    pub no_gevent_monkey_patch: bool,

    /// In gevent mode, a retiring worker also waits until the hub has
    /// nothing left to run (after the shutdown hooks ran).
    #[arg(long)]
    pub gevent_wait_for_hub: bool,

    /// Seconds a retiring worker gets to finish before it is killed.
    #[arg(long, default_value_t = 30, value_name = "SECONDS",
          value_parser = Whole::<u64>::seconds(1))]
    pub worker_reload_mercy: u64,

    /// Seconds a new worker gets to import the app and report ready.
    #[arg(long, default_value_t = 60, value_name = "SECONDS",
          value_parser = Whole::<u64>::seconds(1))]
    pub spawn_timeout: u64,

    /// A virtualenv whose packages the app imports (`VIRTUAL_ENV` if unset).
    #[arg(
        long,
        visible_alias = "home",
        aliases = ["venv", "pyhome"],
        short = 'H',
        value_name = "PATH"
    )]
    pub virtualenv: Option<PathBuf>,

    /// A folder added to the front of `sys.path`, or a glob pattern
    /// (`'/srv/libs/*'`) adding every path it matches, sorted. Repeatable.
    #[arg(long, aliases = ["python-path", "pp"], value_name = "DIR")]
    pub pythonpath: Vec<PathBuf>,

    /// Change to this folder before loading the app.
    #[arg(long, value_name = "DIR")]
    pub chdir: Option<PathBuf>,

    /// Listen queue size of each socket (default 1024, or the kernel's
    /// net.core.somaxconn if that is lower). A larger value than somaxconn is
    /// refused, as the kernel would lower it.
    #[arg(long, value_name = "N", value_parser = Whole::<u32>::new(1, MAX_BACKLOG, ""))]
    pub listen: Option<u32>,

    /// Seconds an idle keep-alive connection is kept open (0 to 3600; 0
    /// closes every connection after its response).
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = Whole::<u64>::new(0, MAX_CONNECTION_WAIT, "seconds")
              .note("0 turns keep-alive off"))]
    pub keep_alive: u64,

    /// Seconds a request head may take from its first byte to its end (a
    /// 408 after that), and that one read of a body may wait (1 to 3600).
    #[arg(long, default_value_t = 4, value_name = "SECONDS",
          value_parser = Whole::<u64>::new(1, MAX_CONNECTION_WAIT, "seconds"))]
    pub socket_timeout: u64,

    /// Largest request head, in bytes (64 to 16 MiB; at most 65535 with
    /// --socket).
    #[arg(long, short = 'b', default_value_t = 4096, value_name = "BYTES",
          value_parser = Whole::<usize>::new(64, MAX_HEAD_BYTES, "bytes"))]
    pub buffer_size: usize,

    /// Request bodies up to this size are read before the app runs (of a
    /// longer chunked body, this much; the rest streams). A body sent after
    /// `100 Continue` always streams. 0 to 16 MiB; 0 streams every body.
    #[arg(long, default_value_t = 65536, value_name = "BYTES",
          value_parser = Whole::<usize>::new(0, MAX_POST_BUFFERING, "bytes")
              .note("0 streams every body"))]
    pub post_buffering: usize,

    /// Longest request line, in bytes (0 to 16 MiB; 0: no limit but
    /// --buffer-size).
    #[arg(long, default_value_t = 4094, value_name = "BYTES",
          value_parser = Whole::<usize>::new(0, MAX_HEAD_BYTES, "bytes").note(NO_LIMIT))]
    pub limit_request_line: usize,

    /// Most header fields in a request (0 to 32768; 0: no limit but
    /// --buffer-size).
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = Whole::<usize>::new(0, MAX_REQUEST_FIELDS, "").note(NO_LIMIT))]
    pub limit_request_fields: usize,

    /// Longest header field line with its CRLF, in bytes (0 to 16 MiB; 0: no
    /// limit but --buffer-size).
    #[arg(long, default_value_t = 8190, value_name = "BYTES",
          value_parser = Whole::<usize>::new(0, MAX_HEAD_BYTES, "bytes").note(NO_LIMIT))]
    pub limit_request_field_size: usize,

    /// Accept a PROXY protocol header (v1 or v2) at the start of each
    /// connection, as load balancers send it, and take the client address
    /// from it.
    #[arg(long, alias = "http-enable-proxy-protocol")]
    pub enable_proxy_protocol: bool,

    /// Set an environment variable (`KEY=VALUE`) before the app loads.
    #[arg(long, value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Answer each connection on ADDR with a JSON document of the workers'
    /// figures, in uWSGI's format (`uwsgitop ADDR` reads it).
    #[arg(long, visible_alias = "stats-server", value_name = "ADDR")]
    pub stats: Option<String>,

    /// Serve the `--stats` document as an HTTP response.
    #[arg(long)]
    pub stats_http: bool,

    /// Serve the same figures in Prometheus' text format over HTTP on ADDR.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// A FIFO the master reads one-letter commands from (uWSGI's letters:
    /// r reload, c chain reload, q graceful stop, Q fast stop, l reopen
    /// logs, + and - workers, s stats to the log).
    #[arg(long, value_name = "PATH")]
    pub master_fifo: Option<PathBuf>,

    /// A graceful reload whenever this file's modification time changes.
    #[arg(long, value_name = "FILE")]
    pub touch_reload: Vec<PathBuf>,

    /// A chain reload whenever this file's modification time changes.
    #[arg(long, value_name = "FILE")]
    pub touch_chain_reload: Vec<PathBuf>,

    /// Write the master's pid to this file (removed at exit).
    #[arg(long, alias = "pidfile2", value_name = "FILE")]
    pub pidfile: Option<PathBuf>,

    /// Replace a worker after it served N requests (gracefully; its
    /// replacement is ready first). 0 turns it off.
    #[arg(long, value_name = "N", value_parser = Whole::<u64>::new(0, MAX_REQUESTS, ""))]
    pub max_requests: Option<u64>,

    /// Worker i's limit is --max-requests + i * N, so workers are not all
    /// replaced at once.
    #[arg(long, default_value_t = 0, value_name = "N",
          value_parser = Whole::<u64>::new(0, MAX_REQUESTS, ""))]
    pub max_requests_delta: u64,

    /// Replace a worker after it has run this many seconds (0 turns it
    /// off).
    #[arg(long, value_name = "SECONDS", value_parser = Whole::<u64>::seconds(0))]
    pub max_worker_lifetime: Option<u64>,

    /// Worker i's lifetime is --max-worker-lifetime + i * S.
    #[arg(long, default_value_t = 0, value_name = "SECONDS",
          value_parser = Whole::<u64>::seconds(0))]
    pub max_worker_lifetime_delta: u64,

    /// Replace a worker whose resident memory reaches this many megabytes
    /// (0 turns it off).
    #[arg(long, value_name = "MB", value_parser = Whole::<u64>::new(0, MAX_RSS_MB, "MB"))]
    pub reload_on_rss: Option<u64>,

    /// A request running longer than this many seconds is answered with a
    /// 504 (if nothing was sent yet), logged with its Python stack, and its
    /// thread stopped; a worker whose thread cannot be stopped is replaced.
    /// 0 turns it off.
    #[arg(long, value_name = "SECONDS", value_parser = Whole::<u64>::seconds(0))]
    pub harakiri: Option<u64>,

    /// Seconds a worker replaced because of a stuck request gets for its
    /// other requests before it is killed.
    #[arg(long, default_value_t = 5, value_name = "SECONDS",
          value_parser = Whole::<u64>::seconds(0))]
    pub harakiri_graceful_timeout: u64,

    /// The user the master and workers run as: the master binds its
    /// sockets (and writes --pidfile) first, then drops to it, as uWSGI
    /// does. A name or a number; needs a start as root. As with uWSGI, the
    /// master may then lack the right to remove its unix sockets, pidfile
    /// and FIFO at exit (made by root in a folder that user cannot write):
    /// it logs a warning naming each file left behind; give that user write
    /// access to the folder (e.g. systemd RuntimeDirectory=) or remove them
    /// by hand.
    #[arg(long, value_name = "USER")]
    pub uid: Option<String>,

    /// The group the master and workers run as (with --uid, default: the
    /// user's group); set after binding, like --uid.
    #[arg(long, value_name = "GROUP")]
    pub gid: Option<String>,

    /// Write log lines as JSON objects.
    #[arg(long)]
    pub log_json: bool,

    /// No request log lines.
    #[arg(long)]
    pub disable_logging: bool,

    /// Append the log to this file instead of standard error.
    #[arg(long, alias = "logto2", value_name = "FILE")]
    pub logto: Option<PathBuf>,
}

/// Set by a master that was given its sockets by systemd, so that its
/// configuration (read again on reload) needs no socket option.
pub const ACTIVATED_ENV: &str = "MERCY_SOCKETS_ACTIVATED";

/// Where the WSGI app comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppSource {
    File(PathBuf),
    Module(String),
}

/// How a worker runs the app concurrently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concurrency {
    /// N Python threads call the app.
    Threads(u32),
    /// The gevent hub runs on the main thread; at most `greenlets` requests
    /// at once.
    Gevent {
        greenlets: u32,
        monkey_patch: bool,
        wait_for_hub: bool,
    },
}

/// The protocol a listening socket speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Http,
    Uwsgi,
}

/// A socket to listen on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socket {
    pub address: ListenAddress,
    pub protocol: Protocol,
}

/// Validated settings that every part of mercy reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<Socket>,
    pub max_vars: usize,
    /// Mode bits for unix sockets.
    pub chmod_socket: Option<u32>,
    /// Owner (uid, gid) for unix sockets.
    pub chown_socket: Option<(Option<u32>, Option<u32>)>,
    pub app: AppSource,
    pub callable: String,
    /// The `--mount` prefix that is moved from PATH_INFO to SCRIPT_NAME
    /// (`--manage-script-name`); never empty, never ends with `/`.
    pub script_name: Option<String>,
    pub processes: u32,
    pub concurrency: Concurrency,
    pub reload_mercy: Duration,
    pub spawn_timeout: Duration,
    pub virtualenv: Option<PathBuf>,
    /// The `--pythonpath` folders, glob patterns replaced by their matches.
    pub pythonpath: Vec<PathBuf>,
    /// The `--pythonpath` glob patterns that matched nothing.
    pub pythonpath_unmatched: Vec<PathBuf>,
    pub chdir: Option<PathBuf>,
    pub backlog: u32,
    pub keep_alive: Duration,
    pub socket_timeout: Duration,
    pub post_buffering: usize,
    pub limits: Limits,
    pub proxy_protocol: bool,
    pub env: Vec<(String, String)>,
    pub master_fifo: Option<PathBuf>,
    pub touch_reload: Vec<PathBuf>,
    pub touch_chain_reload: Vec<PathBuf>,
    pub pidfile: Option<PathBuf>,
    /// Worker i is replaced after `max_requests + i * max_requests_delta`.
    pub max_requests: Option<u64>,
    pub max_requests_delta: u64,
    pub max_worker_lifetime: Option<Duration>,
    pub max_worker_lifetime_delta: Duration,
    /// Bytes.
    pub reload_on_rss: Option<u64>,
    pub harakiri: Option<Duration>,
    pub harakiri_graceful_timeout: Duration,
    pub stats: Option<ListenAddress>,
    pub stats_http: bool,
    pub metrics: Option<ListenAddress>,
    /// The user and group to drop to after binding.
    pub run_as: RunAs,
    pub log_json: bool,
    pub request_log: bool,
    pub logto: Option<PathBuf>,
}

/// The user and group the processes run as after the sockets are bound
/// (`--uid`, `--gid`); `None` keeps the one mercy started as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunAs {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// A configuration that cannot be used, with what is wrong in it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no app to serve: give --wsgi-file PATH or --module MODULE")]
    NoApp,
    #[error("--wsgi-file, --module and --mount name more than one app: mercy serves one, so give one of them (run one mercy per app)")]
    TwoApps,
    #[error("--mount {value:?}: {reason}")]
    BadMount { value: String, reason: &'static str },
    #[error(
        "--listen {value} is larger than the kernel's net.core.somaxconn ({somaxconn}), \
         which would silently lower it: raise net.core.somaxconn (sysctl) or lower --listen"
    )]
    BacklogAboveSomaxconn { value: u32, somaxconn: u32 },
    #[error("no socket to serve on: give --http ADDR or --socket ADDR")]
    NoSocket,
    #[error("--gevent and --threads cannot be combined: gevent mode runs requests in greenlets on one thread")]
    GeventWithThreads,
    #[error("{option} must be {rule}, got {value}")]
    OutOfRange {
        option: &'static str,
        rule: &'static str,
        value: String,
    },
    #[error("invalid address {address:?} in {option}: {reason}")]
    BadAddress {
        option: &'static str,
        address: String,
        reason: String,
    },
    #[error("a placeholder is NAME=VALUE, got {0:?}")]
    BadPlaceholder(String),
    #[error("ini file {}{}: {reason}", path.display(), line.map(|n| format!(", line {n}")).unwrap_or_default())]
    Ini {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    #[error("--strict: option --{option} is not supported by mercy ({instead})")]
    Strict {
        option: String,
        instead: &'static str,
    },
    #[error("--strict: environment variable {variable} names no uWSGI or mercy option")]
    StrictEnvironment { variable: String },
    #[error("environment variable {variable}={value}: {reason}")]
    Environment {
        variable: String,
        value: String,
        reason: String,
    },
    #[error("--env expects KEY=VALUE, got {0:?}")]
    BadEnv(String),
    #[error("virtualenv {path}: {reason}")]
    BadVirtualenv { path: PathBuf, reason: String },
    #[error(
        "virtualenv {path} was made by Python {venv_version}, \
         but mercy embeds Python {embedded_version}: recreate it with \
         {embedded_executable} or build mercy against its Python (PYO3_PYTHON)"
    )]
    VirtualenvVersion {
        path: PathBuf,
        venv_version: String,
        embedded_version: &'static str,
        embedded_executable: &'static str,
    },
}

impl Options {
    /// Checks every option and turns them into a [`Config`].
    pub fn validate(self) -> Result<Config, ConfigError> {
        let mount = match self.mount.as_slice() {
            [] => None,
            [one] => Some(Mount::parse(one)?),
            [..] => return Err(ConfigError::TwoApps),
        };
        let (app, mountpoint) = match (self.wsgi_file, self.module, mount) {
            (None, None, None) => return Err(ConfigError::NoApp),
            (Some(path), None, None) => (AppSource::File(path), None),
            (None, Some(module), None) => (AppSource::Module(module), None),
            (None, None, Some(mount)) => (mount.app, mount.mountpoint),
            _ => return Err(ConfigError::TwoApps),
        };
        let script_name = mountpoint.filter(|_| self.manage_script_name);
        // Socket activation passes the sockets instead, and a worker
        // inherits them from the master.
        let sockets_given = std::env::var_os("LISTEN_FDS").is_some()
            || std::env::var_os(ACTIVATED_ENV).is_some()
            || std::env::var_os(crate::control::WORKER_ENV).is_some();
        if self.http.is_empty() && self.socket.is_empty() && !sockets_given {
            return Err(ConfigError::NoSocket);
        }
        let http = self
            .http
            .iter()
            .map(|addr| ("--http", addr, Protocol::Http));
        let uwsgi = self
            .socket
            .iter()
            .map(|addr| ("--socket", addr, Protocol::Uwsgi));
        let listen = http
            .chain(uwsgi)
            .map(|(option, addr, protocol)| {
                ListenAddress::parse(option, addr).map(|address| Socket { address, protocol })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let chmod_socket = self
            .chmod_socket
            .as_deref()
            .map(|mode| {
                u32::from_str_radix(mode, 8)
                    .ok()
                    .filter(|mode| *mode <= 0o7777)
                    .ok_or_else(|| ConfigError::OutOfRange {
                        option: "--chmod-socket",
                        rule: "octal permission bits like 660",
                        value: mode.to_owned(),
                    })
            })
            .transpose()?;
        let chown_socket = self.chown_socket.as_deref().map(parse_owner).transpose()?;
        let run_as = run_as(self.uid.as_deref(), self.gid.as_deref())?;
        if self.buffer_size > 65535 && !self.socket.is_empty() {
            return Err(ConfigError::OutOfRange {
                option: "--buffer-size",
                rule: "at most 65535 with --socket (a uwsgi packet's size is 16 bits)",
                value: self.buffer_size.to_string(),
            });
        }

        let concurrency = match (self.gevent, self.threads) {
            (Some(_), Some(_)) => return Err(ConfigError::GeventWithThreads),
            (Some(greenlets), None) => Concurrency::Gevent {
                greenlets,
                monkey_patch: !self.no_gevent_monkey_patch,
                wait_for_hub: self.gevent_wait_for_hub,
            },
            (None, threads) => Concurrency::Threads(threads.unwrap_or(1)),
        };
        let backlog = backlog(self.listen, somaxconn())?;

        let env = self
            .env
            .iter()
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
                _ => Err(ConfigError::BadEnv(pair.clone())),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let virtualenv = self
            .virtualenv
            .or_else(|| std::env::var_os("VIRTUAL_ENV").map(PathBuf::from));
        if let Some(path) = &virtualenv {
            check_virtualenv(path)?;
        }

        let (pythonpath, pythonpath_unmatched) = pythonpath::expand(self.pythonpath);

        Ok(Config {
            listen,
            max_vars: self.max_vars,
            chmod_socket,
            chown_socket,
            app,
            callable: self.callable,
            script_name,
            processes: self.processes,
            concurrency,
            reload_mercy: Duration::from_secs(self.worker_reload_mercy),
            spawn_timeout: Duration::from_secs(self.spawn_timeout),
            virtualenv,
            pythonpath,
            pythonpath_unmatched,
            chdir: self.chdir,
            backlog,
            keep_alive: Duration::from_secs(self.keep_alive),
            socket_timeout: Duration::from_secs(self.socket_timeout),
            post_buffering: self.post_buffering,
            limits: Limits {
                max_head_bytes: self.buffer_size,
                max_request_line: self.limit_request_line,
                max_header_count: self.limit_request_fields,
                max_field_size: self.limit_request_field_size,
            },
            proxy_protocol: self.enable_proxy_protocol,
            env,
            master_fifo: self.master_fifo,
            touch_reload: self.touch_reload,
            touch_chain_reload: self.touch_chain_reload,
            pidfile: self.pidfile,
            max_requests: self.max_requests.filter(|n| *n > 0),
            max_requests_delta: self.max_requests_delta,
            max_worker_lifetime: self
                .max_worker_lifetime
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            max_worker_lifetime_delta: Duration::from_secs(self.max_worker_lifetime_delta),
            reload_on_rss: self.reload_on_rss.filter(|mb| *mb > 0).map(|mb| mb << 20),
            harakiri: self.harakiri.filter(|s| *s > 0).map(Duration::from_secs),
            harakiri_graceful_timeout: Duration::from_secs(self.harakiri_graceful_timeout),
            stats: self
                .stats
                .as_deref()
                .map(|addr| ListenAddress::parse("--stats", addr))
                .transpose()?,
            stats_http: self.stats_http,
            metrics: self
                .metrics
                .as_deref()
                .map(|addr| ListenAddress::parse("--metrics", addr))
                .transpose()?,
            run_as,
            log_json: self.log_json,
            request_log: !self.disable_logging,
            logto: self.logto,
        })
    }
}

/// The largest `--processes`.
const MAX_PROCESSES: u64 = 4096;
/// The largest `--threads`.
const MAX_THREADS: u64 = 4096;
/// The largest `--gevent`.
const MAX_GREENLETS: u64 = 1_000_000;
/// The largest `--listen`: listen(2) takes an int.
const MAX_BACKLOG: u64 = i32::MAX as u64;
/// The largest `--max-requests` and `--max-requests-delta`: a worker's limit
/// (`max + id * delta`) must fit in 64 bits.
const MAX_REQUESTS: u64 = 1 << 40;
/// The largest `--reload-on-rss`, in MB (16 TiB); it is counted in bytes.
const MAX_RSS_MB: u64 = 1 << 24;
/// What a request limit of 0 means.
const NO_LIMIT: &str = "0: no limit but --buffer-size";
/// The largest `--buffer-size`, and so the largest byte limit within a head.
const MAX_HEAD_BYTES: u64 = 1 << 24;
/// The largest `--post-buffering`: a body held in memory per request.
const MAX_POST_BUFFERING: u64 = 1 << 24;
/// The largest `--keep-alive` and `--socket-timeout`, in seconds.
const MAX_CONNECTION_WAIT: u64 = 3600;
/// The largest `--limit-request-fields`.
const MAX_REQUEST_FIELDS: u64 = 32768;
/// The shortest request line a head can start with: `A / HTTP/1.1` and CRLF.
const SHORTEST_REQUEST_LINE: u64 = 14;
/// The shortest header line: `a:` and CRLF.
const SHORTEST_FIELD_LINE: u64 = 4;

impl Config {
    /// Request limits that no request can ever reach because `--buffer-size`
    /// ends every head first, one sentence each, for a warning at start.
    /// Only limits the operator set, or all of them when `--buffer-size` was
    /// set, are named: mercy's defaults are not the operator's to fix.
    pub fn unreachable_limits(&self, set: impl Fn(&str) -> bool) -> Vec<String> {
        let limits = &self.limits;
        let head = limits.max_head_bytes as u64;
        let buffer_set = set("buffer-size");
        let mention = |option: &str| buffer_set || set(option);
        let mut unreachable = Vec::new();

        // Each limit is hit by the first byte past it, which must fit the head.
        let line = limits.max_request_line as u64;
        if line != 0 && line >= head && mention("limit-request-line") {
            unreachable.push(format!(
                "--limit-request-line {line} can never be reached: --buffer-size {head} \
                 ends every head first, so a long request line gets 431, not 414"
            ));
        }
        // A header line is counted with its CRLF, after the request line.
        let field = limits.max_field_size as u64;
        let longest_field = (head + 2).saturating_sub(SHORTEST_REQUEST_LINE);
        if field != 0 && field >= longest_field && mention("limit-request-field-size") {
            unreachable.push(format!(
                "--limit-request-field-size {field} can never be reached: with --buffer-size \
                 {head} no header line longer than {longest_field} bytes fits in a head, so a \
                 long header line gets 431 for the head's size"
            ));
        }
        let fields = limits.max_header_count as u64;
        let fields_in_head = head.saturating_sub(SHORTEST_REQUEST_LINE) / SHORTEST_FIELD_LINE;
        if fields != 0 && fields >= fields_in_head && mention("limit-request-fields") {
            unreachable.push(format!(
                "--limit-request-fields {fields} can never be reached: --buffer-size {head} \
                 holds at most {fields_in_head} header lines"
            ));
        }
        unreachable
    }
}

/// The options on a command line as `(name, value)` pairs in order, the
/// way uWSGI exposes them to apps: `--name value` and `--name=value` have a
/// value, a flag has none. The app-facing `uwsgi.opt` is built from this.
pub fn raw_options(args: impl IntoIterator<Item = String>) -> Vec<(String, Option<String>)> {
    use clap::CommandFactory;
    let command = Options::command();
    let takes_value = |name: &str| {
        let own = command.get_arguments().find(|arg| {
            arg.get_long() == Some(name)
                || arg
                    .get_all_aliases()
                    .is_some_and(|aliases| aliases.contains(&name))
        });
        match own {
            Some(arg) => arg.get_action().takes_values(),
            None => compat::treatment(name).is_some() && compat::takes_value(name),
        }
    };
    let mut options = Vec::new();
    let mut args = args.into_iter().peekable();
    while let Some(arg) = args.next() {
        let Some(option) = arg.strip_prefix("--") else {
            continue;
        };
        match option.split_once('=') {
            Some((name, value)) => options.push((name.to_owned(), Some(value.to_owned()))),
            None if takes_value(option) => {
                let value = args.next_if(|next| !next.starts_with("--"));
                options.push((option.to_owned(), value));
            }
            None => options.push((option.to_owned(), None)),
        }
    }
    options
}

/// The Markdown table of every uWSGI option and how mercy treats it, with
/// mercy's own options (docs/uwsgi-options.md).
pub fn options_table() -> String {
    use clap::CommandFactory;
    let mut command = Options::command();
    command.build();
    let own: Vec<compat::OwnOption> = command
        .get_arguments()
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| {
            let mut names = vec![arg.get_long()?.to_owned()];
            names.extend(
                arg.get_all_aliases()
                    .unwrap_or_default()
                    .into_iter()
                    .map(str::to_owned),
            );
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            Some(compat::OwnOption {
                names,
                help: help.replace('\n', " "),
            })
        })
        .collect();
    compat::markdown_table(&own)
}

/// An app under a URL prefix: `--mount /prefix=app.py`.
struct Mount {
    /// The prefix without its trailing `/`; `None` for `/` itself.
    mountpoint: Option<String>,
    app: AppSource,
}

impl Mount {
    /// As uWSGI's Python loader reads it: a `.py` or `.wsgi` file, or
    /// `module:callable`.
    fn parse(value: &str) -> Result<Self, ConfigError> {
        let bad = |reason| ConfigError::BadMount {
            value: value.to_owned(),
            reason,
        };
        let (prefix, app) = value
            .split_once('=')
            .ok_or_else(|| bad("expected MOUNTPOINT=APP, like /app=app.py"))?;
        if !prefix.starts_with('/') {
            return Err(bad("the mountpoint must be a URL path starting with /"));
        }
        let app = if app.ends_with(".py") || app.ends_with(".wsgi") {
            AppSource::File(PathBuf::from(app))
        } else if app.contains(':') {
            AppSource::Module(app.to_owned())
        } else {
            return Err(bad(
                "the app must be a .py or .wsgi file, or module:callable",
            ));
        };
        let prefix = prefix.trim_end_matches('/');
        Ok(Self {
            mountpoint: (!prefix.is_empty()).then(|| prefix.to_owned()),
            app,
        })
    }
}

/// The listen backlog: `--listen` if given (at least 1, at most the
/// kernel's somaxconn, which would lower it silently, as uWSGI refuses
/// too), else 1024 or somaxconn if lower.
fn backlog(listen: Option<u32>, somaxconn: Option<u32>) -> Result<u32, ConfigError> {
    const DEFAULT: u32 = 1024;
    let Some(value) = listen else {
        return Ok(somaxconn.map_or(DEFAULT, |max| DEFAULT.min(max.max(1))));
    };
    match somaxconn {
        Some(somaxconn) if value > somaxconn => {
            Err(ConfigError::BacklogAboveSomaxconn { value, somaxconn })
        }
        _ => Ok(value),
    }
}

/// The kernel's largest listen backlog (Linux), if it can be read.
fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `user`, `user:group`, `:group`, or numeric ids, to (uid, gid).
fn parse_owner(text: &str) -> Result<(Option<u32>, Option<u32>), ConfigError> {
    let bad = |reason: String| ConfigError::OutOfRange {
        option: "--chown-socket",
        rule: "an existing user[:group]",
        value: format!("{text} ({reason})"),
    };
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let uid = match user {
        "" => None,
        name => Some(match name.parse::<u32>() {
            Ok(id) => id,
            Err(_) => nix::unistd::User::from_name(name)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad(format!("no user {name}")))?
                .uid
                .as_raw(),
        }),
    };
    let gid = match group {
        None | Some("") => None,
        Some(name) => Some(match name.parse::<u32>() {
            Ok(id) => id,
            Err(_) => nix::unistd::Group::from_name(name)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| bad(format!("no group {name}")))?
                .gid
                .as_raw(),
        }),
    };
    Ok((uid, gid))
}

/// `--uid` and `--gid` as ids; with --uid alone, the group is the user's.
fn run_as(uid: Option<&str>, gid: Option<&str>) -> Result<RunAs, ConfigError> {
    let bad = |option: &'static str, value: &str, reason: String| ConfigError::OutOfRange {
        option,
        rule: "an existing user (--uid) or group (--gid), by name or number",
        value: format!("{value} ({reason})"),
    };
    let user = match uid {
        None => None,
        Some(text) => {
            let found = match text.parse::<u32>() {
                Ok(id) => nix::unistd::User::from_uid(id.into()),
                Err(_) => nix::unistd::User::from_name(text),
            };
            let user = found
                .map_err(|e| bad("--uid", text, e.to_string()))?
                .ok_or_else(|| bad("--uid", text, "no such user".to_owned()))?;
            Some(user)
        }
    };
    let gid = match gid {
        None => user.as_ref().map(|user| user.gid.as_raw()),
        Some(text) => Some(match text.parse::<u32>() {
            Ok(id) => id,
            Err(_) => nix::unistd::Group::from_name(text)
                .map_err(|e| bad("--gid", text, e.to_string()))?
                .ok_or_else(|| bad("--gid", text, "no such group".to_owned()))?
                .gid
                .as_raw(),
        }),
    };
    Ok(RunAs {
        uid: user.map(|user| user.uid.as_raw()),
        gid,
    })
}

/// The Python version mercy was built against and embeds.
pub const EMBEDDED_PYTHON_VERSION: &str = env!("MERCY_PYTHON_VERSION");
/// The interpreter mercy was built against.
pub const EMBEDDED_PYTHON_EXECUTABLE: &str = env!("MERCY_PYTHON_EXECUTABLE");
/// The libpython the binary loads.
pub const EMBEDDED_PYTHON_LIBRARY: &str = env!("MERCY_PYTHON_LIBRARY");
/// `sys.base_prefix` of the embedded interpreter: its standard library.
pub const EMBEDDED_PYTHON_HOME: &str = env!("MERCY_PYTHON_HOME");

/// Refuses a virtualenv that is missing or was made by another major.minor
/// Python than the embedded one: its compiled packages would not load.
fn check_virtualenv(path: &Path) -> Result<(), ConfigError> {
    let bad = |reason: String| ConfigError::BadVirtualenv {
        path: path.to_owned(),
        reason,
    };
    let cfg_path = path.join("pyvenv.cfg");
    let text = std::fs::read_to_string(&cfg_path)
        .map_err(|error| bad(format!("cannot read {}: {error}", cfg_path.display())))?;
    let venv_version = text
        .lines()
        .filter_map(|line| line.split_once('='))
        .find(|(key, _)| matches!(key.trim(), "version" | "version_info"))
        .map(|(_, value)| value.trim().to_owned())
        .ok_or_else(|| bad(format!("{} names no Python version", cfg_path.display())))?;
    if major_minor(&venv_version) != major_minor(EMBEDDED_PYTHON_VERSION) {
        return Err(ConfigError::VirtualenvVersion {
            path: path.to_owned(),
            venv_version,
            embedded_version: EMBEDDED_PYTHON_VERSION,
            embedded_executable: EMBEDDED_PYTHON_EXECUTABLE,
        });
    }
    Ok(())
}

fn major_minor(version: &str) -> &str {
    let mut dots = version.match_indices('.');
    match (dots.next(), dots.next()) {
        (Some(_), Some((second, _))) => &version[..second],
        _ => version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_minor_drops_the_patch_level() {
        assert_eq!(major_minor("3.11.7"), "3.11");
        assert_eq!(major_minor("3.9"), "3.9");
    }

    #[test]
    fn an_app_and_a_socket_are_required() {
        let options = Options::parse_from(["mercy", "--http", ":8000"]);
        assert!(matches!(options.validate(), Err(ConfigError::NoApp)));
        let options = Options::parse_from(["mercy", "--wsgi-file", "app.py"]);
        assert!(matches!(options.validate(), Err(ConfigError::NoSocket)));
    }

    #[test]
    fn raw_options_pair_names_with_values() {
        let args = [
            "--http",
            ":80",
            "--master",
            "--env=A=1",
            "--env",
            "B=2",
            "--log-json",
        ];
        let options = raw_options(args.map(String::from));
        let expected = [
            ("http", Some(":80")),
            ("master", None),
            ("env", Some("A=1")),
            ("env", Some("B=2")),
            ("log-json", None),
        ];
        let expected: Vec<_> = expected
            .iter()
            .map(|(name, value)| (name.to_string(), value.map(str::to_owned)))
            .collect();
        assert_eq!(options, expected);
    }

    fn options(extra: &[&str]) -> Options {
        let base = ["mercy", "--http", ":8000", "--wsgi-file", "a.py"];
        Options::parse_from(base.iter().chain(extra))
    }

    /// The message an option's value is refused with, at parse time.
    fn refused(option: &str, value: &str) -> String {
        let base = ["mercy", "--http", ":8000", "--wsgi-file", "a.py"];
        let argument = format!("{option}={value}");
        let error = Options::try_parse_from(base.iter().copied().chain([argument.as_str()]))
            .expect_err(option)
            .to_string();
        error.lines().next().expect("one line").to_owned()
    }

    #[test]
    fn numbers_out_of_range_are_refused_with_the_option_and_its_range() {
        let cases = [
            (
                "--post-buffering",
                "16777217",
                "between 0 and 16777216 bytes",
            ),
            ("--keep-alive", "3601", "between 0 and 3600 seconds"),
            ("--socket-timeout", "0", "between 1 and 3600"),
            ("--limit-request-line", "16777217", "between 0 and 16777216"),
            ("--limit-request-fields", "32769", "between 0 and 32768"),
            (
                "--limit-request-field-size",
                "18446744073709551616",
                "between 0",
            ),
            ("--processes", "99999999999", "between 1 and 4096"),
            ("--processes", "0", "between 1 and 4096"),
            ("--threads", "4097", "between 1 and 4096"),
            ("--gevent", "0", "between 1 and 1000000"),
            ("--harakiri", "1e20", "between 0 and 31536000 seconds"),
            (
                "--harakiri",
                "18446744073709551615",
                "between 0 and 31536000",
            ),
            (
                "--max-worker-lifetime",
                "31536001",
                "between 0 and 31536000",
            ),
            ("--max-worker-lifetime-delta", "99999999999", "between 0"),
            ("--worker-reload-mercy", "0", "between 1 and 31536000"),
            ("--spawn-timeout", "-1", "between 1 and 31536000"),
            ("--harakiri-graceful-timeout", "1.5", "between 0"),
            (
                "--reload-on-rss",
                "17592186044416",
                "between 0 and 16777216 MB",
            ),
            ("--max-requests", "18446744073709551615", "between 0 and"),
            ("--max-requests-delta", "1099511627777", "between 0 and"),
            ("--listen", "4294967296", "between 1 and 2147483647"),
            ("--max-vars", "0", "between 1 and 32768"),
            ("--buffer-size", "63", "between 64 and 16777216 bytes"),
        ];
        for (option, value, range) in cases {
            let message = refused(option, value);
            let expected = format!("error: {option} must be a whole number {range}");
            assert!(message.starts_with(&expected), "{message}");
            assert!(message.ends_with(&format!("got {value:?}")), "{message}");
        }
        let edges = [
            "--post-buffering",
            "0",
            "--keep-alive",
            "0",
            "--harakiri",
            "31536000",
            "--processes",
            "4096",
        ];
        assert!(options(&edges).validate().is_ok());
    }

    #[test]
    fn limits_the_buffer_size_hides_are_named_when_set() {
        let config = options(&["-b", "1024", "--limit-request-line", "2048"])
            .validate()
            .expect("valid");
        let nothing_set = config.unreachable_limits(|_| false);
        assert!(nothing_set.is_empty(), "{nothing_set:?}");
        let warnings = config.unreachable_limits(|option| option == "limit-request-line");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].starts_with("--limit-request-line 2048"));

        // With the buffer size set, every limit it hides is named: here the
        // default field size (8190) too, but not the header count (100).
        let all = config.unreachable_limits(|option| option == "buffer-size");
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[1].contains("no header line longer than 1012 bytes"));

        // The largest limits a head still reaches are not named.
        let reachable = options(&["-b", "1024", "--limit-request-line", "1023"])
            .validate()
            .expect("valid");
        let limits = Limits {
            max_field_size: 1011,
            max_header_count: 251,
            ..reachable.limits
        };
        let reachable = Config {
            limits,
            ..reachable
        };
        assert!(reachable.unreachable_limits(|_| true).is_empty());
    }
}
