//! Pull and push progress like Docker's, fed by the daemon's streamed `ImageProgress`: a bar
//! per layer on a terminal, plain lines otherwise, nothing with `-q`.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};

use berth_api::v1::{ImageProgress, image_progress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Reporter {
    quiet: bool,
    to_stderr: bool,
    multi: Option<MultiProgress>,
    bars: HashMap<String, ProgressBar>,
    /// Whether any layer was downloaded (vs. all present).
    pub downloaded: bool,
}

fn short(d: &str) -> String {
    let hex = d.split_once(':').map_or(d, |(_, h)| h);
    hex.chars().take(12).collect()
}

impl Reporter {
    pub fn new(quiet: bool, to_stderr: bool) -> Reporter {
        let multi = if quiet {
            None
        } else if to_stderr {
            std::io::stderr()
                .is_terminal()
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
        } else {
            std::io::stdout()
                .is_terminal()
                .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()))
        };
        Reporter {
            quiet,
            to_stderr,
            multi,
            bars: HashMap::new(),
            downloaded: false,
        }
    }

    fn println(&self, line: &str) {
        if self.quiet {
            return;
        }
        if self.to_stderr {
            let _ = writeln!(std::io::stderr(), "{line}");
        } else {
            let _ = writeln!(std::io::stdout(), "{line}");
        }
    }

    fn line(&self, id: &str, msg: &str) {
        match self.bars.get(id) {
            Some(b) => b.finish_with_message(msg.to_owned()),
            None => self.println(&format!("{id}: {msg}")),
        }
    }

    fn bar(&mut self, id: &str, total: u64) {
        if self.bars.contains_key(id) {
            return;
        }
        let Some(m) = &self.multi else {
            self.println(&format!("{id}: Pulling fs layer"));
            self.bars.insert(id.to_owned(), ProgressBar::hidden());
            return;
        };
        let bar = m.add(ProgressBar::new(total));
        bar.set_style(
            ProgressStyle::with_template("{prefix}: {msg:<12} [{bar:40}] {bytes}/{total_bytes}")
                .expect("static template")
                .progress_chars("=> "),
        );
        bar.set_prefix(id.to_owned());
        bar.set_message("Downloading");
        self.bars.insert(id.to_owned(), bar);
    }

    pub fn event(&mut self, p: ImageProgress) {
        match p.event {
            Some(image_progress::Event::Resolved(r)) => {
                let reference = if r.reference.is_empty() {
                    "latest".to_owned()
                } else {
                    r.reference
                };
                self.println(&format!("{reference}: Pulling from {}", r.repository));
            }
            Some(image_progress::Event::Layer(l)) => {
                let id = short(&l.digest);
                match l.status.as_str() {
                    "waiting" => self.bar(&id, l.total),
                    "downloading" => {
                        self.bar(&id, l.total);
                        if let Some(b) = self.bars.get(&id) {
                            if l.total > 0 {
                                b.set_length(l.total);
                            }
                            b.set_position(l.current);
                        }
                    }
                    "exists" => {
                        self.finish_line(&id, "Already exists");
                    }
                    "done" => {
                        self.downloaded = true;
                        self.finish_line(&id, "Pull complete");
                    }
                    other => self.line(&id, other),
                }
            }
            Some(image_progress::Event::Pushed(b)) => {
                let how = match b.how.as_str() {
                    "pushed" => "Pushed".to_owned(),
                    "exists" => "Layer already exists".to_owned(),
                    "mounted" => "Mounted from another repository".to_owned(),
                    other => other.to_owned(),
                };
                self.println(&format!("{}: {how}", short(&b.digest)));
            }
            Some(image_progress::Event::Done(_)) | None => {}
        }
    }

    fn finish_line(&mut self, id: &str, msg: &str) {
        match self.bars.get(id) {
            Some(b) if !b.is_hidden() => b.finish_with_message(msg.to_owned()),
            _ => self.println(&format!("{id}: {msg}")),
        }
    }

    pub fn finish(&self) {
        for b in self.bars.values() {
            if !b.is_finished() {
                b.abandon();
            }
        }
    }
}
