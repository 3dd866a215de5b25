//! `--stats` (uWSGI's JSON document, so `uwsgitop` works), `--stats-http`,
//! and `--metrics` (Prometheus text). The master answers from its own
//! table; workers send their counters over the control channel.

use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

use super::workers::WorkerState;
use super::Master;
use crate::config::{ListenAddress, Protocol};

/// A socket the master answers stats on.
pub enum StatsListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

/// A connected stats client.
pub trait StatsStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> StatsStream for T {}

impl StatsListener {
    pub async fn bind(address: &ListenAddress) -> std::io::Result<Self> {
        match address {
            ListenAddress::Tcp(addr) => Ok(Self::Tcp(TcpListener::bind(addr).await?)),
            ListenAddress::Unix(path) => {
                super::sockets::clear_unix_path(path)?;
                Ok(Self::Unix(UnixListener::bind(path)?))
            }
        }
    }

    /// The socket file of a unix listener, removed when the master exits.
    pub fn file(&self) -> Option<super::vacuum::OwnedFile> {
        match self {
            Self::Tcp(_) => None,
            Self::Unix(listener) => {
                let address = listener.local_addr().ok()?;
                super::vacuum::OwnedFile::record(address.as_pathname()?)
            }
        }
    }

    pub async fn accept(&self) -> std::io::Result<Box<dyn StatsStream>> {
        match self {
            Self::Tcp(listener) => Ok(Box::new(listener.accept().await?.0)),
            Self::Unix(listener) => Ok(Box::new(listener.accept().await?.0)),
        }
    }
}

/// Accepts on an optional listener; never resolves without one.
pub async fn accept_optional(
    listener: Option<&StatsListener>,
) -> std::io::Result<Box<dyn StatsStream>> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// How a stats answer is framed.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    /// The bare JSON document, then close (uWSGI's `--stats`).
    Raw,
    /// An HTTP/1.0 response (`--stats-http`, `--metrics`).
    Http { content_type: &'static str },
}

