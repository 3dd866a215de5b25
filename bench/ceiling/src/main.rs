//! The benchmark's ceiling: a hyper HTTP/1.1 server with no Python that
//! answers the same bytes as `bench/apps/app.py`, so the results show how
//! close a Python server gets to what the machine can do.
//!
//! Usage: `mercy-bench-ceiling 127.0.0.1:PORT` (one process, a tokio
//! runtime with one thread per core, keep-alive on).

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const HELLO: &[u8] = b"Hello, World!\n";
const TEN_KB: [u8; 10240] = [b'x'; 10240];

/// Answers one request the way the benchmark app does.
async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let body = match path.as_str() {
        "/" | "/sleep" => Bytes::from_static(HELLO),
        "/10k" => Bytes::from_static(&TEN_KB),
        "/echo" => match request.into_body().collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => Bytes::new(),
        },
        _ => {
            let response = Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .expect("a static response is valid");
            return Ok(response);
        }
    };

    let response = Response::builder()
        .header("Content-Type", "text/plain")
        .body(Full::new(body))
        .expect("a static response is valid");
    Ok(response)
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let address: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8000".to_owned())
        .parse()
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidInput, error))?;
    let listener = TcpListener::bind(address).await?;

    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            // A client that goes away mid-request is not worth a log line.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}
