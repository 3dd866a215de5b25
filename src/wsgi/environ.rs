//! The PEP 3333 environ: native strings decoded as latin-1, so request
//! bytes round-trip exactly.

use std::collections::HashMap;
use std::os::raw::c_char;

use pyo3::ffi;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString, PyTuple};

use super::{Endpoints, Request, Source};
use crate::protocol::http::percent_decode;
use crate::protocol::http::RequestHead;
use crate::protocol::uwsgi::Packet;

/// Values that are the same in every environ of a worker.
pub struct Constants {
    pub version: Py<PyTuple>,
    pub errors: Py<PyAny>,
    pub file_wrapper: Py<PyAny>,
    pub multithread: bool,
    pub multiprocess: bool,
}

pub static CONSTANTS: PyOnceLock<Constants> = PyOnceLock::new();

/// The entries every environ starts with; each request's environ is a copy,
/// which costs one table copy instead of an insertion per entry.
static TEMPLATE: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// Environ keys of the header names seen so far, as the client spelled
/// them (`Host` -> `HTTP_HOST`), so that common headers cost a lookup
/// instead of a new string. Bounded: past the limit, names are converted
/// each time.
static HEADER_KEYS: std::sync::Mutex<Option<HeaderKeys>> = std::sync::Mutex::new(None);
type HeaderKeys = HashMap<Box<[u8]>, Py<PyString>>;
const HEADER_KEYS_LIMIT: usize = 256;

/// A Python str with the same code points as the latin-1 bytes.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let length = isize::try_from(bytes.len()).expect("a request field fits in isize");
    // SAFETY: the pointer and length describe a live byte slice; latin-1
    // decoding cannot fail on any byte and returns a new reference (or NULL
    // with an exception set, which from_owned_ptr_or_err turns into Err).
    unsafe {
        let raw =
            ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast::<c_char>(), length, std::ptr::null());
        Ok(Bound::from_owned_ptr_or_err(py, raw)?.cast_into_unchecked())
    }
}

/// Builds the environ for one request, with `input` as `wsgi.input`.
pub fn build<'py>(
    py: Python<'py>,
    request: &Request,
    input: Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyDict>> {
    let environ = template(py)?.copy()?;
    match &request.source {
        Source::Http(head) => from_http(py, &environ, head, &request.endpoints)?,
        Source::Uwsgi(packet) => from_uwsgi(py, &environ, packet)?,
    }
    if let Some(mountpoint) = &crate::worker::context().config.script_name {
        split_script_name(py, &environ, mountpoint)?;
    }
    environ.set_item(intern!(py, "wsgi.input"), input)?;
    Ok(environ)
}

/// The entries that are the same in every environ of this worker.
fn template(py: Python<'_>) -> PyResult<&Bound<'_, PyDict>> {
    let template = TEMPLATE.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
        let constants = CONSTANTS
            .get(py)
            .expect("the environ constants are set before requests are served");
        let environ = PyDict::new(py);
        environ.set_item(intern!(py, "wsgi.version"), constants.version.bind(py))?;
        environ.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "http"))?;
        environ.set_item(intern!(py, "wsgi.errors"), constants.errors.bind(py))?;
        environ.set_item(intern!(py, "wsgi.multithread"), constants.multithread)?;
        environ.set_item(intern!(py, "wsgi.multiprocess"), constants.multiprocess)?;
        environ.set_item(intern!(py, "wsgi.run_once"), false)?;
        environ.set_item(intern!(py, "wsgi.input_terminated"), true)?;
        environ.set_item(
            intern!(py, "wsgi.file_wrapper"),
            constants.file_wrapper.bind(py),
        )?;
        environ.set_item(intern!(py, "SCRIPT_NAME"), intern!(py, ""))?;
        Ok(environ.unbind())
    })?;
    Ok(template.bind(py))
}

/// The environ key of a header name, as a Python str.
fn header_key<'py>(py: Python<'py>, name: &[u8]) -> Bound<'py, PyString> {
    let mut cache = HEADER_KEYS.lock().unwrap_or_else(|p| p.into_inner());
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(key) = cache.get(name) {
        return key.bind(py).clone();
    }
    let key = PyString::intern(py, &environ_key(name));
    if cache.len() < HEADER_KEYS_LIMIT {
        cache.insert(Box::from(name), key.clone().unbind());
    }
    key
}

