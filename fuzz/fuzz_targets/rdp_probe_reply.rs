//! RDP probe reply parser: never panics on any bytes; an accepted packet is a whole TPKT
//! packet holding an X.224 Connection Confirm, and the negotiation result matches its bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nemordp_core::rdp::{probe, Negotiation};

fuzz_target!(|data: &[u8]| {
    let header: Option<[u8; 4]> = data.get(..4).and_then(|h| h.try_into().ok());
    let tpkt = header.map(probe::tpkt_length);
    if let Some(Ok(len)) = tpkt {
        assert!(
            (11..=1024).contains(&len),
            "implausible length {len} accepted"
        );
        assert_eq!(data[0], 0x03);
        assert_eq!(data[1], 0x00);
    }

    let Ok(negotiation) = probe::parse_connection_confirm(data) else {
        return;
    };
    assert!(data.len() >= 11, "short packet accepted: {data:02x?}");
    assert_eq!(
        data[5] & 0xf0,
        0xd0,
        "not a Connection Confirm: {data:02x?}"
    );
    assert_eq!(tpkt, Some(Ok(data.len())), "TPKT length != packet length");
    assert_eq!(usize::from(data[4]) + 5, data.len(), "X.224 LI mismatch");
    let value = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().unwrap());
    match negotiation {
        Negotiation::Legacy => assert_eq!(data.len(), 11),
        Negotiation::Selected(v) => {
            assert_eq!(data.len(), 19);
            assert_eq!(data[11], 0x02);
            assert_eq!(&data[13..15], &[8, 0]);
            assert_eq!(v, value(15));
        }
        Negotiation::Failure(v) => {
            assert_eq!(data.len(), 19);
            assert_eq!(data[11], 0x03);
            assert_eq!(&data[13..15], &[8, 0]);
            assert_eq!(v, value(15));
        }
    }
});
