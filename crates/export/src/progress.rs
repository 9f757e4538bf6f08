//! A progress bar over the tensors being written, or nothing when the caller asked for quiet.

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    pub(crate) fn new(show: bool, len: u64, label: &'static str) -> Self {
        Self(show.then(|| {
            let bar = ProgressBar::new(len);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {wide_msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(label);
            bar
        }))
    }

    pub(crate) fn step(&self, what: &str) {
        if let Some(bar) = &self.0 {
            bar.set_message(what.to_string());
            bar.inc(1);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
