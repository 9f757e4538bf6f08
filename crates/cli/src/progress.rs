//! indicatif progress bars in one style for every subcommand (drawn on stderr, hidden when it is not a
//! terminal so logs and pipes stay clean).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` steps with a leading label and a free-form message.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
    pb.set_style(style);
    pb.set_prefix(label.to_string());
    pb
}
