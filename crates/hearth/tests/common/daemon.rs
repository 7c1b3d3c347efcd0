//! A real `hearth serve` for integration tests: its own temporary home (the
//! default models adopted from the developer's store by hard link, so
//! nothing is downloaded twice), a free loopback port, a Unix socket, and
//! its log in the home for when a test fails.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use hearth_store::{Progress, Store};
use serde_json::Value;

/// An HTTP client that hands back error statuses instead of failing, with a
/// timeout long enough for a whole suite's batched answers on a slow CI.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(600)))
        .build()
        .into()
}

pub fn hearth_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hearth")
}

/// The path of a default model in the developer's store, pulled if missing.
pub fn model_path(name: &str) -> PathBuf {
    Store::open_default()
        .and_then(|s| s.ensure(name, Progress::Quiet))
        .unwrap_or_else(|e| panic!("the daemon tests need the default model {name}: {e}"))
}

pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    /// A fresh home holding the given default models, as if pulled there.
    pub fn with_models(models: &[&str]) -> Home {
        let dir = tempfile::tempdir().expect("temp home");
        let dev = Store::open_default().expect("the developer's store");
        let mine = Store::open(hearth_store::Home::at(dir.path())).expect("the test store");
        for m in models {
            model_path(m);
            mine.adopt(&dev, m)
                .unwrap_or_else(|e| panic!("adopting {m} into the test home: {e}"));
        }
        Home { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn hearth(&self, args: &[&str]) -> Output {
        Command::new(hearth_bin())
            .args(args)
            .env("HEARTH_HOME", self.path())
            .output()
            .expect("running hearth")
    }

    /// `hearth ARGS…`, which must succeed (its stderr is the failure message).
    pub fn hearth_ok(&self, args: &[&str]) -> Output {
        let out = self.hearth(args);
        assert!(
            out.status.success(),
            "hearth {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `hearth app add NAME ARGS…`; returns the token (the last line).
    pub fn add_app(&self, name: &str, args: &[&str]) -> String {
        let mut all = vec!["app", "add", name];
        all.extend_from_slice(args);
        let out = self.hearth(&all);
        assert!(
            out.status.success(),
            "app add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8");
        stdout
            .lines()
            .last()
            .expect("a token line")
            .trim()
            .to_string()
    }

    /// Write `<home>/config.toml`.
    pub fn config(&self, toml: &str) {
        std::fs::write(self.path().join("config.toml"), toml).expect("config");
    }
}

pub struct Daemon {
    pub child: Option<Child>,
    pub url: String,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    /// Start `hearth serve --port 0` on `home` with extra flags; waits until it listens.
    pub fn start(home: &Home, flags: &[&str]) -> Daemon {
        let socket = home.path().join("test.sock");
        let log = home.path().join("serve.log");
        let mut child = Command::new(hearth_bin())
            .args(["serve", "--port", "0", "--socket", socket.to_str().unwrap()])
            .args(flags)
            .env("HEARTH_HOME", home.path())
            .env("HEARTH_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting hearth serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the daemon's first line");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "the daemon did not start: {line:?}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .to_string();
        Daemon {
            child: Some(child),
            url,
            socket,
            log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.url, path)
    }

    /// POST `body` as the app holding `token`: the status and the body
    /// (JSON where it parses, else the text as a JSON string).
    pub fn post(&self, token: &str, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.send(token, path, body);
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().expect("body");
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, v)
    }

    /// POST `body` as the app holding `token` and hand back the response
    /// unread (for streams).
    pub fn send(&self, token: &str, path: &str, body: &Value) -> ureq::http::Response<ureq::Body> {
        agent()
            .post(&self.url(path))
            .header("Authorization", &format!("Bearer {token}"))
            .content_type("application/json")
            .send(&body.to_string())
            .expect("HTTP request")
    }

    /// GET as the app holding `token`: the status and the body's text.
    pub fn get(&self, token: &str, path: &str) -> (u16, String) {
        let resp = agent()
            .get(&self.url(path))
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("HTTP request");
        let status = resp.status().as_u16();
        (status, resp.into_body().read_to_string().expect("body"))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (at most `timeout`) for the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("a running daemon");
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let t0 = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("waiting") {
                return st;
            }
            if t0.elapsed() > timeout {
                let _ = child.kill();
                panic!("the daemon did not exit within {timeout:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
