//! uwsgi protocol packets (nginx `uwsgi_pass`): the answer for a growing
//! buffer is settled at one length and never changes after it, the packet's
//! own bytes are enough, and what `encode_packet` writes parses back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy::protocol::uwsgi::{encode_packet, parse_packet};
use mercy_fuzz::split_control;

/// Prefixes checked one by one; longer inputs are checked at every 7th length.
const EVERY_LENGTH_UP_TO: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((control, wire)) = split_control(data) else {
        return;
    };
    // --buffer-size and --max-vars: small ones, and generous ones.
    let (max_size, max_vars) = match control & 0b11 {
        0 => (4096, 128),
        1 => (32, 3),
        2 => (65535, 1000),
        _ => (0, 0),
    };
    let whole = parse_packet(wire, max_size, max_vars);

    if let Ok(Some((packet, consumed))) = &whole {
        assert!(*consumed <= wire.len() && *consumed >= 4);
        assert!(packet.vars.len() <= max_vars);
        assert!(packet.vars.iter().all(|(key, _)| !key.is_empty()));
        assert_eq!(parse_packet(&wire[..*consumed], max_size, max_vars), whole);

        let vars: Vec<(&[u8], &[u8])> = packet.vars.iter().map(|(k, v)| (&**k, &**v)).collect();
        let encoded = encode_packet(&vars);
        let (again, used) = parse_packet(&encoded, max_size, max_vars)
            .expect("an encoded packet parses")
            .expect("an encoded packet is whole");
        assert_eq!((again.vars, used), (packet.vars.clone(), *consumed));
    }

    // Once a prefix settles the answer, longer buffers agree.
    let mut settled = None;
    for length in 0..=wire.len() {
        if length > EVERY_LENGTH_UP_TO && length % 7 != 0 && length != wire.len() {
            continue;
        }
        let result = parse_packet(&wire[..length], max_size, max_vars);
        match (&settled, &result) {
            (None, Ok(None)) => {}
            (None, _) => settled = Some(result),
            (Some(first), now) => assert_eq!(first, now, "changed at {length} bytes"),
        }
    }
});
