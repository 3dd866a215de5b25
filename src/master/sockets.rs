//! Binding the listening sockets, once, for the life of the instance.

use std::net::TcpListener;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::{Config, ListenAddress, Protocol};

/// A socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address}: {source}")]
pub struct BindError {
    pub address: ListenAddress,
    #[source]
    pub source: std::io::Error,
}

/// A bound, listening socket the master keeps and its workers inherit.
#[derive(Debug)]
pub struct Listener {
    pub address: ListenAddress,
    pub protocol: Protocol,
    pub fd: OwnedFd,
    /// The master bound it (rather than receiving it from systemd), so a
    /// unix socket file is the master's to remove at exit.
    pub bound_here: bool,
}

/// Binds every configured socket with the listen queue size, and applies
/// `--chmod-socket` and `--chown-socket` to unix sockets. Sockets passed by
/// systemd (`activated`) are used instead of binding where the address
/// matches; the others it passed serve HTTP.
pub fn bind_all(
    config: &Config,
    mut activated: Vec<(OwnedFd, SockAddr)>,
) -> Result<Vec<Listener>, BindError> {
    let mut listeners = config
        .listen
        .iter()
        .map(|socket| {
            let address = &socket.address;
            if let Some(index) = activated.iter().position(|(_, a)| same(a, address)) {
                let (fd, _) = activated.remove(index);
                return Ok(Listener {
                    address: address.clone(),
                    protocol: socket.protocol,
                    fd,
                    bound_here: false,
                });
            }
            let fail = |source| BindError {
                address: address.clone(),
                source,
            };
            let fd = bind(address, config.backlog).map_err(fail)?;
            if let ListenAddress::Unix(path) = address {
                set_unix_permissions(path, config).map_err(fail)?;
            }
            Ok(Listener {
                address: address.clone(),
                protocol: socket.protocol,
                fd,
                bound_here: true,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    for (fd, address) in activated {
        let address = match (address.as_socket(), address.as_pathname()) {
            (Some(addr), _) => ListenAddress::Tcp(addr),
            (None, Some(path)) => ListenAddress::Unix(path.to_owned()),
            (None, None) => continue,
        };
        listeners.push(Listener {
            address,
            protocol: Protocol::Http,
            fd,
            bound_here: false,
        });
    }
    Ok(listeners)
}

/// Whether a passed socket is bound to a configured address.
fn same(passed: &SockAddr, address: &ListenAddress) -> bool {
    match address {
        ListenAddress::Tcp(addr) => passed.as_socket() == Some(*addr),
        ListenAddress::Unix(path) => passed.as_pathname() == Some(path.as_path()),
    }
}

fn set_unix_permissions(path: &std::path::Path, config: &Config) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(mode) = config.chmod_socket {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    if let Some((uid, gid)) = config.chown_socket {
        std::os::unix::fs::chown(path, uid, gid)?;
    }
    Ok(())
}

fn bind(address: &ListenAddress, backlog: u32) -> std::io::Result<OwnedFd> {
    let backlog = i32::try_from(backlog).unwrap_or(i32::MAX);
    match address {
        ListenAddress::Tcp(addr) => {
            let socket = Socket::new(Domain::for_address(*addr), Type::STREAM, None)?;
            socket.set_reuse_address(true)?;
            if addr.is_ipv6() {
                socket.set_only_v6(true)?;
            }
            socket.bind(&SockAddr::from(*addr))?;
            socket.listen(backlog)?;
            Ok(TcpListener::from(socket).into())
        }
        ListenAddress::Unix(path) => {
            clear_unix_path(path)?;
            let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
            socket.bind(&SockAddr::unix(path)?)?;
            socket.listen(backlog)?;
            Ok(UnixListener::from(OwnedFd::from(socket)).into())
        }
    }
}

/// Makes room for a unix socket at `path`. A socket file left by an
/// instance that is gone is removed; one that still accepts connections
/// belongs to a running instance, and any other kind of file is not mercy's
/// to remove: both are refused with an error that says so.
pub(super) fn clear_unix_path(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(metadata) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !metadata.file_type().is_socket() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; mercy does not remove it",
                path.display()
            ),
        ));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!("another process accepts connections on {}", path.display()),
        ));
    }
    std::fs::remove_file(path)
}
