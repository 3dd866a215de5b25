//! uwsgi packets (nginx `uwsgi_pass`): `parse_packet` against a model.
//!
//! The first input byte chooses the limits (`--buffer-size`, `--max-vars`)
//! and the mode:
//! - round trip: the rest of the input describes variables; `encode_packet`
//!   then `parse_packet` gives them back in order, with the body untouched,
//!   or exactly the refusal the limits call for (too large, too many
//!   variables, an empty name), and every shorter prefix asks for more;
//! - raw bytes: `parse_packet` on arbitrary bytes never panics, an accepted
//!   packet re-encodes to the same bytes, its own bytes are enough, and no
//!   prefix of it is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mercy::protocol::uwsgi::{encode_packet, parse_packet, Packet, PacketError};

/// `--buffer-size` choices: tiny, mercy's default, the largest a 16-bit
/// size can carry, and small odd sizes near packet sizes the fuzzer makes.
fn max_size(control: u8) -> usize {
    match control & 0b111 {
        0 => 4096,
        1 => 65535,
        2 => 0,
        3 => 16,
        4 => 64,
        5 => 255,
        6 => 1024,
        _ => 21573, // "ET" read as a size: HTTP mistaken for a header
    }
}

/// `--max-vars` choices: mercy's default, none to spare, and a few.
fn max_vars(control: u8) -> usize {
    match (control >> 3) & 0b11 {
        0 => 64,
        1 => 1,
        2 => 3,
        _ => 32768,
    }
}

/// Lengths of every prefix to check: all up to 300, then every 37th, and
/// the last few.
fn prefix_lengths(total: usize) -> impl Iterator<Item = usize> {
    (0..total).filter(move |&k| k <= 300 || k % 37 == 0 || k + 4 >= total)
}

/// A variable's name and value.
type OwnedVar = (Vec<u8>, Vec<u8>);

/// Variables from fuzz bytes: each is a length byte for the name (0 to 15,
/// so empty names occur), a length byte for the value (0 to 63), then the
/// bytes (reused cyclically when the input runs out).
fn variables(bytes: &[u8]) -> (Vec<OwnedVar>, &[u8]) {
    let mut vars = Vec::new();
    let mut rest = bytes;
    // A zero byte after a variable ends the list; what follows is the body.
    while let [key_len, value_len, tail @ ..] = rest {
        let key_len = usize::from(key_len % 16);
        let value_len = usize::from(value_len % 64);
        let take = |from: &[u8], n: usize| -> Vec<u8> {
            (0..n)
                .map(|i| from.get(i).copied().unwrap_or(b'a' + (i % 26) as u8))
                .collect()
        };
        let key = take(tail, key_len);
        let value = take(tail.get(key_len..).unwrap_or(&[]), value_len);
        vars.push((key, value));
        let used = (key_len + value_len).min(tail.len());
        rest = &tail[used..];
        match rest.split_first() {
            Some((0, body)) => return (vars, body),
            Some((_, more)) => rest = more,
            None => break,
        }
    }
    (vars, rest)
}

/// What parse_packet must answer for a whole encoded packet.
fn expected(
    vars: &[OwnedVar],
    block_size: usize,
    max_size: usize,
    max_vars: usize,
) -> Result<(), PacketError> {
    if block_size > max_size {
        return Err(PacketError::TooLarge {
            size: block_size,
            max: max_size,
        });
    }
    for (index, (key, _)) in vars.iter().enumerate() {
        if index == max_vars {
            return Err(PacketError::TooManyVars { max: max_vars });
        }
        if key.is_empty() {
            return Err(PacketError::EmptyKey);
        }
    }
    Ok(())
}

