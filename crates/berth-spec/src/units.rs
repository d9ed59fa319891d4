//! Parsers for the values Docker users type: sizes (`512m`, `1g`, `1.5g`), CPU counts (`1.5`)
//! and durations (`90s`, `2m`, `1h30m`, `500ms`).
//!
//! Every rejection names the bad value and shows a good one, because these strings come
//! straight from a command line.

use std::time::Duration;

/// A value that could not be parsed; the message names the value and an example.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// not a size
    #[error("invalid size {value:?}: expected a number with an optional unit b, k, m, g or t (binary, case-insensitive), e.g. 512m, 1g or 1.5g")]
    Size { value: String },
    /// not a CPU count
    #[error(
        "invalid CPU count {value:?}: expected a positive decimal number of CPUs, e.g. 0.5, 1 or 2"
    )]
    Cpus { value: String },
    /// not a duration
    #[error("invalid duration {value:?}: expected a number with a unit ms, s, m or h (parts may be combined), e.g. 90s, 2m, 1h30m; a bare number means seconds and 0 disables")]
    Duration { value: String },
}

/// Parses a size such as `512m`, `1g`, `1.5G`, `64MiB` or `1048576` into bytes.
///
/// Units are binary (k = 1024) as in `docker run --memory`.
pub fn parse_size(value: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size {
        value: value.to_string(),
    };
    let trimmed = value.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(err());
    }
    let number: f64 = number.parse().map_err(|_| err())?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b').filter(|u| !u.is_empty()))
        .unwrap_or(&unit);
    let multiplier: u64 = match unit {
        "" | "b" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(err()),
    };
    let bytes = number * multiplier as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes.round() as u64)
}

/// Parses a CPU count such as `1`, `1.5` or `0.25` into nano-CPUs (Docker's `NanoCpus`).
pub fn parse_cpus(value: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Cpus {
        value: value.to_string(),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() || !trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(err());
    }
    let cpus: f64 = trimmed.parse().map_err(|_| err())?;
    let nanos = (cpus * 1e9).round();
    if !(1.0..=1e15).contains(&nanos) {
        return Err(err());
    }
    Ok(nanos as u64)
}

/// Parses a duration such as `90s`, `2m`, `1h30m`, `500ms` or `30` (seconds).
///
/// `0` parses to a zero duration; callers decide whether that means "disabled".
pub fn parse_duration(value: &str) -> Result<Duration, UnitError> {
    let err = || UnitError::Duration {
        value: value.to_string(),
    };
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(err());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return trimmed.parse().map(Duration::from_secs).map_err(|_| err());
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (number, tail) = rest.split_at(split);
        let number: f64 = number.parse().map_err(|_| err())?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let seconds = match unit {
            "ms" => number / 1000.0,
            "s" => number,
            "m" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(err()),
        };
        // A sum too long for a Duration is an error, not a panic (found by the `units` fuzz
        // target).
        total = total
            .checked_add(Duration::try_from_secs_f64(seconds).map_err(|_| err())?)
            .ok_or_else(err)?;
        rest = tail;
    }
    Ok(total)
}

/// Formats bytes the way Docker prints them: `512MiB`, `1GiB`, `1.5GiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if bytes >= size {
            let value = bytes as f64 / size as f64;
            return if value.fract() == 0.0 {
                format!("{value}{name}")
            } else {
                format!("{value:.1}{name}")
            };
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_duration_too_long_to_hold_is_an_error_not_a_panic() {
        let huge = "10000000000000000000s".repeat(3);
        assert!(parse_duration(&huge).is_err());
        assert!(parse_duration("1h18446744073709551615s").is_err());
    }

    use super::*;

    #[test]
    fn sizes_docker_users_type() {
        assert_eq!(parse_size("512m"), Ok(512 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("64mb"), Ok(64 << 20));
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("100b"), Ok(100));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
    }

    #[test]
    fn bad_sizes_name_the_value_and_an_example() {
        for bad in [
            "", "g", "12x", "-1g", "1.g", ".5g", "1gg", "one", "1 g b", "1e3",
        ] {
            let e = parse_size(bad).expect_err(bad);
            let msg = e.to_string();
            assert!(msg.contains(&format!("{bad:?}")), "{msg}");
            assert!(msg.contains("512m"), "{msg}");
        }
    }

    #[test]
    fn cpus() {
        assert_eq!(parse_cpus("1"), Ok(1_000_000_000));
        assert_eq!(parse_cpus("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_cpus("0.25"), Ok(250_000_000));
        for bad in ["0", "", "-1", "two", "1c", "0.0000000001"] {
            assert!(parse_cpus(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in ["", "s", "10x", "-5s", "1d", "5 s", "m5"] {
            let e = parse_duration(bad).expect_err(bad);
            assert!(e.to_string().contains("90s"), "{e}");
        }
    }

    #[test]
    fn formats_bytes() {
        assert_eq!(format_bytes(512 << 20), "512MiB");
        assert_eq!(format_bytes(3 << 29), "1.5GiB");
        assert_eq!(format_bytes(10), "10B");
    }
}
