//! PROXY protocol v1 and v2 headers: the answer for a growing buffer is
//! settled at one length and never changes after it, the header's own bytes
//! are enough, and a v1 header is never longer than 107 bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy::protocol::{parse_proxy, proxy_header_present};

/// Prefixes checked one by one; longer inputs are checked at every 7th length.
const EVERY_LENGTH_UP_TO: usize = 256;

fuzz_target!(|data: &[u8]| {
    let whole = parse_proxy(data);
    let present = proxy_header_present(data);

    if present == Some(false) {
        assert!(whole.is_err(), "no signature, yet {whole:?}");
    }
    match &whole {
        Ok(Some((header, used))) => {
            assert!(*used <= data.len());
            if data.starts_with(b"PROXY ") {
                assert!(*used <= 107, "v1 header of {used} bytes");
            }
            assert_eq!(parse_proxy(&data[..*used]), Ok(Some((*header, *used))));
        }
        Ok(None) => assert_ne!(present, Some(false)),
        Err(error) => assert_eq!(error.status(), 400),
    }

    // Once a prefix settles the answer (or that a header is there), longer
    // buffers agree.
    let mut settled = None;
    let mut present_settled = None;
    for length in 0..=data.len() {
        if length > EVERY_LENGTH_UP_TO && length % 7 != 0 && length != data.len() {
            continue;
        }
        let prefix = &data[..length];
        if let Some(answer) = proxy_header_present(prefix) {
            let before = *present_settled.get_or_insert(answer);
            assert_eq!(before, answer, "presence changed at {length} bytes");
        }
        let result = parse_proxy(prefix);
        match (&settled, &result) {
            (None, Ok(None)) => {}
            (None, _) => settled = Some(result),
            (Some(Ok(Some(first))), Ok(Some(now))) => assert_eq!(first, now),
            (Some(Err(_)), Err(_)) => {}
            (Some(first), now) => panic!("{first:?} became {now:?} at {length} bytes"),
        }
    }
});
