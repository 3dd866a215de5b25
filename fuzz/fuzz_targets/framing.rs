//! A whole connection's framing: optional PROXY header, pipelined heads,
//! Content-Length and chunked bodies, exactly as fed whole, in varied reads
//! and byte by byte: the same requests, the same bodies, the same ending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy_fuzz::{converse, head_limits, piece_sizes, split_control};

fuzz_target!(|data: &[u8]| {
    let Some((control, wire)) = split_control(data) else {
        return;
    };
    let limits = head_limits(control);
    let proxy = control & 0b1000 != 0;

    let whole = converse(wire, limits, proxy, &[wire.len().max(1)]);
    let pieces = converse(wire, limits, proxy, &piece_sizes(control, wire.len()));
    assert_eq!(
        whole, pieces,
        "the connection depends on how the bytes were split"
    );
    let bytewise = converse(wire, limits, proxy, &[1]);
    assert_eq!(whole, bytewise, "the connection differs byte by byte");

    let body_bytes: usize = whole
        .requests
        .iter()
        .map(|request| request.body.len())
        .sum();
    assert!(body_bytes <= wire.len());
});
