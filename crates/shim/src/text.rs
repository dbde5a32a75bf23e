//! Small text helpers the serve loop uses instead of a JSON library: JSON string escaping,
//! extracting one string field from a JSON line, RFC 3339 timestamps.

/// Append `s` to `out` as the inside of a JSON string, escaping as Docker's json-file does
/// (control characters, quote, backslash, `<>&`, U+2028/U+2029). Invalid UTF-8 becomes U+FFFD.
pub(crate) fn escape_json_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let s = String::from_utf8_lossy(bytes);
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' | '\0'..='\u{1f}' | '\u{7f}' => {
                let mut tmp = [0u16; 2];
                for unit in c.encode_utf16(&mut tmp) {
                    out.extend_from_slice(format!("\\u{unit:04x}").as_bytes());
                }
            }
            c => {
                let mut tmp = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
}

/// The string value of `"field":"..."` in one JSON object line (the first occurrence).
pub(crate) fn json_string_field(line: &str, field: &str) -> Option<String> {
    let key = format!("\"{field}\":");
    let start = line.find(&key)? + key.len();
    let rest = line[start..].trim_start();
    let mut chars = rest.strip_prefix('"')?.chars();
    let mut out = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                'b' => out.push('\u{8}'),
                'f' => out.push('\u{c}'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    let unit = u32::from_str_radix(&hex, 16).ok()?;
                    out.push(char::from_u32(unit).unwrap_or('\u{fffd}'));
                }
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_nanos() -> i64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// `2026-11-30T17:45:39.123456789Z`.
pub(crate) fn rfc3339_nanos(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_json_file() {
        let mut out = Vec::new();
        escape_json_into(&mut out, b"a\"b\\c\n<&>\x01\xff\t");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "a\\\"b\\\\c\\n\\u003c\\u0026\\u003e\\u0001\u{fffd}\\t"
        );
    }

    #[test]
    fn extracts_a_string_field() {
        let line = r#"{"level":"error","msg":"exec: \"nope\": not found\n\u00e9","time":"x"}"#;
        assert_eq!(
            json_string_field(line, "msg").as_deref(),
            Some("exec: \"nope\": not found\né")
        );
        assert_eq!(json_string_field(line, "level").as_deref(), Some("error"));
        assert_eq!(json_string_field(line, "nothing"), None);
    }

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_796_060_739_123_456_789),
            "2026-11-30T17:45:39.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_001),
            "2000-02-29T00:00:00.000000001Z"
        );
    }
}
