//! RFC 3339 timestamps as the cloud APIs write them.

use nemordp_core::Timestamp;

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses `2021-09-14T13:22:20+00:00` (RFC 3339, whole seconds, optional fraction ignored).
pub(crate) fn parse_rfc3339(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (year, month, day, hour, minute, second) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        rest = &frac[digits..];
    }
    // `+hh:mm`, or `+hhmm` as Contabo writes its cancel dates
    let offset = match rest {
        "Z" | "z" => 0,
        _ if (rest.len() == 6 && rest.as_bytes()[3] == b':') || rest.len() == 5 => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let minutes_at = rest.len() - 2;
            sign * (rest.get(1..3)?.parse::<i64>().ok()? * 3600
                + rest.get(minutes_at..)?.parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    let secs =
        days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(Timestamp::from_unix_secs(secs))
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
