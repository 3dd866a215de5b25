//! Request-target forms (RFC 9112 section 3.2): split into path and query, refuse the rest.

use super::error::RequestErrorKind;

/// The parts of a request target that the environ carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TargetParts<'a> {
    /// Raw path, not percent-decoded.
    pub path: &'a [u8],
    /// Raw query without `?`; the fragment is removed.
    pub query: &'a [u8],
}

/// Splits `target` after checking its form against `method`.
///
/// Accepted: origin-form (`/path?query`), absolute-form with an `http` or
/// `https` scheme, and asterisk-form for `OPTIONS`. Authority-form is only
/// meaningful for `CONNECT`, which the caller has refused before.
pub(crate) fn split_target<'a>(
    method: &str,
    target: &'a [u8],
) -> Result<TargetParts<'a>, RequestErrorKind> {
    let invalid = target.iter().fold(false, |found, &byte| {
        found | (byte <= b' ') | (byte == 0x7f)
    });
    if invalid {
        return Err(RequestErrorKind::InvalidTarget);
    }

    match target.first() {
        Some(b'/') => Ok(split_path_and_query(target)),
        Some(b'*') if target.len() == 1 => asterisk_form(method),
        _ if target.contains(&b':') && target.windows(3).any(|w| w == b"://") => {
            absolute_form(target)
        }
        _ => Err(RequestErrorKind::UnsupportedTargetForm),
    }
}

/// The authority (`host[:port]`, userinfo removed) of an absolute-form target.
pub(crate) fn target_authority(target: &[u8]) -> Option<&[u8]> {
    let (_, rest) = split_scheme(target)?;
    let authority = &rest[..authority_end(rest)];
    Some(strip_userinfo(authority))
}

/// Decodes `%XX` escapes; an invalid escape is kept as it is. `+` stays `+`.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let mut decoded = Vec::with_capacity(raw.len());
    let mut index = 0;

    while index < raw.len() {
        let escaped = match raw.get(index..index + 3) {
            Some([b'%', high, low]) => hex_value(*high).zip(hex_value(*low)),
            _ => None,
        };
        match escaped {
            Some((high, low)) => {
                decoded.push(high << 4 | low);
                index += 3;
            }
            None => {
                decoded.push(raw[index]);
                index += 1;
            }
        }
    }
    decoded
}

fn hex_value(byte: u8) -> Option<u8> {
    (byte as char).to_digit(16).map(|digit| digit as u8)
}

fn asterisk_form(method: &str) -> Result<TargetParts<'static>, RequestErrorKind> {
    if method != "OPTIONS" {
        return Err(RequestErrorKind::AsteriskWithoutOptions);
    }
    Ok(TargetParts {
        path: b"*",
        query: b"",
    })
}

fn absolute_form(target: &[u8]) -> Result<TargetParts<'_>, RequestErrorKind> {
    let (scheme, rest) = split_scheme(target).ok_or(RequestErrorKind::UnsupportedTargetForm)?;
    if !scheme.eq_ignore_ascii_case(b"http") && !scheme.eq_ignore_ascii_case(b"https") {
        return Err(RequestErrorKind::UnsupportedScheme);
    }

    let end = authority_end(rest);
    validate_authority(&rest[..end])?;

    // An absolute URI with an empty path stands for "/" (RFC 9112 section 3.2.1).
    let parts = split_path_and_query(&rest[end..]);
    if parts.path.is_empty() {
        return Ok(TargetParts {
            path: b"/",
            query: parts.query,
        });
    }
    Ok(parts)
}

/// Splits `scheme://rest`; `None` if there is no syntactically valid scheme.
fn split_scheme(target: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = target.iter().position(|&byte| byte == b':')?;
    let (scheme, rest) = target.split_at(colon);
    let rest = rest.strip_prefix(b"://")?;
    let valid = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'));
    valid.then_some((scheme, rest))
}

fn authority_end(rest: &[u8]) -> usize {
    rest.iter()
        .position(|&byte| matches!(byte, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len())
}

/// The part after the first `@`, if any; a later `@` then fails the host check.
fn strip_userinfo(authority: &[u8]) -> &[u8] {
    match authority.iter().position(|&byte| byte == b'@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    }
}

/// Checks `[userinfo@]host[:port]` (RFC 3986 section 3.2) with a non-empty host.
fn validate_authority(authority: &[u8]) -> Result<(), RequestErrorKind> {
    let host_and_port = strip_userinfo(authority);
    let userinfo = &authority[..authority.len() - host_and_port.len()];
    let userinfo = userinfo.strip_suffix(b"@").unwrap_or(userinfo);

    let valid = userinfo.iter().all(|&byte| is_userinfo_byte(byte))
        && split_host_and_port(host_and_port)
            .is_some_and(|(host, port)| is_valid_host(host) && is_valid_port(port));
    if valid {
        Ok(())
    } else {
        Err(RequestErrorKind::InvalidAuthority)
    }
}

/// A bracketed IP literal or a non-empty reg-name.
fn is_valid_host(host: &[u8]) -> bool {
    match host {
        [b'[', literal @ .., b']'] => {
            !literal.is_empty()
                && literal
                    .iter()
                    .all(|&byte| byte.is_ascii_hexdigit() || matches!(byte, b':' | b'.'))
        }
        _ => !host.is_empty() && host.iter().all(|&byte| is_reg_name_byte(byte)),
    }
}

/// Empty (RFC 3986 allows `host:`) or a decimal number up to 65535.
fn is_valid_port(port: &[u8]) -> bool {
    port.is_empty()
        || port.len() <= 5
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port).is_ok_and(|text| text.parse::<u16>().is_ok())
}

/// Splits `host[:port]`, where host may be an IP literal in brackets.
fn split_host_and_port(host_and_port: &[u8]) -> Option<(&[u8], &[u8])> {
    let host_end = if host_and_port.first() == Some(&b'[') {
        host_and_port.iter().position(|&byte| byte == b']')? + 1
    } else {
        host_and_port
            .iter()
            .position(|&byte| byte == b':')
            .unwrap_or(host_and_port.len())
    };
    let (host, rest) = host_and_port.split_at(host_end);
    match rest {
        [] => Some((host, rest)),
        [b':', port @ ..] => Some((host, port)),
        _ => None,
    }
}

fn is_unreserved_or_sub_delim(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b'%'
        )
}

