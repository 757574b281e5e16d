//! Time as a dependency: every component reads "now" from a [`Clock`] so that tests can run a
//! 45-minute Windows boot in milliseconds under `tokio::time::pause`.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// A point in time as whole milliseconds since the Unix epoch (UTC).
///
/// Plain integers store losslessly in every database and compare cheaply.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Self = Self(0);

    /// From milliseconds since the Unix epoch.
    pub const fn from_unix_millis(ms: i64) -> Self {
        Self(ms)
    }

    /// From whole seconds since the Unix epoch.
    pub const fn from_unix_secs(secs: i64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> i64 {
        self.0
    }

    /// Whole seconds since the Unix epoch (floored).
    pub const fn as_unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }

    /// The wall-clock time now. Only [`SystemClock`] should call this.
    pub fn from_system_time(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// `self - d`, saturating.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(
            self.0
                .saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        )
    }

    /// `self` plus `months` calendar months, at the same time of day. The day of month is
    /// clamped to the target month's length (Jan 31 + 1 month = Feb 28, or 29 in a leap year),
    /// as billing systems do. Saturates at the representable range.
    #[must_use]
    pub fn add_months(self, months: u32) -> Self {
        let ms = self.0.rem_euclid(86_400_000);
        let days = self.0.div_euclid(86_400_000);
        let (y, m, d) = civil_from_days(days);
        let index = y
            .saturating_mul(12)
            .saturating_add(i64::from(m) - 1)
            .saturating_add(i64::from(months));
        let (y2, m2) = (
            index.div_euclid(12),
            u32::try_from(index.rem_euclid(12)).unwrap_or(0) + 1,
        );
        let d2 = d.min(days_in_month(y2, m2));
        Self(
            days_from_civil(y2, m2, d2)
                .saturating_mul(86_400_000)
                .saturating_add(ms),
        )
    }

    /// Parses an RFC 3339 time as APIs send it: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`
    /// (`t`/space for `T`, `z` for `Z` accepted; fractions beyond milliseconds are truncated),
    /// or a bare date `YYYY-MM-DD` (midnight UTC). Anything else, including impossible dates
    /// such as February 30, is `InvalidInput`.
    pub fn parse_rfc3339(text: &str) -> crate::Result<Self> {
        let bad = || crate::Error::invalid_input(format!("{text:?} is not an RFC 3339 time"));
        let b = text.trim().as_bytes();
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let digits = b.get(r)?;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(digits).ok()?.parse().ok()
        };
        let (year, month, day) = (
            num(0..4).ok_or_else(bad)?,
            num(5..7).ok_or_else(bad)?,
            num(8..10).ok_or_else(bad)?,
        );
        if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
            return Err(bad());
        }
        let month = u32::try_from(month)
            .ok()
            .filter(|m| (1..=12).contains(m))
            .ok_or_else(bad)?;
        let day = u32::try_from(day)
            .ok()
            .filter(|d| *d >= 1 && *d <= days_in_month(year, month))
            .ok_or_else(bad)?;
        let date_ms = days_from_civil(year, month, day) * 86_400_000;
        if b.len() == 10 {
            return Ok(Self(date_ms));
        }
        if !matches!(b.get(10), Some(b'T' | b't' | b' '))
            || b.get(13) != Some(&b':')
            || b.get(16) != Some(&b':')
        {
            return Err(bad());
        }
        let (h, mi, sec) = (
            num(11..13).ok_or_else(bad)?,
            num(14..16).ok_or_else(bad)?,
            num(17..19).ok_or_else(bad)?,
        );
        if h > 23 || mi > 59 || sec > 60 {
            return Err(bad());
        }
        let mut i = 19;
        let mut frac_ms = 0;
        if b.get(i) == Some(&b'.') {
            let start = i + 1;
            i = start;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return Err(bad());
            }
            // Milliseconds: the first three digits, padded.
            for k in 0..3 {
                frac_ms = frac_ms * 10
                    + b.get(start + k)
                        .filter(|_| start + k < i)
                        .map_or(0, |c| i64::from(c - b'0'));
            }
        }
        let offset_ms = match b.get(i..) {
            Some(b"Z" | b"z") => 0,
            Some([sign @ (b'+' | b'-'), _, _, b':', _, _]) => {
                let oh = num(i + 1..i + 3).ok_or_else(bad)?;
                let om = num(i + 4..i + 6).ok_or_else(bad)?;
                if oh > 23 || om > 59 {
                    return Err(bad());
                }
                let off = (oh * 60 + om) * 60_000;
                if *sign == b'+' { off } else { -off }
            }
            _ => return Err(bad()),
        };
        // A leap second reads as the last millisecond of its minute's end.
        let secs = h * 3600 + mi * 60 + sec.min(59);
        Ok(Self(date_ms + secs * 1000 + frac_ms - offset_ms))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Timestamp({self})")
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T20:07:00.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since the Unix epoch of a proleptic-Gregorian date (inverse of `civil_from_days`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// A source of "now".
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Timestamp {
        (**self).now()
    }
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the one sanctioned wall-clock read
    fn now(&self) -> Timestamp {
        Timestamp::from_system_time(SystemTime::now())
    }
}

