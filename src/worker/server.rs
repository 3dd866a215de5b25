//! The worker's network side on tokio: accept loops on the inherited
//! sockets, one task per connection. No Python here.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, Socket};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::runtime::Runtime;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use super::connection;
use super::context::WorkerContext;
use crate::config::Protocol;
use crate::control::{RetireMode, FIRST_INHERITED_FD};
use crate::wsgi::{Endpoints, Request};

/// How often a worker whose threads are all busy looks again, in case a
/// wake-up was missed.
const IDLE_RECHECK: Duration = Duration::from_millis(50);

/// The worker's I/O runtime and its accept loops.
pub struct Server {
    pub runtime: Runtime,
    accept_loops: Vec<JoinHandle<()>>,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Server {
    /// Starts accepting on every inherited socket.
    pub fn start(
        context: &Arc<WorkerContext>,
        jobs: flume::Sender<Request>,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("mercy-io")
            .enable_all()
            .build()?;
        let mut accept_loops = Vec::new();
        for (index, protocol) in context.spec.listeners.iter().enumerate() {
            let fd = FIRST_INHERITED_FD + index as i32;
            // SAFETY: the master placed listening socket number `index` on
            // this descriptor before exec, and nothing else in the worker
            // owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let listener = runtime.block_on(async { adopt(owned) })?;
            let context = context.clone();
            let jobs = jobs.clone();
            let protocol = *protocol;
            accept_loops.push(runtime.spawn(accept_loop(listener, protocol, context, jobs)));
        }
        Ok(Self {
            runtime,
            accept_loops,
        })
    }

    /// Hands the accept loops to a caller that waits for them itself.
    pub fn take_accept_loops(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.accept_loops)
    }

    /// Waits until every accept loop has stopped (and, for a graceful
    /// shutdown, taken what the kernel had queued).
    pub fn wait_accept_loops_done(&mut self) {
        let loops = std::mem::take(&mut self.accept_loops);
        self.runtime.block_on(async {
            for handle in loops {
                let _ = handle.await;
            }
        });
    }

    /// Waits until no client connection is open.
    pub fn wait_connections_closed(&self, context: &WorkerContext) {
        let mut connections = context.watch_connections();
        self.runtime.block_on(async {
            let _ = connections.wait_for(|count| *count == 0).await;
        });
    }
}

fn adopt(fd: OwnedFd) -> std::io::Result<Listener> {
    let socket = Socket::from(fd);
    socket.set_nonblocking(true)?;
    if socket.local_addr()?.is_unix() {
        let std_listener = std::os::unix::net::UnixListener::from(OwnedFd::from(socket));
        Ok(Listener::Unix(UnixListener::from_std(std_listener)?))
    } else {
        let std_listener = std::net::TcpListener::from(socket);
        Ok(Listener::Tcp(TcpListener::from_std(std_listener)?))
    }
}

async fn accept_loop(
    listener: Listener,
    protocol: Protocol,
    context: Arc<WorkerContext>,
    jobs: flume::Sender<Request>,
) {
    let local = local_endpoints(&listener);
    let mut retire = context.watch_retire();
    loop {
        // A worker whose threads (or greenlets) are all busy leaves new
        // connections in the kernel's queue for a worker that is free.
        while !context.jobs.is_empty() && !context.is_retiring() {
            let _ = tokio::time::timeout(IDLE_RECHECK, context.job_taken.notified()).await;
        }
        tokio::select! {
            biased;
            () = retiring(&mut retire) => break,
            accepted = accept(&listener) => match accepted {
                Ok(stream) => serve(stream, protocol, &local, &context, &jobs),
                Err(error) => {
                    // Out of descriptors or memory: back off instead of
                    // spinning; the connection stays queued.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    let mode = context.retire_mode();
    if mode == Some(RetireMode::Shutdown) {
        drain_queue(&listener, protocol, &local, &context, &jobs);
    }
    debug!("accept loop stopped");
}

/// On a graceful shutdown, takes every connection the kernel has already
/// queued, so none is reset when the socket closes.
fn drain_queue(
    listener: &Listener,
    protocol: Protocol,
    local: &Endpoints,
    context: &Arc<WorkerContext>,
    jobs: &flume::Sender<Request>,
) {
    loop {
        let accepted = match listener {
            Listener::Tcp(l) => SockRef::from(l).accept(),
            Listener::Unix(l) => SockRef::from(l).accept(),
        };
        let Ok((socket, _)) = accepted else {
            return;
        };
        let stream = match listener {
            Listener::Tcp(_) => socket
                .set_nonblocking(true)
                .and_then(|()| TcpStream::from_std(socket.into()))
                .map(|s| {
                    let peer = s.peer_addr().ok();
                    Stream::Tcp(s, peer)
                }),
            Listener::Unix(_) => socket
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(socket.into()))
                .map(Stream::Unix),
        };
        match stream {
            Ok(stream) => serve(stream, protocol, local, context, jobs),
            Err(error) => warn!(%error, "cannot adopt a queued connection"),
        }
    }
}

/// Resolves once the worker is retiring.
async fn retiring(retire: &mut tokio::sync::watch::Receiver<Option<RetireMode>>) {
    let _ = retire.wait_for(Option::is_some).await;
}

enum Stream {
    Tcp(TcpStream, Option<SocketAddr>),
    Unix(UnixStream),
}

async fn accept(listener: &Listener) -> std::io::Result<Stream> {
    match listener {
        Listener::Tcp(l) => {
            let (stream, peer) = l.accept().await?;
            Ok(Stream::Tcp(stream, Some(peer)))
        }
        Listener::Unix(l) => Ok(Stream::Unix(l.accept().await?.0)),
    }
}

fn serve(
    stream: Stream,
    protocol: Protocol,
    local: &Endpoints,
    context: &Arc<WorkerContext>,
    jobs: &flume::Sender<Request>,
) {
    let guard = context.open_connection();
    let context = context.clone();
    let jobs = jobs.clone();
    let mut endpoints = local.clone();
    match stream {
        Stream::Tcp(stream, peer) => {
            let _ = stream.set_nodelay(true);
            endpoints.remote = peer;
            tokio::spawn(async move {
                serve_protocol(stream, protocol, endpoints, context, jobs).await;
                drop(guard);
            });
        }
        Stream::Unix(stream) => {
            tokio::spawn(async move {
                serve_protocol(stream, protocol, endpoints, context, jobs).await;
                drop(guard);
            });
        }
    }
}

async fn serve_protocol<S>(
    stream: S,
    protocol: Protocol,
    endpoints: Endpoints,
    context: Arc<WorkerContext>,
    jobs: flume::Sender<Request>,
) where
    S: super::transport::Transport,
{
    match protocol {
        Protocol::Http => connection::serve(stream, endpoints, context, jobs).await,
        Protocol::Uwsgi => connection::serve_uwsgi(stream, endpoints, context, jobs).await,
    }
}

fn local_endpoints(listener: &Listener) -> Endpoints {
    match listener {
        Listener::Tcp(l) => {
            let local = l.local_addr().ok();
            Endpoints {
                remote: None,
                server_name: local.map(|a| a.ip().to_string()).unwrap_or_default(),
                server_port: local.map(|a| a.port().to_string()).unwrap_or_default(),
            }
        }
        Listener::Unix(l) => Endpoints {
            remote: None,
            server_name: l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_default(),
            server_port: String::new(),
        },
    }
}
