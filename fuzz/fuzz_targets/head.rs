//! Request heads: `HeadParser` fed in pieces gives the same answer as
//! `parse_head` on the whole buffer, and every accepted head obeys mercy's
//! policy (DESIGN.md section 6).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy::protocol::{parse_head, HeadParser};
use mercy_fuzz::{check_head_policy, head_limits, piece_sizes, split_control};

fuzz_target!(|data: &[u8]| {
    let Some((control, wire)) = split_control(data) else {
        return;
    };
    let limits = head_limits(control);
    let whole = parse_head(wire, &limits);

    // The same bytes arriving in reads of varied sizes, then one at a time.
    for sizes in [piece_sizes(control, wire.len()), vec![1]] {
        let mut parser = HeadParser::new(limits);
        let mut end = 0;
        let mut sizes = sizes.iter().cycle();
        let pieces = loop {
            end = (end + sizes.next().expect("the cycle never ends")).min(wire.len());
            let result = parser.parse(&wire[..end]);
            if !matches!(result, Ok(None)) || end == wire.len() {
                break result;
            }
        };
        assert_eq!(
            whole, pieces,
            "the answer depends on how the bytes were split"
        );
    }

    match &whole {
        Ok(Some((head, consumed))) => {
            check_head_policy(head, *consumed, &limits);
            // The head's own bytes are enough, and the body's bytes never count.
            assert_eq!(parse_head(&wire[..*consumed], &limits), whole);
        }
        // Waiting for more is only possible below --buffer-size.
        Ok(None) => assert!(wire.len() < limits.max_head_bytes),
        Err(error) => assert!((400..=599).contains(&error.status())),
    }
});
