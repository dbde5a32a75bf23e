//! Docker-style output: tables, `--format json`, small Go-template-style formats, sizes and ages.

use std::time::{Duration, SystemTime};

use berth_image::{ImageService, ImageSummary};
use serde_json::{Value, json};

use crate::{CliResult, Failure, ImagesArgs, InspectArgs};

pub fn init_debug_log() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing::Level::DEBUG)
        .init();
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

/// Docker's "2 months ago".
pub fn since(created: Option<&str>) -> String {
    let Some(t) = created.and_then(|c| {
        humantime::parse_rfc3339_weak(c.split('.').next()?.trim_end_matches('Z'))
            .ok()
            .or_else(|| humantime::parse_rfc3339(c).ok())
    }) else {
        return "N/A".into();
    };
    let age = SystemTime::now()
        .duration_since(t)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let (n, unit) = match age {
        0..60 => return "Less than a minute ago".into(),
        60..3600 => (age / 60, "minute"),
        3600..86_400 => (age / 3600, "hour"),
        86_400..604_800 => (age / 86_400, "day"),
        604_800..2_592_000 => (age / 604_800, "week"),
        2_592_000..31_536_000 => (age / 2_592_000, "month"),
        _ => (age / 31_536_000, "year"),
    };
    if n == 1 {
        format!("{} {unit} ago", if unit == "hour" { "An" } else { "1" })
    } else {
        format!("{n} {unit}s ago")
    }
}

fn image_json(s: &ImageSummary, no_trunc: bool) -> Value {
    let id = if no_trunc {
        s.id.to_string()
    } else {
        berth_image::format::short_id(&s.id).to_owned()
    };
    json!({
        "Containers": "N/A",
        "CreatedAt": s.created.clone().unwrap_or_default(),
        "CreatedSince": since(s.created.as_deref()),
        "Digest": s.digest.to_string(),
        "ID": id,
        "Repository": s.repository,
        "SharedSize": "N/A",
        "Size": human_size(s.size),
        "Tag": s.tag,
        "UniqueSize": "N/A",
        "VirtualSize": human_size(s.size),
    })
}

/// Render a Go-template-style format: `{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`.
pub fn render(template: &str, v: &Value) -> Result<String, Failure> {
    let template = template.replace("\\t", "\t").replace("\\n", "\n");
    let mut out = String::new();
    let mut rest = template.as_str();
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| Failure(format!("template: unclosed action in {template:?}")))?;
        let action = rest[start + 2..start + end].trim();
        let (json_fn, path) = match action.strip_prefix("json ") {
            Some(p) => (true, p.trim()),
            None => (false, action),
        };
        if !path.starts_with('.') {
            return Err(Failure(format!(
                "template: unsupported action {{{{{action}}}}}: use {{{{.Field}}}} or {{{{json .Field}}}}"
            )));
        }
        let mut cur = v;
        for part in path.split('.').filter(|p| !p.is_empty()) {
            cur = cur.get(part).ok_or_else(|| {
                Failure(format!("template: field {part:?} does not exist in {path}"))
            })?;
        }
        if json_fn {
            out.push_str(&serde_json::to_string(cur).expect("json"));
        } else {
            match cur {
                Value::String(s) => out.push_str(s),
                Value::Null => out.push_str("<no value>"),
                other => out.push_str(&other.to_string()),
            }
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

pub fn images(svc: &ImageService, a: &ImagesArgs) -> CliResult {
    let mut list = svc.list()?;
    if let Some(r) = &a.reference {
        let (repo, tag) = r
            .rsplit_once(':')
            .filter(|(_, t)| !t.contains('/'))
            .map_or((r.as_str(), None), |(a, b)| (a, Some(b)));
        let want = berth_image::familiar_name(&format!("{repo}:x"));
        let want_repo = want.trim_end_matches(":x");
        list.retain(|s| s.repository == want_repo && tag.is_none_or(|t| t == s.tag));
    }
    if a.quiet {
        let mut seen = std::collections::HashSet::new();
        for s in &list {
            let id = if a.no_trunc {
                s.id.to_string()
            } else {
                berth_image::format::short_id(&s.id).to_owned()
            };
            if seen.insert(id.clone()) {
                println!("{id}");
            }
        }
        return Ok(());
    }
    match a.format.as_deref() {
        Some("json") => {
            for s in &list {
                println!("{}", image_json(s, a.no_trunc));
            }
        }
        Some(t) if t != "table" && !t.starts_with("table ") => {
            for s in &list {
                println!("{}", render(t, &image_json(s, a.no_trunc))?);
            }
        }
        _ => {
            let mut rows = vec![];
            let mut header = vec!["REPOSITORY", "TAG"];
            if a.digests {
                header.push("DIGEST");
            }
            header.extend(["IMAGE ID", "CREATED", "SIZE"]);
            rows.push(header.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
            for s in &list {
                let j = image_json(s, a.no_trunc);
                let mut row = vec![s.repository.clone(), s.tag.clone()];
                if a.digests {
                    row.push(s.digest.to_string());
                }
                row.push(j["ID"].as_str().unwrap_or_default().to_owned());
                row.push(j["CreatedSince"].as_str().unwrap_or_default().to_owned());
                row.push(j["Size"].as_str().unwrap_or_default().to_owned());
                rows.push(row);
            }
            print_table(&rows);
        }
    }
    Ok(())
}

/// Columns padded to the widest cell plus three spaces, like Docker's tabwriter.
pub fn print_table(rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        println!("{line}");
    }
}

pub fn inspect(svc: &ImageService, a: &InspectArgs) -> CliResult {
    let mut docs = Vec::new();
    let mut missing = None;
    for n in &a.names {
        match svc.inspect(n) {
            Ok(v) => docs.push(v),
            Err(e) => missing = Some(e.to_string()),
        }
    }
    match &a.format {
        Some(t) => {
            for d in &docs {
                println!("{}", render(t, d)?);
            }
        }
        None => println!(
            "{}",
            serde_json::to_string_pretty(&Value::Array(docs)).expect("json")
        ),
    }
    missing.map_or(Ok(()), |m| Err(Failure(m)))
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
    fn templates_render_fields_and_json() {
        let v = json!({"Repository": "busybox", "Tag": "latest", "Config": {"Env": ["A=1"]}});
        assert_eq!(
            render("{{.Repository}}:{{.Tag}}", &v).unwrap(),
            "busybox:latest"
        );
        assert_eq!(
            render("{{json .Config}}", &v).unwrap(),
            r#"{"Env":["A=1"]}"#
        );
        assert!(render("{{.Nope}}", &v).is_err());
        assert!(render("{{.Repository", &v).is_err());
    }
}
