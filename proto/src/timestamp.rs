//! Timestamps on the wire: RFC 3339 in UTC with `Z` and as many fraction digits as needed
//! (none, 3, 6 or 9), which is exactly what chrono's own `Serialize` writes. chrono gets there
//! through nested `Debug` formatting, one of the costliest steps of serializing an envelope;
//! its RFC 3339 writer produces the same text several times faster.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serializer;

/// For `#[serde(serialize_with = "crate::timestamp::serialize")]`.
pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use serde::Serialize;

    use super::*;

    #[derive(Serialize)]
    struct Fast(#[serde(serialize_with = "serialize")] DateTime<Utc>);

    #[test]
    fn the_text_is_chronos_own_for_every_precision_and_year_range() {
        let seconds = [
            -62_167_219_200 - 86_400, // the day before year 0: a signed year
            -62_167_219_200,          // 0000-01-01
            0,
            1_764_782_400,   // 2025-12-03T17:20:00
            1_764_782_399,   // 17:19:59, where a leap second can follow
            253_402_300_799, // 9999-12-31T23:59:59
            253_402_300_800, // +10000-01-01
        ];
        let nanos = [
            0,
            1,
            999,
            1_000,
            120_000,
            1_000_000,
            123_000_000,
            123_456_000,
            123_456_789,
            999_999_999,
            1_500_000_000, // a leap second
        ];
        let mut compared = 0;
        for s in seconds {
            for n in nanos {
                // Leap seconds exist only after :59.
                let Some(at) = Utc.timestamp_opt(s, n).single() else {
                    assert!(n >= 1_000_000_000 && s % 60 != 59, "{s} s + {n} ns");
                    continue;
                };
                compared += 1;
                assert_eq!(
                    serde_json::to_string(&Fast(at)).unwrap(),
                    serde_json::to_string(&at).unwrap(),
                    "{s} s + {n} ns"
                );
            }
        }
        assert_eq!(
            compared,
            seconds.len() * (nanos.len() - 1) + 2,
            "two leap seconds"
        );
    }
}
