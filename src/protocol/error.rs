//! Why a request head or a PROXY protocol header was refused, and the status that answers it.

use std::fmt;

/// What was wrong with a request head (or the PROXY protocol header before it).
///
/// Each kind maps to one status code and one log phrase; see
/// [`RequestError::status`] and [`RequestError::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestErrorKind {
    /// The request line is longer than `--limit-request-line`.
    RequestLineTooLong,
    /// The head did not end within `--buffer-size` bytes.
    HeadTooLarge,
    /// More header lines than `--limit-request-fields`.
    TooManyHeaders,
    /// One header line is longer than `--limit-request-field-size`.
    HeaderFieldTooLarge,
    /// A line of the head ends in LF without CR.
    BareLf,
    /// The method holds a byte that is not a token character.
    InvalidMethod,
    /// The method has lower-case letters (`get`, `-blargh`).
    LowercaseMethod,
    /// `CONNECT`: tunnels have no meaning for a WSGI app.
    ConnectMethod,
    /// The request target holds a control byte or other byte not allowed in it.
    InvalidTarget,
    /// The target is neither origin-form (`/path`) nor absolute-form (`http://host/path`).
    UnsupportedTargetForm,
    /// Asterisk-form (`*`) with a method other than `OPTIONS`.
    AsteriskWithoutOptions,
    /// Absolute-form target with a scheme other than `http` or `https`.
    UnsupportedScheme,
    /// Absolute-form target whose authority (`user@host:port`) is malformed.
    InvalidAuthority,
    /// The request line does not have the shape `METHOD SP target SP version`.
    MalformedRequestLine,
    /// The version is not of the form `HTTP/<digit>.<digit>`.
    MalformedVersion,
    /// A well-formed version other than HTTP/1.0 or HTTP/1.1.
    UnsupportedVersion,
    /// An HTTP/0.9 request line (no version).
    Http09,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`).
    Http2Preface,
    /// A header name holds a byte that is not a token character (or is empty).
    InvalidHeaderName,
    /// Whitespace between a header name and its colon.
    WhitespaceBeforeColon,
    /// A header line starts with SP or HTAB (obsolete line folding).
    ObsoleteLineFolding,
    /// A header value holds NUL, CR, LF, DEL or another control byte except HTAB.
    InvalidHeaderValue,
    /// Content-Length is not a plain decimal number that fits 64 bits.
    InvalidContentLength,
    /// More than one Content-Length header, even with the same value.
    RepeatedContentLength,
    /// Content-Length and Transfer-Encoding in the same request.
    ContentLengthWithTransferEncoding,
    /// Transfer-Encoding in an HTTP/1.0 request.
    TransferEncodingInHttp10,
    /// The Transfer-Encoding list has an empty or malformed element.
    MalformedTransferEncoding,
    /// `chunked` is not the final transfer coding, or appears more than once.
    ChunkedNotFinal,
    /// A transfer coding other than `chunked` (gzip, identity, ...), alone
    /// or before a final `chunked`.
    UnsupportedTransferCoding,
    /// More than one Host header.
    DuplicateHost,
    /// More than one Content-Type header.
    DuplicateContentType,
    /// PROXY protocol was required and the connection did not start with it.
    MissingProxyHeader,
    /// A PROXY protocol v1 (text) header that does not follow the specification.
    InvalidProxyV1,
    /// A PROXY protocol v2 (binary) header that does not follow the specification.
    InvalidProxyV2,
}

impl RequestErrorKind {
    /// The status code that answers this error.
    pub fn status(self) -> u16 {
        use RequestErrorKind::*;
        match self {
            RequestLineTooLong => 414,
            HeadTooLarge | TooManyHeaders | HeaderFieldTooLarge => 431,
            ConnectMethod | UnsupportedTransferCoding => 501,
            UnsupportedVersion | Http09 | Http2Preface => 505,
            _ => 400,
        }
    }

    /// A short phrase for the log that names what was wrong.
    pub fn reason(self) -> &'static str {
        use RequestErrorKind::*;
        match self {
            RequestLineTooLong => "request line longer than --limit-request-line",
            HeadTooLarge => "request head larger than --buffer-size",
            TooManyHeaders => "more header fields than --limit-request-fields",
            HeaderFieldTooLarge => "header field longer than --limit-request-field-size",
            BareLf => "bare LF where CRLF is required",
            InvalidMethod => "invalid character in method",
            LowercaseMethod => "method is not upper case",
            ConnectMethod => "CONNECT is not supported",
            InvalidTarget => "invalid character in request target",
            UnsupportedTargetForm => "request target is neither a path nor an absolute URI",
            AsteriskWithoutOptions => "asterisk request target with a method other than OPTIONS",
            UnsupportedScheme => "absolute request target with a scheme other than http or https",
            InvalidAuthority => "malformed host in absolute request target",
            MalformedRequestLine => "malformed request line",
            MalformedVersion => "malformed HTTP version",
            UnsupportedVersion => "HTTP version other than 1.0 or 1.1",
            Http09 => "HTTP/0.9 request",
            Http2Preface => "HTTP/2 connection preface on an HTTP/1.1 socket",
            InvalidHeaderName => "invalid character in header name",
            WhitespaceBeforeColon => "whitespace between header name and colon",
            ObsoleteLineFolding => "obsolete line folding in header",
            InvalidHeaderValue => "invalid character in header value",
            InvalidContentLength => "malformed Content-Length",
            RepeatedContentLength => "more than one Content-Length header",
            ContentLengthWithTransferEncoding => "both Content-Length and Transfer-Encoding",
            TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            MalformedTransferEncoding => "malformed Transfer-Encoding list",
            ChunkedNotFinal => "chunked is not the single final transfer coding",
            UnsupportedTransferCoding => "unsupported transfer coding (only chunked is)",
            DuplicateHost => "more than one Host header",
            DuplicateContentType => "more than one Content-Type header",
            MissingProxyHeader => "missing PROXY protocol header",
            InvalidProxyV1 => "malformed PROXY protocol v1 header",
            InvalidProxyV2 => "malformed PROXY protocol v2 header",
        }
    }
}

/// A request head (or PROXY header) that mercy refuses.
///
/// `Display` gives the reason with the configured limit, for the log:
/// `request line longer than --limit-request-line (4094)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestError {
    kind: RequestErrorKind,
    limit: Option<usize>,
}

