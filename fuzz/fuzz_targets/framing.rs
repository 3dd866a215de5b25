//! A whole connection's framing with mercy's own head parser and body
//! decoder: optional PROXY header, pipelined heads, Content-Length and
//! chunked bodies read by an app in pieces of varied sizes. Fed whole, in
//! varied reads and byte by byte, with varied app reads: the same
//! requests, the same bodies, the same ending.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy_fuzz::{converse, head_limits, piece_sizes, split_control};

fuzz_target!(|data: &[u8]| {
    let Some((control, wire)) = split_control(data) else {
        return;
    };
    let limits = head_limits(control);
    let proxy = control & 0b1000 != 0;
    let whole_read = [wire.len().max(1)];
    let app_reads = piece_sizes(control.rotate_left(4), wire.len());

    let whole = converse(wire, limits, proxy, &whole_read, &[usize::MAX]);
    let pieces = converse(
        wire,
        limits,
        proxy,
        &piece_sizes(control, wire.len()),
        &app_reads,
    );
    assert_eq!(
        whole, pieces,
        "the connection depends on how the bytes were split or read"
    );
    let bytewise = converse(wire, limits, proxy, &[1], &[64 * 1024]);
    assert_eq!(whole, bytewise, "the connection differs byte by byte");
    let small_reads = converse(wire, limits, proxy, &whole_read, &[1, 2, 3]);
    assert_eq!(
        whole, small_reads,
        "the connection differs with small reads"
    );

    let body_bytes: usize = whole
        .requests
        .iter()
        .map(|request| request.body.len())
        .sum();
    assert!(body_bytes <= wire.len());
});
