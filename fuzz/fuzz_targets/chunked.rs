//! Chunked request bodies: the decoder gives the same bytes and the same
//! ending however the input is split, and keeps its contract on every call
//! (see `mercy_fuzz::decode_chunked`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy_fuzz::{chunk_limits, decode_chunked, piece_sizes, split_control};

fuzz_target!(|data: &[u8]| {
    let Some((control, body)) = split_control(data) else {
        return;
    };
    let limits = chunk_limits(control);
    let whole = decode_chunked(body, limits, &[body.len().max(1)]);
    assert!(whole.body.len() <= body.len());
    if let Some(Ok(end)) = whole.end {
        assert!(end <= body.len());
    }

    let pieces = decode_chunked(body, limits, &piece_sizes(control, body.len()));
    assert_eq!(
        whole, pieces,
        "the answer depends on how the bytes were split"
    );
    let bytewise = decode_chunked(body, limits, &[1]);
    assert_eq!(whole, bytewise, "the answer differs byte by byte");
});
