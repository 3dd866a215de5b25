//! PROXY protocol v1 (text) and v2 (binary) headers, as load balancers send them before HTTP.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::error::{RequestError, RequestErrorKind};

/// The 12 bytes that start a v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The 6 bytes that start a v1 header.
const V1_PREFIX: &[u8; 6] = b"PROXY ";
/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX_LENGTH: usize = 107;
/// Signature, version and command, family and transport, length.
const V2_FIXED_LENGTH: usize = 16;

/// The addresses a load balancer reported for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client; `None` for v1 `UNKNOWN`, v2 `LOCAL` or a family without addresses.
    pub source: Option<SocketAddr>,
    /// The address the client connected to; `None` in the same cases.
    pub destination: Option<SocketAddr>,
}

impl ProxyHeader {
    const UNKNOWN: ProxyHeader = ProxyHeader {
        source: None,
        destination: None,
    };
}

/// Whether `buf` starts with a PROXY protocol header; `None` until enough bytes tell.
///
/// For a listener where the header is optional: `Some(false)` means plain
/// HTTP follows. No HTTP/1.x request can start with either signature, except
/// one whose method is `PROXY`, which this then refuses as a malformed header.
pub fn proxy_header_present(buf: &[u8]) -> Option<bool> {
    let matches_prefix = |signature: &[u8]| {
        let shared = buf.len().min(signature.len());
        buf[..shared] == signature[..shared]
    };
    let v1 = matches_prefix(V1_PREFIX);
    let v2 = matches_prefix(V2_SIGNATURE);

    if (v1 && buf.len() >= V1_PREFIX.len()) || (v2 && buf.len() >= V2_SIGNATURE.len()) {
        Some(true)
    } else if v1 || v2 {
        None
    } else {
        Some(false)
    }
}

