//! Pull and push progress like Docker's: a bar per layer on a terminal, plain lines otherwise,
//! nothing with `-q`.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex, PoisonError};

use berth_image::{Progress, ProgressFn};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Reporter {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

fn short(d: &impl std::fmt::Display) -> String {
    let s = d.to_string();
    let hex = s.split_once(':').map_or(s.as_str(), |(_, h)| h);
    hex.chars().take(12).collect()
}

impl Reporter {
    pub fn new(quiet: bool) -> Reporter {
        if quiet {
            return Reporter { inner: None };
        }
        let multi = std::io::stdout()
            .is_terminal()
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stdout()));
        Reporter {
            inner: Some(Arc::new(Inner {
                multi,
                bars: Mutex::new(HashMap::new()),
            })),
        }
    }

    pub fn callback(&self) -> ProgressFn {
        let inner = self.inner.clone();
        Arc::new(move |p| {
            if let Some(i) = &inner {
                i.event(p);
            }
        })
    }

    pub fn finish(&self) {
        if let Some(i) = &self.inner {
            let bars = i.bars.lock().unwrap_or_else(PoisonError::into_inner);
            for b in bars.values() {
                if !b.is_finished() {
                    b.abandon();
                }
            }
        }
    }
}

impl Inner {
    fn line(&self, id: &str, msg: &str) {
        match &self.multi {
            Some(_) => {
                let bars = self.bars.lock().unwrap_or_else(PoisonError::into_inner);
                match bars.get(id) {
                    Some(b) => b.finish_with_message(msg.to_owned()),
                    None => println!("{id}: {msg}"),
                }
            }
            None => println!("{id}: {msg}"),
        }
    }

    fn event(&self, p: Progress) {
        match p {
            Progress::Resolved {
                repository,
                reference,
                ..
            } => println!("{reference}: Pulling from {repository}"),
            Progress::LayerWaiting { layer, size } => {
                let id = short(&layer);
                match &self.multi {
                    Some(m) => {
                        let bar = m.add(ProgressBar::new(size));
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{prefix}: {msg:<12} [{bar:40}] {bytes}/{total_bytes}",
                            )
                            .expect("static template")
                            .progress_chars("=> "),
                        );
                        bar.set_prefix(id.clone());
                        bar.set_message("Downloading");
                        self.bars
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(id, bar);
                    }
                    None => println!("{id}: Pulling fs layer"),
                }
            }
            Progress::LayerBytes { layer, done, .. } => {
                if self.multi.is_some() {
                    if let Some(b) = self
                        .bars
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&short(&layer))
                    {
                        b.set_position(done);
                    }
                }
            }
            Progress::LayerExists { layer } => self.line(&short(&layer), "Already exists"),
            Progress::LayerDone { layer } => self.line(&short(&layer), "Pull complete"),
            Progress::BlobPushed { digest, how } => self.line(&short(&digest), how),
            Progress::Done { .. } => {}
        }
    }
}
