//! Socket addresses as uWSGI spells them: `host:port`, `:port`, or a path.

use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use super::ConfigError;

/// Where a listening socket is bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddress {
    /// Parses `host:port`, `:port` (all IPv4 addresses), `[v6]:port`, or a
    /// unix socket path (anything with a `/`, or without a `:`), given to
    /// `option`. A bare IP address or `localhost` is refused: its port was
    /// forgotten, and it would silently become a socket file of that name;
    /// so is a bare port number, whose colon was forgotten.
    pub fn parse(option: &'static str, text: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::BadAddress {
            option,
            address: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.contains('/') || !text.contains(':') {
            if text.is_empty() {
                return Err(bad("empty address"));
            }
            if text == "localhost" || text.parse::<IpAddr>().is_ok() {
                return Err(bad(&format!(
                    "no port: write {text}:PORT, or ./{text} for a unix socket of that name"
                )));
            }
            if text.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!(
                    "no host: write :{text} (every address) or 127.0.0.1:{text}, \
                     or ./{text} for a unix socket of that name"
                )));
            }
            return Ok(Self::Unix(PathBuf::from(text)));
        }
        let with_host = match text.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => text.to_owned(),
        };
        let (_, port) = with_host.rsplit_once(':').expect("the address has a colon");
        port.parse::<u16>()
            .map_err(|_| bad("the port must be a number from 0 to 65535"))?;
        let mut resolved = with_host
            .to_socket_addrs()
            .map_err(|error| bad(&format!("cannot resolve the host: {error}")))?;
        resolved
            .next()
            .map(Self::Tcp)
            .ok_or_else(|| bad("the host resolves to no address"))
    }
}

impl fmt::Display for ListenAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_form() {
        assert_eq!(
            ListenAddress::parse("--http", ":8000").expect("valid"),
            ListenAddress::Tcp("0.0.0.0:8000".parse().expect("valid"))
        );
        assert_eq!(
            ListenAddress::parse("--http", "127.0.0.1:9").expect("valid"),
            ListenAddress::Tcp("127.0.0.1:9".parse().expect("valid"))
        );
        assert_eq!(
            ListenAddress::parse("--http", "[::1]:9").expect("valid"),
            ListenAddress::Tcp("[::1]:9".parse().expect("valid"))
        );
        assert_eq!(
            ListenAddress::parse("--http", "/run/app.sock").expect("valid"),
            ListenAddress::Unix("/run/app.sock".into())
        );
    }

    #[test]
    fn refuses_an_address_without_its_port() {
        for text in ["127.0.0.1", "localhost", "0.0.0.0"] {
            let error = ListenAddress::parse("--socket", text).expect_err("no port");
            let message = error.to_string();
            assert!(message.contains("in --socket: no port"), "{message}");
            assert!(message.contains(&format!("{text}:PORT")), "{message}");
        }
        let message = ListenAddress::parse("--http", "8000")
            .expect_err("no host")
            .to_string();
        assert!(message.contains("write :8000"), "{message}");
        assert_eq!(
            ListenAddress::parse("--socket", "./127.0.0.1").expect("valid"),
            ListenAddress::Unix("./127.0.0.1".into())
        );
        assert_eq!(
            ListenAddress::parse("--socket", "app.sock").expect("valid"),
            ListenAddress::Unix("app.sock".into())
        );
    }

    #[test]
    fn refuses_a_bad_port() {
        assert!(ListenAddress::parse("--http", "127.0.0.1:http").is_err());
        assert!(ListenAddress::parse("--http", "127.0.0.1:70000").is_err());
    }
}
