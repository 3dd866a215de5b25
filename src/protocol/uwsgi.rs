//! The uwsgi binary protocol, as nginx's `uwsgi_pass` speaks it: a 4-byte
//! header (modifier1, a little-endian u16 size of the variable block,
//! modifier2), then the variable block of `u16le key length, key, u16le
//! value length, value` pairs, then the request body.

use std::fmt;

/// A variable: its name and value, as bytes.
pub type Var = (Box<[u8]>, Box<[u8]>);

/// One request's variables, in wire order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub modifier1: u8,
    pub modifier2: u8,
    pub vars: Vec<Var>,
}

impl Packet {
    /// The value of a variable, if present; the last one when it is
    /// repeated, as in the environ (uWSGI does the same).
    pub fn var(&self, name: &str) -> Option<&[u8]> {
        self.vars
            .iter()
            .rev()
            .find(|(key, _)| &**key == name.as_bytes())
            .map(|(_, value)| &**value)
    }
}

/// Why a packet was refused; the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// The variable block is larger than `--buffer-size`.
    TooLarge { size: usize, max: usize },
    /// The bytes are an HTTP request, sent to a uwsgi socket.
    Http,
    /// A variable runs past the end of the block.
    Truncated,
    /// A variable with an empty name.
    EmptyKey,
    /// More variables than `--max-vars`.
    TooManyVars { max: usize },
}

impl fmt::Display for PacketError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge { size, max } => write!(
                f,
                "uwsgi packet of {size} bytes is larger than --buffer-size ({max})"
            ),
            Self::Http => write!(
                f,
                "an HTTP request arrived on a uwsgi socket (use --http for HTTP clients)"
            ),
            Self::Truncated => write!(f, "a uwsgi variable runs past the end of the packet"),
            Self::EmptyKey => write!(f, "a uwsgi variable has an empty name"),
            Self::TooManyVars { max } => {
                write!(
                    f,
                    "the uwsgi packet has more than --max-vars ({max}) variables"
                )
            }
        }
    }
}

impl std::error::Error for PacketError {}

/// Parses the header and variable block at the start of `buf`.
/// Ok(None): more bytes are needed. Ok(Some((packet, consumed))): the body
/// starts at `consumed`.
pub fn parse_packet(
    buf: &[u8],
    max_size: usize,
    max_vars: usize,
) -> Result<Option<(Packet, usize)>, PacketError> {
    let Some(header) = buf.get(..4) else {
        return if looks_like_http(buf) {
            Err(PacketError::Http)
        } else {
            Ok(None)
        };
    };
    if looks_like_http(header) {
        return Err(PacketError::Http);
    }
    let size = usize::from(u16::from_le_bytes([header[1], header[2]]));
    if size > max_size {
        return Err(PacketError::TooLarge {
            size,
            max: max_size,
        });
    }
    let Some(block) = buf.get(4..4 + size) else {
        return Ok(None);
    };
    let vars = parse_vars(block, max_vars)?;
    let packet = Packet {
        modifier1: header[0],
        modifier2: header[3],
        vars,
    };
    Ok(Some((packet, 4 + size)))
}

fn parse_vars(mut block: &[u8], max_vars: usize) -> Result<Vec<Var>, PacketError> {
    let mut vars = Vec::new();
    while !block.is_empty() {
        if vars.len() == max_vars {
            return Err(PacketError::TooManyVars { max: max_vars });
        }
        let key = take_sized(&mut block)?;
        if key.is_empty() {
            return Err(PacketError::EmptyKey);
        }
        let value = take_sized(&mut block)?;
        vars.push((Box::from(key), Box::from(value)));
    }
    Ok(vars)
}

/// Takes a u16le length and that many bytes from the front of `block`.
fn take_sized<'a>(block: &mut &'a [u8]) -> Result<&'a [u8], PacketError> {
    let (length, rest) = block
        .split_first_chunk::<2>()
        .ok_or(PacketError::Truncated)?;
    let length = usize::from(u16::from_le_bytes(*length));
    if rest.len() < length {
        return Err(PacketError::Truncated);
    }
    let (item, rest) = rest.split_at(length);
    *block = rest;
    Ok(item)
}

