//! The per-epoch progress bar: drawn on stderr only when asked for and stderr is a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const TEMPLATE: &str = "epoch {prefix} [{bar:30}] {pos}/{len} {msg}";

/// A progress bar over the training images of one epoch (hidden unless wanted and possible).
pub(crate) struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for epoch `epoch` of `epochs` over `images` images; hidden unless `show` and
    /// stderr is a terminal.
    pub(crate) fn new(show: bool, images: usize, epoch: usize, epochs: usize) -> Self {
        if !show || !std::io::stderr().is_terminal() {
            return Progress { bar: ProgressBar::hidden() };
        }
        let style = ProgressStyle::with_template(TEMPLATE)
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar());
        let bar = ProgressBar::with_draw_target(Some(images as u64), ProgressDrawTarget::stderr())
            .with_style(style)
            .with_prefix(format!("{epoch}/{epochs}"));
        Progress { bar }
    }

    /// True when nothing will be drawn.
    pub(crate) fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Records `images` more images done, showing the running loss and throughput.
    pub(crate) fn advance(&self, images: usize, running_loss: f64, images_per_sec: f64) {
        if self.is_hidden() {
            return;
        }
        self.bar.set_message(format!("loss {running_loss:.4}  {images_per_sec:.0} img/s"));
        self.bar.inc(images as u64);
    }

    /// Runs `f` with the bar cleared, so `f` can print without garbling it.
    pub(crate) fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }

    /// Removes the bar from the terminal.
    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_when_not_asked_for() {
        assert!(Progress::new(false, 10, 1, 1).is_hidden());
    }

    #[test]
    fn hidden_when_stderr_is_not_a_terminal() {
        if std::io::stderr().is_terminal() {
            eprintln!("note: stderr is a terminal, cannot check the non-terminal case here");
            return;
        }
        assert!(Progress::new(true, 10, 1, 1).is_hidden());
    }
}