fn from_http<'py>(
    py: Python<'py>,
    environ: &Bound<'py, PyDict>,
    head: &RequestHead,
    endpoints: &Endpoints,
) -> PyResult<()> {
    environ.set_item(intern!(py, "REQUEST_METHOD"), method(py, &head.method))?;
    environ.set_item(
        intern!(py, "PATH_INFO"),
        latin1(py, &percent_decode(&head.path))?,
    )?;
    environ.set_item(intern!(py, "QUERY_STRING"), latin1(py, &head.query)?)?;
    let target = latin1(py, &head.target)?;
    environ.set_item(intern!(py, "RAW_URI"), &target)?;
    environ.set_item(intern!(py, "REQUEST_URI"), target)?;
    let protocol = if head.minor_version == 0 {
        intern!(py, "HTTP/1.0")
    } else {
        intern!(py, "HTTP/1.1")
    };
    environ.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;
    environ.set_item(intern!(py, "SERVER_NAME"), &endpoints.server_name)?;
    environ.set_item(intern!(py, "SERVER_PORT"), &endpoints.server_port)?;
    match endpoints.remote {
        Some(remote) => {
            environ.set_item(intern!(py, "REMOTE_ADDR"), remote.ip().to_string())?;
            environ.set_item(intern!(py, "REMOTE_PORT"), remote.port().to_string())?;
        }
        None => environ.set_item(intern!(py, "REMOTE_ADDR"), intern!(py, ""))?,
    }

    for header in &head.headers {
        let key = header_key(py, &header.name);
        let value = latin1(py, &header.value)?;
        match environ.get_item(&key)? {
            Some(previous) => {
                let separator = repeat_separator(&header.name);
                let joined = format!("{previous}{separator}{value}");
                environ.set_item(key, joined)?;
            }
            None => environ.set_item(key, value)?,
        }
    }
    // RFC 9112 section 3.2.2: an absolute-form target's authority replaces
    // the Host header, so the app sees the host the request was routed by.
    if let Some(authority) = head.target_authority() {
        environ.set_item(intern!(py, "HTTP_HOST"), latin1(py, authority)?)?;
    }
    Ok(())
}

/// What joins the values of a header sent on several lines into one
/// environ string: `; ` for Cookie (RFC 6265 section 5.4, RFC 9113 section
/// 8.2.3: cookie pairs are not a comma list), `, ` for any other field
/// (RFC 9110 section 5.3).
fn repeat_separator(name: &[u8]) -> &'static str {
    if name.eq_ignore_ascii_case(b"cookie") {
        "; "
    } else {
        ", "
    }
}

/// The uwsgi packet's variables are environ entries; uWSGI's `UWSGI_*`
/// variables, which would change how the server behaves, are left out.
/// The URL scheme is `https` when the front end says so.
fn from_uwsgi<'py>(py: Python<'py>, environ: &Bound<'py, PyDict>, packet: &Packet) -> PyResult<()> {
    for (key, value) in &packet.vars {
        if key.starts_with(b"UWSGI_") {
            report_magic_variable(key);
            continue;
        }
        if key.starts_with(b"wsgi.") {
            // The server's own entries: a front end does not set them.
            continue;
        }
        environ.set_item(latin1(py, key)?, latin1(py, value)?)?;
    }
    let defaults = [
        (intern!(py, "SCRIPT_NAME"), ""),
        (intern!(py, "QUERY_STRING"), ""),
        (intern!(py, "REQUEST_METHOD"), "GET"),
        (intern!(py, "SERVER_PROTOCOL"), "HTTP/1.1"),
        (intern!(py, "SERVER_NAME"), ""),
        (intern!(py, "SERVER_PORT"), ""),
        (intern!(py, "REMOTE_ADDR"), ""),
    ];
    for (key, value) in defaults {
        if !environ.contains(key)? {
            environ.set_item(key, value)?;
        }
    }
    if !environ.contains(intern!(py, "PATH_INFO"))? {
        let uri = packet.var("REQUEST_URI").unwrap_or(b"/");
        let path = uri.split(|&b| b == b'?').next().unwrap_or(b"/");
        environ.set_item(intern!(py, "PATH_INFO"), latin1(py, &percent_decode(path))?)?;
    }
    let https = packet
        .var("HTTPS")
        .is_some_and(|value| value.eq_ignore_ascii_case(b"on") || value == b"1");
    if https {
        environ.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
    }
    Ok(())
}