/// Parses the PROXY protocol header that must start `buf`.
///
/// `Ok(None)`: more bytes are needed (a v2 header can be up to 16 + 65535
/// bytes). `Ok(Some((header, consumed)))`: HTTP starts at `buf[consumed..]`.
/// A buffer that starts with neither signature is refused; use
/// [`proxy_header_present`] first where the header is optional.
pub fn parse_proxy(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, RequestError> {
    match proxy_header_present(buf) {
        None => Ok(None),
        Some(false) => Err(RequestErrorKind::MissingProxyHeader.into()),
        Some(true) if buf.starts_with(V1_PREFIX) => parse_v1(buf),
        Some(true) => parse_v2(buf),
    }
}

/// `PROXY TCP4|TCP6 <source> <destination> <source port> <destination port>\r\n`
/// or `PROXY UNKNOWN[ ...]\r\n`.
fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, RequestError> {
    let invalid = || RequestError::from(RequestErrorKind::InvalidProxyV1);
    let window = &buf[..buf.len().min(V1_MAX_LENGTH)];

    let Some(line_feed) = window.iter().position(|&byte| byte == b'\n') else {
        return if window.len() == V1_MAX_LENGTH {
            Err(invalid())
        } else {
            Ok(None)
        };
    };
    let line = window[..line_feed]
        .strip_suffix(b"\r")
        .and_then(|line| line.strip_prefix(V1_PREFIX))
        .and_then(|line| std::str::from_utf8(line).ok())
        .ok_or_else(invalid)?;

    let header = parse_v1_fields(line).ok_or_else(invalid)?;
    Ok(Some((header, line_feed + 1)))
}

fn parse_v1_fields(line: &str) -> Option<ProxyHeader> {
    if line == "UNKNOWN" || line.starts_with("UNKNOWN ") {
        return Some(ProxyHeader::UNKNOWN);
    }

    let fields: Vec<&str> = line.split(' ').collect();
    let [protocol, source, destination, source_port, destination_port] = fields[..] else {
        return None;
    };
    let (source, destination) = match protocol {
        "TCP4" => (
            IpAddr::V4(source.parse::<Ipv4Addr>().ok()?),
            IpAddr::V4(destination.parse::<Ipv4Addr>().ok()?),
        ),
        "TCP6" => (
            IpAddr::V6(source.parse::<Ipv6Addr>().ok()?),
            IpAddr::V6(destination.parse::<Ipv6Addr>().ok()?),
        ),
        _ => return None,
    };

    Some(ProxyHeader {
        source: Some(SocketAddr::new(source, parse_v1_port(source_port)?)),
        destination: Some(SocketAddr::new(
            destination,
            parse_v1_port(destination_port)?,
        )),
    })
}

/// Decimal digits only (no sign), no leading zero, at most 65535.
fn parse_v1_port(port: &str) -> Option<u16> {
    let digits_only = !port.is_empty() && port.bytes().all(|byte| byte.is_ascii_digit());
    let leading_zero = port.len() > 1 && port.starts_with('0');
    if !digits_only || leading_zero {
        return None;
    }
    port.parse().ok()
}

/// The binary header: signature, version/command, family/transport, length, addresses, TLVs.
fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, RequestError> {
    let invalid = || RequestError::from(RequestErrorKind::InvalidProxyV2);
    if buf.len() < V2_FIXED_LENGTH {
        return Ok(None);
    }

    let version = buf[12] >> 4;
    let command = buf[12] & 0x0f;
    let family = buf[13] >> 4;
    let transport = buf[13] & 0x0f;
    if version != 2 || command > 1 || family > 3 || transport > 2 {
        return Err(invalid());
    }

    let length = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = V2_FIXED_LENGTH + length;
    let Some(addresses) = buf.get(V2_FIXED_LENGTH..total) else {
        return Ok(None);
    };

    // LOCAL: the balancer's own connection (health checks); keep the real peer.
    if command == 0 {
        return Ok(Some((ProxyHeader::UNKNOWN, total)));
    }
    let header = parse_v2_addresses(family, addresses).ok_or_else(invalid)?;
    Ok(Some((header, total)))
}

/// Addresses for INET and INET6; UNSPEC and UNIX carry none a TCP peer could use.
fn parse_v2_addresses(family: u8, block: &[u8]) -> Option<ProxyHeader> {
    let (source, destination, ports) = match family {
        1 => {
            let block = block.get(..12)?;
            let source: [u8; 4] = block[0..4].try_into().ok()?;
            let destination: [u8; 4] = block[4..8].try_into().ok()?;
            (
                IpAddr::from(source),
                IpAddr::from(destination),
                &block[8..12],
            )
        }
        2 => {
            let block = block.get(..36)?;
            let source: [u8; 16] = block[0..16].try_into().ok()?;
            let destination: [u8; 16] = block[16..32].try_into().ok()?;
            (
                IpAddr::from(source),
                IpAddr::from(destination),
                &block[32..36],
            )
        }
        _ => return Some(ProxyHeader::UNKNOWN),
    };

    let source_port = u16::from_be_bytes([ports[0], ports[1]]);
    let destination_port = u16::from_be_bytes([ports[2], ports[3]]);
    Some(ProxyHeader {
        source: Some(SocketAddr::new(source, source_port)),
        destination: Some(SocketAddr::new(destination, destination_port)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> Option<SocketAddr> {
        Some(text.parse().expect("test address"))
    }

    fn v2(command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        let length = u16::try_from(block.len()).expect("short block");
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.extend_from_slice(block);
        bytes
    }

    #[test]
    fn v1_tcp4() {
        let bytes = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        let (header, consumed) = parse_proxy(bytes).expect("valid").expect("complete");
        assert_eq!(header.source, address("192.168.0.1:56324"));
        assert_eq!(header.destination, address("192.168.0.11:443"));
        assert_eq!(&bytes[consumed..], b"GET /");
    }

    #[test]
    fn v1_tcp6_and_unknown() {
        let (header, _) = parse_proxy(b"PROXY TCP6 ::1 2001:db8::2 1 2\r\n")
            .expect("valid")
            .expect("complete");
        assert_eq!(header.source, address("[::1]:1"));
        let (header, consumed) = parse_proxy(b"PROXY UNKNOWN ff 1\r\nx")
            .expect("valid")
            .expect("complete");
        assert_eq!((header, consumed), (ProxyHeader::UNKNOWN, 20));
        assert!(parse_proxy(b"PROXY UNKNOWN\r\n").expect("valid").is_some());
    }

    #[test]
    fn v1_needs_the_whole_line() {
        let bytes = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
        for end in 0..bytes.len() {
            assert_eq!(parse_proxy(&bytes[..end]), Ok(None), "at {end}");
        }
    }

    #[test]
    fn v1_malformed() {
        for bad in [
            &b"PROXY TCP4 192.168.0.1 192.16...\r\n"[..],
            b"PROXY TCP4 not-an-ip 192.168.0.11 56324 443\r\n",
            b"PROXY TCP4 192.168.0.1  192.168.0.11 1 2\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
            b"PROXY UDP4 1.2.3.4 1.2.3.4 1 2\r\n",
            b"PROXY /index HTTP/1.1\r\n",
        ] {
            let error = parse_proxy(bad).expect_err("malformed");
            assert_eq!(
                (error.kind(), error.status()),
                (RequestErrorKind::InvalidProxyV1, 400),
                "{bad:?}"
            );
        }
        let endless = [b"PROXY ".as_slice(), &[b'x'; 101]].concat();
        assert!(parse_proxy(&endless).is_err());
    }

    #[test]
    fn v2_inet_and_inet6() {
        let mut block = vec![192, 168, 1, 10, 192, 168, 1, 1];
        block.extend_from_slice(&12345u16.to_be_bytes());
        block.extend_from_slice(&443u16.to_be_bytes());
        let mut bytes = v2(1, 0x11, &block);
        bytes.extend_from_slice(b"GET");
        let (header, consumed) = parse_proxy(&bytes).expect("valid").expect("complete");
        assert_eq!(header.source, address("192.168.1.10:12345"));
        assert_eq!(header.destination, address("192.168.1.1:443"));
        assert_eq!(&bytes[consumed..], b"GET");

        let mut block = [0u8; 36];
        block[15] = 1;
        block[31] = 2;
        block[35] = 80;
        let (header, _) = parse_proxy(&v2(1, 0x21, &block))
            .expect("valid")
            .expect("complete");
        assert_eq!(header.source, address("[::1]:0"));
        assert_eq!(header.destination, address("[::2]:80"));
    }

    #[test]
    fn v2_local_unspec_and_tlvs() {
        let (header, consumed) = parse_proxy(&v2(0, 0x11, &[0; 12]))
            .expect("valid")
            .expect("complete");
        assert_eq!((header, consumed), (ProxyHeader::UNKNOWN, 28));
        let (header, _) = parse_proxy(&v2(1, 0x00, &[]))
            .expect("valid")
            .expect("complete");
        assert_eq!(header, ProxyHeader::UNKNOWN);
        // A TLV after the addresses is skipped.
        let mut block = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2];
        block.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]);
        let (header, consumed) = parse_proxy(&v2(1, 0x11, &block))
            .expect("valid")
            .expect("complete");
        assert_eq!((header.source, consumed), (address("1.2.3.4:1"), 32));
    }

    #[test]
    fn v2_needs_the_whole_header() {
        let bytes = v2(1, 0x11, &[0; 12]);
        for end in 0..bytes.len() {
            assert_eq!(parse_proxy(&bytes[..end]), Ok(None), "at {end}");
        }
    }

    #[test]
    fn v2_malformed() {
        let mut wrong_version = v2(1, 0x11, &[0; 12]);
        wrong_version[12] = 0x11;
        for bad in [
            wrong_version,
            v2(2, 0x11, &[0; 12]),
            v2(1, 0x41, &[0; 12]),
            v2(1, 0x13, &[0; 12]),
            v2(1, 0x11, &[0; 8]),
            v2(1, 0x21, &[0; 12]),
        ] {
            let error = parse_proxy(&bad).expect_err("malformed");
            assert_eq!(error.kind(), RequestErrorKind::InvalidProxyV2, "{bad:?}");
        }
    }

    #[test]
    fn presence_is_decided_by_the_signature() {
        assert_eq!(proxy_header_present(b""), None);
        assert_eq!(proxy_header_present(b"PROX"), None);
        assert_eq!(proxy_header_present(b"PROXY "), Some(true));
        assert_eq!(proxy_header_present(b"POST /"), Some(false));
        assert_eq!(proxy_header_present(b"\r\n\r\n"), None);
        assert_eq!(proxy_header_present(b"\r\n\r\nGET"), Some(false));
        assert_eq!(proxy_header_present(V2_SIGNATURE), Some(true));
        assert_eq!(proxy_header_present(b"GET / HTTP/1.1"), Some(false));
        let error = parse_proxy(b"GET / HTTP/1.1\r\n").expect_err("required");
        assert_eq!(error.kind(), RequestErrorKind::MissingProxyHeader);
    }
}
