//! Standard output that a closed pipe ends quietly (`shuku inspect big.gguf | head`), instead of the
//! panic `println!` gives on a broken pipe.

use std::io::{ErrorKind, Write};

/// Line-oriented writer over the locked standard output.
pub struct Output {
    out: std::io::StdoutLock<'static>,
}

impl Output {
    /// The process's standard output.
    pub fn stdout() -> Self {
        Output {
            out: std::io::stdout().lock(),
        }
    }

    /// Writes `s` followed by a newline.
    pub fn line(&mut self, s: impl AsRef<str>) {
        self.text(s.as_ref());
        self.text("\n");
    }

    /// Writes `s` as is. A reader that went away ends the process successfully; any other
    /// write error ends it with a message.
    pub fn text(&mut self, s: &str) {
        if let Err(e) = self.out.write_all(s.as_bytes()) {
            if e.kind() == ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }

    /// Flushes what was written (for streamed text); errors are handled as in [`Output::text`].
    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            if e.kind() == ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(1);
        }
    }
}