/// Writes one answer and closes. With HTTP framing the request is read
/// first (briefly, and ignored).
pub async fn answer(mut stream: Box<dyn StatsStream>, body: String, framing: Framing) {
    if let Framing::Http { content_type } = framing {
        let mut request = [0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut request)).await;
        let head = format!(
            "HTTP/1.0 200 OK\r\nConnection: close\r\nAccess-Control-Allow-Origin: *\r\n\
             Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = stream.write_all(head.as_bytes()).await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(body.as_bytes())).await;
    let _ = stream.shutdown().await;
}

fn unix_time(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// (queued connections, queue size) of a listening TCP socket.
fn listen_queue(fd: i32) -> (u32, u32) {
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len`
    // bytes into it and the result is checked before it is read.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let result = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast::<libc::c_void>(),
            &mut len,
        );
        if result == 0 {
            (info.tcpi_unacked, info.tcpi_sacked)
        } else {
            (0, 0)
        }
    }
}

/// Resident and virtual size of a process, in bytes.
pub(super) fn memory(pid: u32) -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/statm")) else {
        return (0, 0);
    };
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut fields = text
        .split_whitespace()
        .map(|f| f.parse::<u64>().unwrap_or(0));
    let vsz = fields.next().unwrap_or(0) * page;
    let rss = fields.next().unwrap_or(0) * page;
    (rss, vsz)
}

impl Master {
    /// uWSGI's stats document, with mercy's own fields added.
    pub(super) fn stats_document(&self) -> Value {
        let mut queue_total = 0;
        let sockets: Vec<Value> = self
            .listeners
            .iter()
            .zip(self.addresses.iter().zip(&self.protocols))
            .map(|(fd, (address, protocol))| {
                let (queue, max_queue) = match address {
                    ListenAddress::Tcp(_) => listen_queue(fd.as_raw_fd()),
                    ListenAddress::Unix(_) => (0, self.config.backlog),
                };
                queue_total += queue;
                json!({
                    "name": address.to_string(),
                    "proto": match protocol { Protocol::Http => "http", Protocol::Uwsgi => "uwsgi" },
                    "queue": queue,
                    "max_queue": max_queue,
                    "shared": 0,
                    "can_offload": 0,
                })
            })
            .collect();

        let mut workers: Vec<Value> = self
            .workers
            .iter()
            .map(|worker| {
                let (rss, vsz) = memory(worker.pid);
                let history = self.history(worker.id);
                let stats = &worker.stats;
                let status = match worker.state {
                    WorkerState::Starting { .. } => "starting",
                    WorkerState::Ready if stats.cores.iter().any(|c| c.in_request) => "busy",
                    WorkerState::Ready => "idle",
                    WorkerState::Retiring { .. } | WorkerState::Expired { .. } => "retiring",
                    WorkerState::Killed => "killed",
                };
                let cores: Vec<Value> = stats
                    .cores
                    .iter()
                    .enumerate()
                    .map(|(id, core)| {
                        json!({
                            "id": id,
                            "requests": core.requests,
                            "static_requests": 0,
                            "routed_requests": 0,
                            "offloaded_requests": 0,
                            "write_errors": 0,
                            "read_errors": 0,
                            "in_request": u8::from(core.in_request),
                            "vars": [],
                            "req_info": {},
                        })
                    })
                    .collect();
                json!({
                    "id": worker.id,
                    "pid": worker.pid,
                    "generation": worker.generation,
                    "accepting": u8::from(worker.state == WorkerState::Ready),
                    "requests": history.requests + stats.requests,
                    "delta_requests": stats.requests,
                    "exceptions": history.exceptions + stats.exceptions,
                    "harakiri_count": history.harakiri,
                    "signals": 0,
                    "signal_queue": 0,
                    "status": status,
                    "rss": rss,
                    "vsz": vsz,
                    "running_time": history.running_time_us + stats.running_time_us,
                    "last_spawn": unix_time(worker.spawned_at),
                    "respawn_count": history.respawns,
                    "tx": history.tx + stats.tx,
                    "avg_rt": stats.avg_rt_us,
                    "apps": [],
                    "cores": cores,
                })
            })
            .collect();
        workers.sort_by_key(|w| (w["id"].as_u64(), w["generation"].as_u64()));

        let cwd = std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        json!({
            "version": format!("{}-mercy", env!("CARGO_PKG_VERSION")),
            "listen_queue": queue_total,
            "listen_queue_errors": 0,
            "signal_queue": 0,
            "load": queue_total,
            "pid": std::process::id(),
            "uid": nix::unistd::getuid().as_raw(),
            "gid": nix::unistd::getgid().as_raw(),
            "cwd": cwd,
            "locks": [],
            "sockets": sockets,
            "workers": workers,
            "generation": self.generation,
            "phase": format!("{:?}", self.phase),
            "last_reload": self.last_reload.as_ref().map(|reload| json!({
                "result": reload.result,
                "error": reload.error,
                "at": unix_time(reload.at),
                "generation": reload.generation,
            })),
            "forced_kills": self.killed_count,
        })
    }

    /// The same figures in Prometheus' text format.
    pub(super) fn metrics_text(&self) -> String {
        let document = self.stats_document();
        let mut out = Exposition::default();
        let top = |key: &str| document[key].as_u64().unwrap_or(0);

        out.family(
            "listen_queue",
            "Connections waiting in the listen queues.",
            "gauge",
            vec![(String::new(), top("listen_queue"))],
        );
        out.family(
            "generation",
            "The generation of workers that serves.",
            "gauge",
            vec![(String::new(), top("generation"))],
        );
        out.family(
            "forced_kills_total",
            "Workers killed after their deadline.",
            "counter",
            vec![(String::new(), top("forced_kills"))],
        );
        self.last_reload_metrics(&mut out);

        let workers = document["workers"].as_array().cloned().unwrap_or_default();
        worker_metrics(&mut out, &workers);
        core_metrics(&mut out, &workers);
        out.text
    }

    /// The last reload's result and time; no samples before the first.
    fn last_reload_metrics(&self, out: &mut Exposition) {
        let reload = self.last_reload.as_ref();
        let sample = |value: u64| reload.map(|_| (String::new(), value)).into_iter().collect();
        out.family(
            "last_reload_success",
            "1 if the last reload succeeded, 0 if it failed.",
            "gauge",
            sample(u64::from(reload.is_some_and(|r| r.result == "done"))),
        );
        out.family(
            "last_reload_timestamp_seconds",
            "When the last reload ended (Unix time).",
            "gauge",
            sample(reload.map_or(0, |r| unix_time(r.at))),
        );
        out.family(
            "last_reload_generation",
            "The generation the last reload started.",
            "gauge",
            sample(reload.map_or(0, |r| r.generation)),
        );
    }
}

/// The worker statuses of the stats document, for `mercy_worker_status`.
const STATUSES: [&str; 5] = ["starting", "idle", "busy", "retiring", "killed"];

/// Per-worker families: one sample per worker process.
fn worker_metrics(out: &mut Exposition, workers: &[Value]) {
    let per_worker = |key: &str| -> Vec<(String, u64)> {
        workers
            .iter()
            .map(|w| (worker_labels(w, ""), w[key].as_u64().unwrap_or(0)))
            .collect()
    };
    let families: [(&str, &str, &str, &str); 11] = [
        (
            "worker_requests_total",
            "Requests served by the worker slot.",
            "counter",
            "requests",
        ),
        (
            "worker_exceptions_total",
            "Exceptions the app raised.",
            "counter",
            "exceptions",
        ),
        (
            "worker_tx_bytes_total",
            "Response bytes sent.",
            "counter",
            "tx",
        ),
        (
            "worker_avg_rt_microseconds",
            "Average request time.",
            "gauge",
            "avg_rt",
        ),
        ("worker_rss_bytes", "Resident memory.", "gauge", "rss"),
        ("worker_vsz_bytes", "Virtual memory size.", "gauge", "vsz"),
        (
            "worker_running_time_microseconds_total",
            "Time spent running requests.",
            "counter",
            "running_time",
        ),
        (
            "worker_last_spawn_timestamp_seconds",
            "When the worker was started (Unix time).",
            "gauge",
            "last_spawn",
        ),
        (
            "worker_respawns_total",
            "Respawns of the worker slot.",
            "counter",
            "respawn_count",
        ),
        (
            "worker_harakiri_total",
            "Requests past --harakiri.",
            "counter",
            "harakiri_count",
        ),
        (
            "worker_accepting",
            "1 while the worker accepts connections.",
            "gauge",
            "accepting",
        ),
    ];
    for (name, help, kind, key) in families {
        out.family(name, help, kind, per_worker(key));
    }
    out.family(
        "worker_cores",
        "Threads or greenlets that run requests.",
        "gauge",
        count_cores(workers, |_| true),
    );
    out.family(
        "worker_busy_cores",
        "Threads or greenlets running a request now.",
        "gauge",
        count_cores(workers, |core| core["in_request"].as_u64() == Some(1)),
    );
    let statuses = workers
        .iter()
        .flat_map(|w| {
            STATUSES.iter().map(move |status| {
                let labels = worker_labels(w, &format!(",status=\"{status}\""));
                (labels, u64::from(w["status"].as_str() == Some(status)))
            })
        })
        .collect();
    out.family(
        "worker_status",
        "The worker's status (1 for the current one).",
        "gauge",
        statuses,
    );
}

/// Per-core families: one sample per thread or greenlet slot of a worker.
fn core_metrics(out: &mut Exposition, workers: &[Value]) {
    let per_core = |key: &str| -> Vec<(String, u64)> {
        workers
            .iter()
            .flat_map(|w| {
                let cores = w["cores"].as_array().cloned().unwrap_or_default();
                cores.into_iter().map(move |core| {
                    let labels = worker_labels(w, &format!(",core=\"{}\"", core["id"]));
                    (labels, core[key].as_u64().unwrap_or(0))
                })
            })
            .collect()
    };
    out.family(
        "core_requests_total",
        "Requests run by the worker's core.",
        "counter",
        per_core("requests"),
    );
    out.family(
        "core_in_request",
        "1 while the core runs a request.",
        "gauge",
        per_core("in_request"),
    );
}

/// How many cores of each worker match.
fn count_cores(workers: &[Value], keep: impl Fn(&Value) -> bool) -> Vec<(String, u64)> {
    workers
        .iter()
        .map(|w| {
            let cores = w["cores"]
                .as_array()
                .map_or(0, |cores| cores.iter().filter(|core| keep(core)).count());
            (worker_labels(w, ""), cores as u64)
        })
        .collect()
}

/// `{worker="1",pid="123",generation="2"...}`; `extra` starts with a comma.
fn worker_labels(worker: &Value, extra: &str) -> String {
    format!(
        "{{worker=\"{}\",pid=\"{}\",generation=\"{}\"{extra}}}",
        worker["id"], worker["pid"], worker["generation"]
    )
}

/// Prometheus' text format, family by family.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, help: &str, kind: &str, rows: Vec<(String, u64)>) {
        use std::fmt::Write;
        let text = &mut self.text;
        let _ = write!(
            text,
            "# HELP mercy_{name} {help}\n# TYPE mercy_{name} {kind}\n"
        );
        for (labels, value) in rows {
            let _ = writeln!(text, "mercy_{name}{labels} {value}");
        }
    }
}