fn round_trip(control: u8, bytes: &[u8]) {
    let (max_size, max_vars) = (max_size(control), max_vars(control));
    let (vars, body) = variables(bytes);
    let block_size: usize = vars.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
    if block_size > usize::from(u16::MAX) {
        return; // a packet cannot say it; encode_packet would wrap the size
    }
    let borrowed: Vec<(&[u8], &[u8])> = vars
        .iter()
        .map(|(k, v)| (k.as_slice(), v.as_slice()))
        .collect();
    let packet = encode_packet(&borrowed);
    assert_eq!(packet.len(), 4 + block_size);
    assert_eq!(packet[0], 0, "modifier1");
    assert_eq!(packet[3], 0, "modifier2");
    assert_eq!(
        usize::from(u16::from_le_bytes([packet[1], packet[2]])),
        block_size
    );

    let mut wire = packet.clone();
    wire.extend_from_slice(body);
    let whole = parse_packet(&wire, max_size, max_vars);
    match expected(&vars, block_size, max_size, max_vars) {
        Ok(()) => {
            let (parsed, consumed) = whole
                .unwrap_or_else(|e| panic!("refused a valid packet: {e}"))
                .expect("the whole packet is there");
            assert_eq!(consumed, packet.len(), "the body must not be consumed");
            assert_eq!(&wire[consumed..], body);
            assert_eq!((parsed.modifier1, parsed.modifier2), (0, 0));
            let got: Vec<(&[u8], &[u8])> = parsed.vars.iter().map(|(k, v)| (&**k, &**v)).collect();
            assert_eq!(got, borrowed, "the variables did not round-trip");
            // The packet's own bytes are enough, and more bytes change nothing.
            assert_eq!(
                parse_packet(&packet, max_size, max_vars),
                Ok(Some((parsed.clone(), consumed)))
            );
            // Every lookup finds the last variable of that name, as the
            // environ does.
            for (key, _) in &vars {
                if let Ok(name) = std::str::from_utf8(key) {
                    let last = vars
                        .iter()
                        .rev()
                        .find(|(k, _)| k == key)
                        .map(|(_, v)| v.as_slice());
                    assert_eq!(parsed.var(name), last);
                }
            }
        }
        Err(error) => assert_eq!(whole, Err(error)),
    }

    // Shorter prefixes ask for more, except a size over the limit, which
    // is known from the 4-byte header.
    for end in prefix_lengths(packet.len()) {
        let answer = parse_packet(&wire[..end], max_size, max_vars);
        if end >= 4 && block_size > max_size {
            assert_eq!(
                answer,
                Err(PacketError::TooLarge {
                    size: block_size,
                    max: max_size
                })
            );
        } else {
            assert_eq!(
                answer,
                Ok(None),
                "prefix of {end} bytes of {}",
                packet.len()
            );
        }
    }
}

fn raw(control: u8, wire: &[u8]) {
    let (max_size, max_vars) = (max_size(control), max_vars(control));
    let whole = parse_packet(wire, max_size, max_vars);
    match &whole {
        Ok(Some((packet, consumed))) => {
            let consumed = *consumed;
            assert!(consumed >= 4 && consumed <= wire.len());
            let size = usize::from(u16::from_le_bytes([wire[1], wire[2]]));
            assert_eq!(consumed, 4 + size);
            assert!(size <= max_size);
            assert!(packet.vars.len() <= max_vars);
            assert!(packet.vars.iter().all(|(key, _)| !key.is_empty()));
            assert_eq!((packet.modifier1, packet.modifier2), (wire[0], wire[3]));
            let vars: Vec<(&[u8], &[u8])> = packet.vars.iter().map(|(k, v)| (&**k, &**v)).collect();
            let encoded = encode_packet(&vars);
            assert_eq!(encoded.len(), consumed);
            // encode_packet writes modifier1 and modifier2 as 0.
            assert_eq!(encoded[1..3], wire[1..3], "re-encoding gives another size");
            assert_eq!(
                encoded[4..],
                wire[4..consumed],
                "re-encoding gives other bytes"
            );
            assert_eq!(parse_packet(&wire[..consumed], max_size, max_vars), whole);
            check_prefixes(wire, consumed, max_size, max_vars, &whole);
        }
        Ok(None) => {
            // Waiting for more only while the packet is incomplete.
            if wire.len() >= 4 {
                let size = usize::from(u16::from_le_bytes([wire[1], wire[2]]));
                assert!(size <= max_size && wire.len() < 4 + size);
            }
        }
        Err(_) => {}
    }
}

/// No prefix of an accepted packet is refused or accepted: the answer
/// does not depend on how the bytes arrive.
fn check_prefixes(
    wire: &[u8],
    consumed: usize,
    max_size: usize,
    max_vars: usize,
    whole: &Result<Option<(Packet, usize)>, PacketError>,
) {
    for end in prefix_lengths(consumed) {
        assert_eq!(
            parse_packet(&wire[..end], max_size, max_vars),
            Ok(None),
            "prefix of {end} bytes of a packet of {consumed}: {whole:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    if control & 0b1000_0000 == 0 {
        round_trip(control, rest);
    } else {
        raw(control, rest);
    }
});
