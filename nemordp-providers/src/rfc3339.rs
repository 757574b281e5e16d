//! RFC 3339 timestamps as the cloud APIs write them.

use nemordp_core::Timestamp;

/// Parses `2021-09-14T13:22:20+00:00` with [`Timestamp::parse_rfc3339`], in whole seconds (a
/// fraction is dropped). Also takes the `+hhmm` offsets Contabo writes in its cancel dates,
/// which the strict parser refuses.
pub(crate) fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    // A date and a time at least: a bare date is no machine's creation time.
    if s.len() < 20 {
        return None;
    }
    let b = s.as_bytes();
    let compact_offset = b.len() >= 24
        && matches!(b[b.len() - 5], b'+' | b'-')
        && b[b.len() - 4..].iter().all(u8::is_ascii_digit);
    let parsed = if compact_offset {
        let (hours, minutes) = s.split_at(s.len() - 2);
        Timestamp::parse_rfc3339(&format!("{hours}:{minutes}"))
    } else {
        Timestamp::parse_rfc3339(s)
    };
    parsed
        .ok()
        .map(|t| Timestamp::from_unix_secs(t.as_unix_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(
            parse_rfc3339("1970-01-01T00:00:00Z"),
            Some(Timestamp::from_unix_secs(0))
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T01:00:00+01:00"),
            Some(Timestamp::from_unix_secs(951_868_800))
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T12:00:00.123Z"),
            Some(Timestamp::from_unix_secs(1_709_208_000))
        );
        assert_eq!(
            parse_rfc3339("2021-06-03T00:00:00.000+0000"),
            Some(Timestamp::from_unix_secs(1_622_678_400))
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(parse_rfc3339(""), None);
    }

    /// `(y, m, d, hh, mm, ss)` of a Unix time, read from an HTTP date (an independent
    /// formatter, so the parser is not checked against itself).
    fn civil(secs: u64) -> (u32, u32, u32, u32, u32, u32) {
        let text =
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        // "Sun, 06 Nov 1994 08:49:37 GMT"
        let parts: Vec<&str> = text.split([' ', ':']).collect();
        let month = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ]
        .iter()
        .position(|m| *m == parts[2])
        .unwrap();
        let n = |i: usize| parts[i].parse::<u32>().unwrap();
        (
            n(3),
            u32::try_from(month).unwrap() + 1,
            n(1),
            n(4),
            n(5),
            n(6),
        )
    }

    proptest::proptest! {
        #[test]
        fn parses_what_an_independent_formatter_wrote(
            secs in 86_400_u64..4_102_444_800,
            offset_min in -720_i64..=840,
            colon in proptest::bool::ANY,
            millis in proptest::option::of(0_u32..1000),
        ) {
            let local = secs.checked_add_signed(offset_min * 60).unwrap();
            let (y, mo, d, h, mi, s) = civil(local);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let (oh, om) = (offset_min.abs() / 60, offset_min.abs() % 60);
            let frac = millis.map(|m| format!(".{m:03}")).unwrap_or_default();
            let zone = if offset_min == 0 && !colon {
                "Z".to_owned()
            } else if colon {
                format!("{sign}{oh:02}:{om:02}")
            } else {
                format!("{sign}{oh:02}{om:02}")
            };
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}");
            let want = Timestamp::from_unix_secs(i64::try_from(secs).unwrap());
            proptest::prop_assert_eq!(parse_rfc3339(&text), Some(want), "{}", text);
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_rfc3339(&text);
        }
    }
}
