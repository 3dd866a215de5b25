//! The client sockets a connection runs on, and sending a file region to
//! one with sendfile(2) (for `wsgi.file_wrapper`).

use std::future::Future;
use std::os::fd::{AsRawFd, OwnedFd};

use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

/// A connected client socket.
pub trait Transport: AsyncRead + AsyncWrite + Unpin {
    /// Sends up to `length` bytes of `file` from `offset`; fewer only when
    /// the file ends first. Returns how many were sent.
    fn send_file(
        &mut self,
        file: &OwnedFd,
        offset: u64,
        length: u64,
    ) -> impl Future<Output = std::io::Result<u64>>;

    /// Whether the client closed or reset the connection, as far as the
    /// kernel knows now: one poll(2) that never waits. Bytes the client
    /// sent and that are still unread (a pipelined request) do not hide a
    /// close that follows them.
    fn peer_gone(&self) -> bool;
}

/// What the sendfile loop needs of a tokio socket.
trait WriteReadiness: AsRawFd {
    fn ready(&self) -> impl Future<Output = std::io::Result<()>>;
    fn attempt(&self, op: impl FnOnce() -> std::io::Result<usize>) -> std::io::Result<usize>;
}

impl WriteReadiness for TcpStream {
    async fn ready(&self) -> std::io::Result<()> {
        self.writable().await
    }

    fn attempt(&self, op: impl FnOnce() -> std::io::Result<usize>) -> std::io::Result<usize> {
        self.try_io(Interest::WRITABLE, op)
    }
}

impl WriteReadiness for UnixStream {
    async fn ready(&self) -> std::io::Result<()> {
        self.writable().await
    }

    fn attempt(&self, op: impl FnOnce() -> std::io::Result<usize>) -> std::io::Result<usize> {
        self.try_io(Interest::WRITABLE, op)
    }
}

impl Transport for TcpStream {
    async fn send_file(
        &mut self,
        file: &OwnedFd,
        offset: u64,
        length: u64,
    ) -> std::io::Result<u64> {
        send_file_on(self, file, offset, length).await
    }

    fn peer_gone(&self) -> bool {
        peer_gone_on(self.as_raw_fd())
    }
}

impl Transport for UnixStream {
    async fn send_file(
        &mut self,
        file: &OwnedFd,
        offset: u64,
        length: u64,
    ) -> std::io::Result<u64> {
        send_file_on(self, file, offset, length).await
    }

    fn peer_gone(&self) -> bool {
        peer_gone_on(self.as_raw_fd())
    }
}

fn peer_gone_on(fd: std::os::fd::RawFd) -> bool {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: `poll` is one live pollfd for an open descriptor; a timeout
    // of 0 makes the call return at once.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

async fn send_file_on<S: WriteReadiness>(
    socket: &S,
    file: &OwnedFd,
    offset: u64,
    length: u64,
) -> std::io::Result<u64> {
    let (target, source) = (socket.as_raw_fd(), file.as_raw_fd());
    let mut position = libc::off_t::try_from(offset).map_err(std::io::Error::other)?;
    let mut sent = 0u64;
    while sent < length {
        let count = usize::try_from(length - sent)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        socket.ready().await?;
        let result = socket.attempt(|| {
            // SAFETY: both descriptors are open for the duration of the
            // call; `position` is a live off_t that sendfile advances by
            // the bytes it sent.
            let result = unsafe { libc::sendfile(target, source, &mut position, count) };
            if result < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(result as usize)
            }
        });
        match result {
            Ok(0) => break,
            Ok(n) => sent += n as u64,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
    Ok(sent)
}