fn is_reg_name_byte(byte: u8) -> bool {
    is_unreserved_or_sub_delim(byte)
}

fn is_userinfo_byte(byte: u8) -> bool {
    is_unreserved_or_sub_delim(byte) || byte == b':'
}

/// Splits `/path?query#fragment` into path and query; the fragment is dropped.
fn split_path_and_query(target: &[u8]) -> TargetParts<'_> {
    let without_fragment = match target.iter().position(|&byte| byte == b'#') {
        Some(hash) => &target[..hash],
        None => target,
    };
    match without_fragment.iter().position(|&byte| byte == b'?') {
        Some(question) => TargetParts {
            path: &without_fragment[..question],
            query: &without_fragment[question + 1..],
        },
        None => TargetParts {
            path: without_fragment,
            query: b"",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, target: &[u8]) -> Result<(Vec<u8>, Vec<u8>), RequestErrorKind> {
        split_target(method, target).map(|p| (p.path.to_vec(), p.query.to_vec()))
    }

    #[test]
    fn origin_form_splits_query_and_drops_fragment() {
        let expected = (b"/forums/1".to_vec(), b"page=1".to_vec());
        assert_eq!(parts("GET", b"/forums/1?page=1#posts"), Ok(expected));
        assert_eq!(parts("GET", b"///a"), Ok((b"///a".to_vec(), vec![])));
        assert_eq!(parts("GET", b"/a#x?y"), Ok((b"/a".to_vec(), vec![])));
    }

    #[test]
    fn absolute_form_keeps_path_and_query() {
        let expected = (b"/foo".to_vec(), b"q=1".to_vec());
        assert_eq!(
            parts("GET", b"http://example.com/foo?q=1"),
            Ok(expected.clone())
        );
        assert_eq!(
            parts("GET", b"HTTPS://user:pass@example.com:8080/foo?q=1"),
            Ok(expected)
        );
        assert_eq!(
            parts("GET", b"http://[::1]:80"),
            Ok((b"/".to_vec(), vec![]))
        );
        assert_eq!(
            parts("GET", b"http://example.com?q"),
            Ok((b"/".to_vec(), b"q".to_vec()))
        );
    }

    #[test]
    fn absolute_form_refuses_bad_scheme_or_host() {
        assert_eq!(
            parts("PUT", b"s://]ufd/:"),
            Err(RequestErrorKind::UnsupportedScheme)
        );
        assert_eq!(
            parts("GET", b"http://]ufd/"),
            Err(RequestErrorKind::InvalidAuthority)
        );
        assert_eq!(
            parts("GET", b"http:///foo"),
            Err(RequestErrorKind::InvalidAuthority)
        );
        assert_eq!(
            parts("GET", b"http://a:b/"),
            Err(RequestErrorKind::InvalidAuthority)
        );
        assert_eq!(
            parts("GET", b"http://a:123456/"),
            Err(RequestErrorKind::InvalidAuthority)
        );
        assert_eq!(
            parts("GET", b"http://a:65536/"),
            Err(RequestErrorKind::InvalidAuthority)
        );
        assert_eq!(
            parts("GET", b"http://a@b@c/"),
            Err(RequestErrorKind::InvalidAuthority)
        );
        assert_eq!(
            parts("GET", b"http://[::1/"),
            Err(RequestErrorKind::InvalidAuthority)
        );
    }

    #[test]
    fn other_forms_are_refused() {
        assert_eq!(
            parts("GET", b"*"),
            Err(RequestErrorKind::AsteriskWithoutOptions)
        );
        assert_eq!(parts("OPTIONS", b"*"), Ok((b"*".to_vec(), vec![])));
        assert_eq!(
            parts("GET", b"example.com:443"),
            Err(RequestErrorKind::UnsupportedTargetForm)
        );
        assert_eq!(
            parts("GET", b"foo/bar"),
            Err(RequestErrorKind::UnsupportedTargetForm)
        );
        assert_eq!(
            parts("GET", b"/a\x01"),
            Err(RequestErrorKind::InvalidTarget)
        );
        assert_eq!(
            parts("GET", b"/a\x7f"),
            Err(RequestErrorKind::InvalidTarget)
        );
    }

    #[test]
    fn authority_of_absolute_target() {
        assert_eq!(target_authority(b"http://u@h:1/x"), Some(&b"h:1"[..]));
        assert_eq!(target_authority(b"/x"), None);
    }

    #[test]
    fn percent_decoding_keeps_invalid_escapes() {
        assert_eq!(percent_decode(b"/a%20b%2Fc"), b"/a b/c");
        assert_eq!(percent_decode(b"%zz%4"), b"%zz%4");
        assert_eq!(percent_decode(b"%%41+"), b"%A+");
        assert_eq!(percent_decode(b"\xc3\xa0%20k"), b"\xc3\xa0 k");
    }
}
