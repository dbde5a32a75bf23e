//! Log lines in runc's formats. containerd's shim reads `--log` with `--log-format json` and
//! reports the last `error` line, so errors always go there as `{"level","msg","time"}`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

/// Where and how to log.
pub struct Logger {
    out: Mutex<Option<File>>,
    json: bool,
    max: Level,
}

impl Logger {
    /// Log to `file` (stderr when `None`).
    pub fn new(file: Option<&Path>, json: bool, debug: bool) -> std::io::Result<Logger> {
        let out = match file {
            Some(p) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            ),
            None => None,
        };
        Ok(Logger {
            out: Mutex::new(out),
            json,
            max: if debug { Level::DEBUG } else { Level::WARN },
        })
    }

    /// Whether lines go to a file (so stderr needs its own copy of errors).
    pub fn to_file(&self) -> bool {
        self.out.lock().map(|o| o.is_some()).unwrap_or(false)
    }

    /// Write one line at `level`.
    pub fn line(&self, level: Level, msg: &str) {
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now());
        let lvl = level.as_str().to_ascii_lowercase();
        let line = if self.json {
            let v = serde_json::json!({"level": lvl, "msg": msg, "time": time.to_string()});
            format!("{v}\n")
        } else {
            format!("time=\"{time}\" level={lvl} msg={msg:?}\n")
        };
        let mut out = match self.out.lock() {
            Ok(o) => o,
            Err(p) => p.into_inner(),
        };
        match out.as_mut() {
            Some(f) => {
                let _ = f.write_all(line.as_bytes());
            }
            None => {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        }
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.push_str(value);
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= &self.max
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        self.line(*event.metadata().level(), &m.0);
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}
