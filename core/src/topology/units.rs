//! Human durations and sizes, both ways.
//!
//! The server speaks nanoseconds and bytes; people write `7d` and `1GB`. Files
//! may use either, so a value copied from `nats stream info --json` still loads.
//!
//! Sizes follow natscli: `KB`, `MB`, `GB`, `TB` are powers of 1024, exactly
//! like `KiB`, `MiB`, `GiB`, `TiB` (so `1GB` is 1073741824 bytes). Output uses
//! the `KiB` spelling so nobody has to know that convention to read it.

use serde_json::Value;

pub const NS_PER_MS: i64 = 1_000_000;
pub const NS_PER_SEC: i64 = 1_000_000_000;

const DURATION_UNITS: &[(&str, f64)] = &[
    ("ns", 1.0),
    ("us", 1e3),
    ("µs", 1e3),
    ("ms", 1e6),
    ("s", 1e9),
    ("m", 60e9),
    ("h", 3600e9),
    ("d", 86400e9),
    ("w", 604800e9),
];

/// Parse `500ms`, `30s`, `1h30m`, `7d`, `1.5h` (or a bare integer of
/// nanoseconds given as text) into nanoseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .char_indices()
            .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad_duration(text));
        }
        let number: f64 = rest[..num_len].parse().map_err(|_| bad_duration(text))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| c.is_ascii_digit() || *c == '.')
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let factor = DURATION_UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, f)| *f)
            .ok_or_else(|| bad_duration(text))?;
        total += number * factor;
        rest = &rest[unit_len..];
    }
    if total > i64::MAX as f64 {
        return Err(format!("duration {text:?} is too large"));
    }
    Ok(total.round() as i64)
}

fn bad_duration(text: &str) -> String {
    format!(
        "{text:?} is not a duration: use a number with a unit (500ms, 30s, 2m, 1h, 7d, 1w; combinations like 1h30m work) or integer nanoseconds"
    )
}

/// Nanoseconds as the shortest exact human form (`7d`, `1h30m`, `250ms`, `0s`).
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    if ns < 0 {
        return format!("-{}", format_duration(-ns));
    }
    let mut out = String::new();
    let mut rest = ns;
    // Days, hours, minutes, seconds are composed; below a second only one unit
    // is used, and only when the value has no whole-second part.
    for (unit, size) in [
        ("d", 86_400 * NS_PER_SEC),
        ("h", 3_600 * NS_PER_SEC),
        ("m", 60 * NS_PER_SEC),
        ("s", NS_PER_SEC),
    ] {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if rest == 0 {
        return out;
    }
    if !out.is_empty() {
        // mixed seconds and fractions: fall back to exact milli/micro/nano form
        let (unit, size) = sub_second_unit(ns);
        return format!("{}{unit}", ns / size);
    }
    let (unit, size) = sub_second_unit(rest);
    format!("{}{unit}", rest / size)
}

fn sub_second_unit(ns: i64) -> (&'static str, i64) {
    if ns % NS_PER_MS == 0 {
        ("ms", NS_PER_MS)
    } else if ns % 1_000 == 0 {
        ("us", 1_000)
    } else {
        ("ns", 1)
    }
}

const SIZE_UNITS: &[(&str, i64)] = &[
    ("b", 1),
    ("k", 1 << 10),
    ("kb", 1 << 10),
    ("kib", 1 << 10),
    ("m", 1 << 20),
    ("mb", 1 << 20),
    ("mib", 1 << 20),
    ("g", 1 << 30),
    ("gb", 1 << 30),
    ("gib", 1 << 30),
    ("t", 1 << 40),
    ("tb", 1 << 40),
    ("tib", 1 << 40),
];

/// Parse `512KB`, `100MB`, `1.5GiB`, `2048` into bytes (KB = 1024, like natscli).
pub fn parse_size(text: &str) -> Result<i64, String> {
    let s = text.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let split = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let bad = || {
        format!(
            "{text:?} is not a size: use bytes or a number with a unit (512KB, 100MB, 1GB, 2GiB; KB=1024 bytes as in natscli), or -1/unlimited"
        )
    };
    if split == 0 {
        return Err(bad());
    }
    let number: f64 = s[..split].parse().map_err(|_| bad())?;
    let unit = s[split..].trim().to_ascii_lowercase();
    let factor = SIZE_UNITS
        .iter()
        .find(|(u, _)| *u == unit)
        .map(|(_, f)| *f)
        .ok_or_else(bad)?;
    let bytes = number * factor as f64;
    if bytes > i64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes.round() as i64)
}

/// Bytes as the largest exact binary unit (`1GiB`, `512KiB`) or plain bytes.
pub fn format_size(bytes: i64) -> String {
    if bytes < 0 {
        return "unlimited".into();
    }
    for (unit, size) in [
        ("TiB", 1i64 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ] {
        if bytes >= size && bytes % size == 0 {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes}B")
}

/// A JSON value as a size in the topology file form: human when exact, -1 as "unlimited".
pub fn size_value(bytes: i64) -> Value {
    if bytes < 0 {
        return Value::String("unlimited".into());
    }
    let s = format_size(bytes);
    if s.ends_with("iB") {
        Value::String(s)
    } else {
        Value::from(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(500 * NS_PER_MS));
        assert_eq!(parse_duration("30s"), Ok(30 * NS_PER_SEC));
        assert_eq!(parse_duration("2m"), Ok(120 * NS_PER_SEC));
        assert_eq!(parse_duration("1h"), Ok(3600 * NS_PER_SEC));
        assert_eq!(parse_duration("7d"), Ok(7 * 86400 * NS_PER_SEC));
        assert_eq!(parse_duration("1w"), Ok(7 * 86400 * NS_PER_SEC));
        assert_eq!(parse_duration("1h30m"), Ok(5400 * NS_PER_SEC));
        assert_eq!(parse_duration("1.5h"), Ok(5400 * NS_PER_SEC));
        assert_eq!(parse_duration("250us"), Ok(250_000));
        assert_eq!(parse_duration("42"), Ok(42));
        assert_eq!(parse_duration("604800000000000"), Ok(604_800_000_000_000));
        for bad in ["", "7 days", "d", "1x", "1.2.3s", "-"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn duration_format_round_trips() {
        for (ns, text) in [
            (0, "0s"),
            (500 * NS_PER_MS, "500ms"),
            (30 * NS_PER_SEC, "30s"),
            (120 * NS_PER_SEC, "2m"),
            (5400 * NS_PER_SEC, "1h30m"),
            (7 * 86400 * NS_PER_SEC, "7d"),
            (1, "1ns"),
            (1500 * NS_PER_MS, "1500ms"),
        ] {
            assert_eq!(format_duration(ns), text);
            assert_eq!(parse_duration(text), Ok(ns));
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512KB"), Ok(512 * 1024));
        assert_eq!(parse_size("100MB"), Ok(100 * 1024 * 1024));
        assert_eq!(parse_size("1GB"), Ok(1 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1gb"), Ok(1 << 30));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("10 MB"), Ok(10 << 20));
        for bad in ["", "GB", "1XB", "one"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(100 << 20), "100MiB");
        assert_eq!(format_size(1000), "1000B");
        assert_eq!(size_value(1000), Value::from(1000));
        assert_eq!(size_value(-1), Value::from("unlimited"));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
    }
}