/// The method as a str; the common ones are the same object every time.
fn method<'py>(py: Python<'py>, method: &str) -> Bound<'py, PyString> {
    match method {
        "GET" => intern!(py, "GET").clone(),
        "POST" => intern!(py, "POST").clone(),
        "HEAD" => intern!(py, "HEAD").clone(),
        "PUT" => intern!(py, "PUT").clone(),
        "DELETE" => intern!(py, "DELETE").clone(),
        "PATCH" => intern!(py, "PATCH").clone(),
        "OPTIONS" => intern!(py, "OPTIONS").clone(),
        other => PyString::new(py, other),
    }
}

/// `--mount` with `--manage-script-name`: a PATH_INFO that is the mountpoint
/// or under it (`/app`, `/app/x`, not `/apps`) becomes SCRIPT_NAME (the
/// mountpoint) and PATH_INFO (the rest), as uWSGI does; other paths are left
/// as they are.
fn split_script_name(
    py: Python<'_>,
    environ: &Bound<'_, PyDict>,
    mountpoint: &str,
) -> PyResult<()> {
    let mountpoint = latin1(py, mountpoint.as_bytes())?.to_string();
    let Some(path) = environ.get_item(intern!(py, "PATH_INFO"))? else {
        return Ok(());
    };
    let path: String = path.extract()?;
    let Some(rest) = path.strip_prefix(&mountpoint) else {
        return Ok(());
    };
    if !rest.is_empty() && !rest.starts_with('/') {
        return Ok(());
    }
    environ.set_item(intern!(py, "SCRIPT_NAME"), &mountpoint)?;
    environ.set_item(intern!(py, "PATH_INFO"), rest)?;
    Ok(())
}

/// Logs each distinct `UWSGI_*` variable once per worker.
fn report_magic_variable(key: &[u8]) {
    static SEEN: std::sync::Mutex<Vec<Box<[u8]>>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if seen.iter().any(|known| &**known == key) {
        return;
    }
    seen.push(Box::from(key));
    tracing::warn!(
        variable = %String::from_utf8_lossy(key),
        "ignoring uwsgi variable {} sent by the front end: mercy does not let \
         requests change how it behaves",
        String::from_utf8_lossy(key)
    );
}

/// `Content-Type` -> `CONTENT_TYPE`, `X-Foo` -> `HTTP_X_FOO`.
fn environ_key(name: &[u8]) -> String {
    let upper = |b: &u8| match b {
        b'-' => '_',
        _ => char::from(b.to_ascii_uppercase()),
    };
    if name.eq_ignore_ascii_case(b"content-type") || name.eq_ignore_ascii_case(b"content-length") {
        return name.iter().map(upper).collect();
    }
    let mut key = String::with_capacity(name.len() + 5);
    key.push_str("HTTP_");
    key.extend(name.iter().map(upper));
    key
}

#[cfg(test)]
mod tests {
    use super::{environ_key, repeat_separator};

    #[test]
    fn header_names_become_environ_keys() {
        assert_eq!(environ_key(b"Content-Type"), "CONTENT_TYPE");
        assert_eq!(environ_key(b"content-length"), "CONTENT_LENGTH");
        assert_eq!(environ_key(b"X-Forwarded-For"), "HTTP_X_FORWARDED_FOR");
    }

    #[test]
    fn cookie_lines_join_with_a_semicolon_others_with_a_comma() {
        assert_eq!(repeat_separator(b"Cookie"), "; ");
        assert_eq!(repeat_separator(b"cOOKIE"), "; ");
        assert_eq!(repeat_separator(b"Set-Cookie"), ", ");
        assert_eq!(repeat_separator(b"Accept"), ", ");
    }
}
