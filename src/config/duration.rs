//! Duration strings of the config: `"500ms"`, `"90s"`, `"15m"`, `"1h30m"`, `"2d"`.

use std::time::Duration;

/// Parses one or more `<integer><unit>` parts (units `ms`, `s`, `m`, `h`, `d`; spaces
/// between parts are allowed) into their sum. The error is a lowercase message.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let invalid = |why: &str| format!("invalid duration {s:?}: {why}");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(invalid("empty (expected e.g. \"90s\", \"15m\", \"1h30m\")"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid("expected a number"));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| invalid("number too large"))?;
        rest = &rest[digits..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = rest[..unit_end].trim();
        rest = &rest[unit_end..];
        let millis_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(invalid("missing unit (ms, s, m, h or d)")),
            u if u.starts_with('.') || u.starts_with(',') => {
                return Err(invalid("fractions are not supported, use e.g. \"1h30m\""));
            }
            u => {
                return Err(invalid(&format!(
                    "unknown unit {u:?} (use ms, s, m, h or d)"
                )));
            }
        };
        let millis = n
            .checked_mul(millis_per_unit)
            .ok_or_else(|| invalid("too long"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| invalid("too long"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good() {
        let cases = [
            ("90s", 90_000),
            ("15m", 900_000),
            ("1h", 3_600_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("2d", 172_800_000),
            ("1m30s", 90_000),
            ("1h 30m", 5_400_000),
            (" 0s ", 0),
            ("1s500ms", 1_500),
        ];
        for (s, ms) in cases {
            assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s:?}");
        }
    }

    #[test]
    fn bad() {
        for s in [
            "",
            "90",
            "s",
            "1.5h",
            "1x",
            "1H",
            "-1s",
            "h1",
            "1hh",
            "99999999999999999999s",
            "999999999999999d",
        ] {
            let err = parse_duration(s).expect_err(s);
            assert!(err.starts_with("invalid duration"), "{err}");
        }
        assert!(
            parse_duration("90")
                .expect_err("no unit")
                .contains("missing unit")
        );
    }
}
