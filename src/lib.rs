//! mercy: an application server for Python WSGI apps. A Rust master
//! supervises worker processes that embed CPython and serve HTTP/1.1.

pub mod config;
pub mod control;
pub mod logging;
pub mod master;
pub mod protocol;
pub mod worker;
pub mod wsgi;
