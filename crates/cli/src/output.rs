//! Docker-style output: tables, `--format json`, small Go-template-style formats, sizes and ages.

use std::io::IsTerminal;

use serde_json::Value;

use crate::Failure;

pub fn init_debug_log() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::DEBUG)
        .init();
}

/// A prune's list as Docker prints it: `Deleted KIND:`, one id per line, a blank line; nothing
/// when the list is empty.
pub fn print_deleted(kind: &str, ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    println!("Deleted {kind}:");
    for d in ids {
        println!("{d}");
    }
    println!();
}

/// A prune's last line.
pub fn print_reclaimed(bytes: i64) {
    println!(
        "Total reclaimed space: {}",
        human_size(u64::try_from(bytes).unwrap_or(0))
    );
}

/// go-units' HumanSizeWithPrecision(size, 3): decimal units, three significant digits.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    #[allow(clippy::cast_precision_loss)] // a display value with three significant digits
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1000.0 && i < UNITS.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    let digits = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let s = if i == 0 {
        format!("{bytes}")
    } else {
        format!("{v:.digits$}")
    };
    let trimmed = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{trimmed}{}", UNITS[i])
}

/// go-units' HumanDuration (`5 seconds`, `About a minute`, `3 hours`, `2 weeks`).
pub fn human_duration(secs: u64) -> String {
    let minutes = secs / 60;
    let hours = (secs + 1800) / 3600;
    match secs {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..60 => format!("{secs} seconds"),
        _ if minutes == 1 => "About a minute".into(),
        _ if minutes < 60 => format!("{minutes} minutes"),
        _ if hours == 1 => "About an hour".into(),
        _ if hours < 48 => format!("{hours} hours"),
        _ if hours < 24 * 7 * 2 => format!("{} days", hours / 24),
        _ if hours < 24 * 30 * 2 => format!("{} weeks", hours / 24 / 7),
        _ if hours < 24 * 365 * 2 => format!("{} months", hours / 24 / 30),
        _ => format!("{} years", secs / 3600 / 24 / 365),
    }
}

/// go-units' BytesSize: binary units, four significant digits (`1.5MiB`, `7.543GiB`).
pub fn bytes_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    #[allow(clippy::cast_precision_loss)] // a display value
    let mut v = bytes as f64;
    let mut i = 0;
    while v >= 1024.0 && i < UNITS.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    let int_digits = if v >= 1000.0 {
        4
    } else if v >= 100.0 {
        3
    } else if v >= 10.0 {
        2
    } else {
        1
    };
    let s = format!("{v:.prec$}", prec = 4usize.saturating_sub(int_digits));
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        s
    };
    format!("{s}{}", UNITS[i])
}

/// Lines of tab-separated cells, aligned like Docker's tabwriter (min width 10, padding 3).
pub fn print_tabbed(lines: &[String]) {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter(|r| c + 1 < r.len())
                .map(|r| r[c].chars().count() + 3)
                .max()
                .unwrap_or(0)
                .max(10)
        })
        .collect();
    let mut out = String::new();
    for r in &rows {
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                out.push_str(cell);
            } else {
                out.push_str(cell);
                let pad = widths[c].saturating_sub(cell.chars().count());
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    let _ = std::io::Write::write_all(&mut stdout, out.as_bytes());
}

/// JSON indented with four spaces, as Docker prints `inspect`.
pub fn pretty_json(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    let _ = serde::Serialize::serialize(v, &mut ser);
    String::from_utf8(buf).unwrap_or_default()
}

/// Docker's `[y/N]` prompt, asked only when stdin is a terminal (scripts proceed).
pub fn confirm(warning: &str) -> Result<bool, Failure> {
    if !std::io::stdin().is_terminal() {
        return Ok(true);
    }
    eprint!("{warning}\nAre you sure you want to continue? [y/N] ");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(answer.trim().eq_ignore_ascii_case("y"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(125_000_000), "125MB");
        assert_eq!(human_size(1_200_000_000), "1.2GB");
    }

    #[test]
    fn durations_and_binary_sizes_like_docker() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(5), "5 seconds");
        assert_eq!(human_duration(70), "About a minute");
        assert_eq!(human_duration(600), "10 minutes");
        assert_eq!(human_duration(3600), "About an hour");
        assert_eq!(human_duration(3 * 86_400), "3 days");
        assert_eq!(bytes_size(0), "0B");
        assert_eq!(bytes_size(1536 * 1024), "1.5MiB");
        assert_eq!(bytes_size(8_100_000_000), "7.544GiB");
    }
}