impl RequestError {
    /// An error of `kind` that is not about a limit.
    pub(crate) fn new(kind: RequestErrorKind) -> Self {
        RequestError { kind, limit: None }
    }

    /// An error of `kind` raised because the configured `limit` was exceeded.
    pub(crate) fn over_limit(kind: RequestErrorKind, limit: usize) -> Self {
        RequestError {
            kind,
            limit: Some(limit),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> RequestErrorKind {
        self.kind
    }

    /// The status code to answer with: 400, 414, 431, 501 or 505.
    pub fn status(&self) -> u16 {
        self.kind.status()
    }

    /// A short phrase naming what was wrong (and which option's limit was hit).
    ///
    /// The limit's value is in the `Display` output, not here.
    pub fn reason(&self) -> &'static str {
        self.kind.reason()
    }

    /// The configured limit that was exceeded, for the 414 and 431 kinds.
    pub fn limit(&self) -> Option<usize> {
        self.limit
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.limit {
            Some(limit) => write!(f, "{} ({limit})", self.reason()),
            None => f.write_str(self.reason()),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<RequestErrorKind> for RequestError {
    fn from(kind: RequestErrorKind) -> Self {
        RequestError::new(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_limit() {
        let error = RequestError::over_limit(RequestErrorKind::RequestLineTooLong, 4094);
        assert_eq!(
            error.to_string(),
            "request line longer than --limit-request-line (4094)"
        );
        assert_eq!(error.status(), 414);
        assert_eq!(error.limit(), Some(4094));
    }

    #[test]
    fn statuses_follow_the_policy() {
        assert_eq!(RequestErrorKind::HeadTooLarge.status(), 431);
        assert_eq!(RequestErrorKind::UnsupportedTransferCoding.status(), 501);
        assert_eq!(RequestErrorKind::ConnectMethod.status(), 501);
        assert_eq!(RequestErrorKind::UnsupportedVersion.status(), 505);
        assert_eq!(RequestErrorKind::BareLf.status(), 400);
        assert_eq!(
            RequestError::new(RequestErrorKind::BareLf).to_string(),
            "bare LF where CRLF is required"
        );
    }
}
