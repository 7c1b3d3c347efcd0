//! How a pull reports progress. Everything goes to stderr so stdout stays
//! clean for whatever the CLI prints as its result.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress reporting for [`crate::Store::pull`] / [`crate::Store::ensure`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// pip's own output plus indicatif bars on stderr (hidden automatically
    /// when stderr is not a terminal).
    Bar,
    /// Nothing on stderr; failures still carry pip's output in the error.
    Quiet,
}

impl Progress {
    pub(crate) fn is_bar(self) -> bool {
        self == Progress::Bar
    }

    /// A byte-count bar for `total` bytes.
    pub(crate) fn bytes(self, total: u64) -> ProgressBar {
        match self {
            Progress::Quiet => ProgressBar::hidden(),
            Progress::Bar => {
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
                if let Ok(style) = ProgressStyle::with_template(
                    "{msg:<28} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                ) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar
            }
        }
    }

    /// A spinner for waits of unknown length.
    pub(crate) fn spinner(self, msg: String) -> ProgressBar {
        match self {
            Progress::Quiet => ProgressBar::hidden(),
            Progress::Bar => {
                let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
                bar.set_message(msg);
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            }
        }
    }

    /// A one-line status message.
    pub(crate) fn note(self, msg: impl AsRef<str>) {
        if self.is_bar() {
            eprintln!("{}", msg.as_ref());
        }
    }
}