/// An HTTP request line starts with an upper-case method: an upper-case
/// ASCII letter, then two more upper-case letters or a space, are no uwsgi
/// header nginx sends. Decided on the first three bytes alone, so the
/// answer is the same however the bytes arrive.
fn looks_like_http(start: &[u8]) -> bool {
    let method_like = |byte: &u8| byte.is_ascii_uppercase() || *byte == b' ';
    match start {
        [first, second, third, ..] => {
            first.is_ascii_uppercase() && method_like(second) && method_like(third)
        }
        _ => false,
    }
}

/// Encodes a packet (used by tests and by clients written in Rust).
pub fn encode_packet(vars: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut block = Vec::new();
    for (key, value) in vars {
        block.extend_from_slice(&(key.len() as u16).to_le_bytes());
        block.extend_from_slice(key);
        block.extend_from_slice(&(value.len() as u16).to_le_bytes());
        block.extend_from_slice(value);
    }
    let mut packet = vec![0u8];
    packet.extend_from_slice(&(block.len() as u16).to_le_bytes());
    packet.push(0);
    packet.extend_from_slice(&block);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        encode_packet(&[
            (b"REQUEST_METHOD", b"GET"),
            (b"PATH_INFO", b"/x"),
            (b"HTTP_HOST", b""),
        ])
    }

    #[test]
    fn parses_a_whole_packet_and_leaves_the_body() {
        let mut wire = sample();
        wire.extend_from_slice(b"body");
        let (packet, consumed) = parse_packet(&wire, 4096, 64)
            .expect("valid")
            .expect("whole");
        assert_eq!(&wire[consumed..], b"body");
        assert_eq!(packet.var("PATH_INFO"), Some(&b"/x"[..]));
        assert_eq!(packet.var("HTTP_HOST"), Some(&b""[..]));
        assert_eq!(packet.vars.len(), 3);
    }

    #[test]
    fn every_prefix_asks_for_more() {
        let wire = sample();
        for end in 0..wire.len() {
            assert_eq!(
                parse_packet(&wire[..end], 4096, 64),
                Ok(None),
                "prefix {end}"
            );
        }
    }

    #[test]
    fn http_is_recognised_the_same_in_any_split() {
        // "GET" then a byte no method has: HTTP from the third byte on,
        // never a packet header once the fourth byte arrives.
        let wire = b"GET\x0b\x00REQUEST";
        for end in 3..=wire.len() {
            assert_eq!(parse_packet(&wire[..end], 0, 64), Err(PacketError::Http));
        }
        assert_eq!(parse_packet(&wire[..2], 0, 64), Ok(None));
        assert_eq!(
            parse_packet(b"POST / HTTP/1.1\r\n", 4096, 64),
            Err(PacketError::Http)
        );
    }

    #[test]
    fn refuses_what_is_wrong() {
        let wire = sample();
        assert!(matches!(
            parse_packet(&wire, 10, 64),
            Err(PacketError::TooLarge { max: 10, .. })
        ));
        assert_eq!(
            parse_packet(&wire, 4096, 2),
            Err(PacketError::TooManyVars { max: 2 })
        );
        assert_eq!(
            parse_packet(b"GET / HTTP/1.1\r\n", 4096, 64),
            Err(PacketError::Http)
        );
        let empty_key = encode_packet(&[(b"", b"x")]);
        assert_eq!(
            parse_packet(&empty_key, 4096, 64),
            Err(PacketError::EmptyKey)
        );
        // A block whose size says 5 but whose variable claims 200 bytes.
        let truncated = [0u8, 5, 0, 0, 200, 0, b'a', b'b', b'c'];
        assert_eq!(
            parse_packet(&truncated, 4096, 64),
            Err(PacketError::Truncated)
        );
    }
}
