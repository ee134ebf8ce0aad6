//! Points in time on the wire: RFC 3339 UTC in JSON, seconds since the epoch in postcard.
//!
//! The firmware has no calendar and no allocator; people reading JSON want dates. The civil
//! date conversion is Howard Hinnant's `days_from_civil`, valid for years 1970–9999.

use core::fmt;

/// Seconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub u64);

/// 9999-12-31T23:59:59Z, the last second RFC 3339 can write with four-digit years.
pub const MAX_SECONDS: u64 = 253_402_300_799;

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.min(MAX_SECONDS) as i64;
        let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
        let rem = secs.rem_euclid(86_400);
        write!(
            f,
            "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }
}

/// A string that is not an RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.fff]Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadTimestamp;

impl fmt::Display for BadTimestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected an RFC 3339 UTC time such as 2026-11-22T07:30:00Z")
    }
}

impl core::str::FromStr for Timestamp {
    type Err = BadTimestamp;

    fn from_str(s: &str) -> Result<Self, BadTimestamp> {
        let b = s.as_bytes();
        if b.len() < 20
            || b[4] != b'-'
            || b[7] != b'-'
            || !matches!(b[10], b'T' | b't')
            || b[13] != b':'
            || b[16] != b':'
            || !matches!(b[b.len() - 1], b'Z' | b'z')
        {
            return Err(BadTimestamp);
        }
        let num = |r: core::ops::Range<usize>| -> Result<u32, BadTimestamp> {
            let part = &b[r];
            if !part.iter().all(u8::is_ascii_digit) {
                return Err(BadTimestamp);
            }
            Ok(part.iter().fold(0u32, |n, c| n * 10 + u32::from(c - b'0')))
        };
        // Fractional seconds are accepted and dropped.
        let frac = &b[19..b.len() - 1];
        if !(frac.is_empty()
            || (frac[0] == b'.' && frac.len() > 1 && frac[1..].iter().all(u8::is_ascii_digit)))
        {
            return Err(BadTimestamp);
        }
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let month_days = [
            31,
            if leap { 29 } else { 28 },
            31,
            30,
            31,
            30,
            31,
            31,
            30,
            31,
            30,
            31,
        ];
        if y < 1970
            || !(1..=12).contains(&mo)
            || d == 0
            || d > month_days[mo as usize - 1]
            || h > 23
            || mi > 59
            || se > 59
        {
            return Err(BadTimestamp);
        }
        let days = days_from_civil(i64::from(y), mo, d);
        Ok(Timestamp(
            days as u64 * 86_400 + u64::from(h) * 3600 + u64::from(mi) * 60 + u64::from(se),
        ))
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_u64(self.0)
        }
    }
}

impl<'de> serde::Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 UTC time")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Timestamp, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Timestamp, E> {
                if v > MAX_SECONDS {
                    return Err(E::custom("time after 9999-12-31T23:59:59Z"));
                }
                Ok(Timestamp(v))
            }
        }
        if d.is_human_readable() {
            d.deserialize_str(V)
        } else {
            d.deserialize_u64(V)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    extern crate std;
    use std::string::ToString;

    #[test]
    fn known_dates() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00Z");
        assert_eq!(Timestamp(951_782_400).to_string(), "2000-02-29T00:00:00Z");
        assert_eq!(Timestamp(1_795_332_600).to_string(), "2026-11-22T07:30:00Z");
        assert_eq!(
            "2026-11-22T07:30:00.123Z".parse(),
            Ok(Timestamp(1_795_332_600))
        );
        assert_eq!(Timestamp(MAX_SECONDS).to_string(), "9999-12-31T23:59:59Z");
        for bad in [
            "2026-02-29T00:00:00Z",
            "2026-11-22 07:30:00Z",
            "2026-11-22T07:30:00+01:00",
            "1969-12-31T23:59:59Z",
            "2026-11-22T24:00:00Z",
            "2026-11-22T07:30:00.Z",
            "",
        ] {
            assert_eq!(bad.parse::<Timestamp>(), Err(BadTimestamp), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn round_trip(secs in 0..=MAX_SECONDS) {
            let t = Timestamp(secs);
            proptest::prop_assert_eq!(t.to_string().parse::<Timestamp>(), Ok(t));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<Timestamp>();
        }
    }
}