/// Wall-clock time at construction plus the elapsed `tokio::time::Instant` since then.
///
/// Under `tokio::time::pause` the Tokio clock only moves when the runtime advances it, so this
/// clock moves with it: timestamps written by a paused-clock test line up with its sleeps.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: Timestamp,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// Starts counting from the wall clock now.
    pub fn new() -> Self {
        Self::starting_at(SystemClock.now())
    }

    /// Starts counting from `base` (handy for reproducible tests).
    pub fn starting_at(base: Timestamp) -> Self {
        Self {
            base,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        self.base.saturating_add(self.started.elapsed())
    }
}

/// A clock that moves only when told to. Cloning shares the same time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `start`.
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start.as_unix_millis())),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `t` (may go backwards, to test clock skew).
    pub fn set(&self, t: Timestamp) {
        self.now.store(t.as_unix_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.now.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> Timestamp {
        Timestamp::parse_rfc3339(text).unwrap()
    }

    #[test]
    fn calendar_months_clamp_to_the_month_end() {
        assert_eq!(
            at("2026-01-31T10:00:00Z").add_months(1),
            at("2026-02-28T10:00:00Z")
        );
        assert_eq!(
            at("2028-01-31T10:00:00Z").add_months(1),
            at("2028-02-29T10:00:00Z")
        );
        assert_eq!(
            at("2026-03-31T00:00:00.250Z").add_months(1),
            at("2026-04-30T00:00:00.250Z")
        );
        assert_eq!(at("2026-11-15").add_months(3), at("2027-02-15"));
        assert_eq!(at("2026-08-31").add_months(6), at("2027-02-28"));
        assert_eq!(at("2024-02-29").add_months(12), at("2025-02-28"));
        assert_eq!(
            at("1969-12-31T23:59:59Z").add_months(1),
            at("1970-01-31T23:59:59Z")
        );
        assert_eq!(at("2026-05-05").add_months(0), at("2026-05-05"));
    }

    #[test]
    fn parses_what_apis_send_and_refuses_the_rest() {
        assert_eq!(at("1970-01-01T00:00:00Z"), Timestamp::EPOCH);
        assert_eq!(
            at("2025-11-25T20:07:00.123Z"),
            Timestamp::from_unix_millis(1_764_101_220_123)
        );
        // Paystack's shape, offsets, more digits, lower-case separators.
        assert_eq!(
            at("2016-03-23T08:00:00.000Z"),
            at("2016-03-23T09:00:00+01:00")
        );
        assert_eq!(
            at("2016-03-23t08:00:00.123456z"),
            at("2016-03-23T08:00:00.123Z")
        );
        assert_eq!(at("2016-03-23 08:00:00-00:30"), at("2016-03-23T08:30:00Z"));
        assert_eq!(at("2016-03-23"), at("2016-03-23T00:00:00Z"));
        for bad in [
            "",
            "2016-02-30T00:00:00Z",
            "2016-13-01",
            "2016-03-23T24:00:00Z",
            "2016-03-23T08:00:00",
            "2016-03-23T08:00:00.Z",
            "2016-03-23T08:00:00+0100",
            "16-03-23",
            "2016/03/23",
            "1458720000",
            "2016-03-23T08:00:00Zjunk",
            "+016-03-23",
        ] {
            assert_eq!(
                Timestamp::parse_rfc3339(bad).unwrap_err().kind(),
                crate::ErrorKind::InvalidInput,
                "{bad}"
            );
        }
    }

    proptest! {
        /// Display and parse round-trip; adding months keeps the time of day, moves the
        /// calendar month by exactly `n`, never moves the day later, and clamps only at a
        /// month end.
        #[test]
        fn months_and_parsing(ms in -4_000_000_000_000i64..8_000_000_000_000, n in 0u32..400) {
            let t = Timestamp::from_unix_millis(ms);
            prop_assert_eq!(Timestamp::parse_rfc3339(&t.to_string()).unwrap(), t);
            let u = t.add_months(n);
            prop_assert_eq!(u.0.rem_euclid(86_400_000), t.0.rem_euclid(86_400_000));
            let (y, m, d) = civil_from_days(t.0.div_euclid(86_400_000));
            let (y2, m2, d2) = civil_from_days(u.0.div_euclid(86_400_000));
            prop_assert_eq!(y2 * 12 + i64::from(m2), y * 12 + i64::from(m) + i64::from(n));
            prop_assert!(d2 <= d);
            if d2 < d {
                prop_assert_eq!(d2, days_in_month(y2, m2));
            }
            prop_assert_eq!(days_from_civil(y, m, d), t.0.div_euclid(86_400_000));
        }
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::from_unix_millis(1_764_101_220_123).to_string(),
            "2025-11-25T20:07:00.123Z"
        );
        assert_eq!(
            Timestamp::from_unix_secs(951_782_400).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp::from_unix_millis(-1).to_string(),
            "1969-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn manual_clock_advances_shared() {
        let c = ManualClock::new(Timestamp::from_unix_secs(10));
        let c2 = c.clone();
        c.advance(Duration::from_millis(1500));
        assert_eq!(c2.now().as_unix_millis(), 11_500);
        assert_eq!(
            c2.now().duration_since(Timestamp::from_unix_secs(10)),
            Duration::from_millis(1500)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = TokioClock::starting_at(Timestamp::EPOCH);
        tokio::time::sleep(Duration::from_secs(2700)).await;
        assert_eq!(c.now(), Timestamp::from_unix_secs(2700));
    }
}
