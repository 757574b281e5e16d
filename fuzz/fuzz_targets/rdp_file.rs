//! `.rdp` file writer: whatever host, user, port and size are accepted, the rendered file has
//! exactly the baseline's keys in the baseline's order, CRLF line ends, no other control
//! character, and one `full address` / `username` each with exactly the accepted values.
//!
//! Input: `host 0xFF username 0xFF numbers`. 0xFF never occurs in UTF-8, so the two text
//! fields can be any string; `numbers` is an optional big-endian port (2 bytes) and desktop
//! width and height (2 bytes each).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nemordp_core::rdp::RdpFile;

#[derive(Debug)]
struct Numbers {
    port: Option<u16>,
    size: Option<(u16, u16)>,
}

impl Numbers {
    fn parse(b: &[u8]) -> Self {
        let be = |i: usize| b.get(i..i + 2).map(|x| u16::from_be_bytes([x[0], x[1]]));
        Self {
            port: be(0),
            size: be(2).zip(be(4)),
        }
    }
}

fn keys(text: &str) -> Vec<String> {
    RdpFile::parse_settings(text)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let mut fields = data.splitn(3, |b| *b == 0xff);
    let (Some(host), Some(user)) = (fields.next(), fields.next()) else {
        return;
    };
    let (Ok(host), Ok(user)) = (std::str::from_utf8(host), std::str::from_utf8(user)) else {
        return;
    };
    let numbers = Numbers::parse(fields.next().unwrap_or(&[]));

    let Ok(mut file) = RdpFile::new(host, user) else {
        return;
    };
    let mut baseline = RdpFile::new("192.0.2.1", "u").unwrap();
    if let Some(port) = numbers.port {
        match file.with_port(port) {
            Ok(f) => file = f,
            Err(_) => {
                assert_eq!(port, 0, "port {port} refused");
                return;
            }
        }
        assert_ne!(port, 0, "port 0 accepted");
    }
    if let Some((w, h)) = numbers.size {
        match file.with_size(w, h) {
            Ok(f) => file = f,
            Err(_) => return,
        }
        assert!(
            (200..=8192).contains(&w) && (200..=8192).contains(&h),
            "size {w}x{h} accepted"
        );
        baseline = baseline.with_size(1024, 768).unwrap();
    }

    let text = file.render();
    let base = baseline.render();

    // Line structure: every line ends in CRLF, and nothing else is a control character.
    assert!(text.ends_with("\r\n"), "no final CRLF: {text:?}");
    for line in text.split_terminator("\r\n") {
        assert!(
            !line.chars().any(char::is_control),
            "control character in line {line:?}"
        );
        // Unicode line/paragraph separators would split the line in some readers.
        assert!(
            !line.contains(['\u{2028}', '\u{2029}']),
            "unicode line separator in line {line:?}"
        );
    }
    assert_eq!(
        text.matches("\r\n").count(),
        base.matches("\r\n").count(),
        "line count differs: {text:?}"
    );

    // The same keys in the same order as the baseline.
    assert_eq!(keys(&text), keys(&base), "keys differ: {text:?}");

    // Exactly one full address and one username, with exactly the accepted values.
    let settings = RdpFile::parse_settings(&text);
    let values = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    let expected_address = format!("s:{}", file.full_address());
    assert_eq!(values("full address"), [expected_address.as_str()]);
    let expected_user = format!("s:{user}");
    assert_eq!(values("username"), [expected_user.as_str()]);
    let port = numbers.port.unwrap_or(3389);
    assert!(
        file.full_address().ends_with(&format!(":{port}")),
        "full address {:?} lost port {port}",
        file.full_address()
    );
});
