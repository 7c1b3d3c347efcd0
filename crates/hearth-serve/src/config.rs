//! The daemon's settings and where they come from: a TOML file, then the
//! environment, then command-line flags, each overriding the one before.
//!
//! This module owns the names of the settings, their defaults and the order
//! of precedence; it must not start anything.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::governor::{parse_bytes, parse_duration, parse_keep_alive, KeepAlive};

/// The port hearth listens on by default: next to Ollama's 11434, so both can
/// run on one machine.
pub const DEFAULT_PORT: u16 = 11435;

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub home: PathBuf,
    pub host: IpAddr,
    pub port: u16,
    /// Unix socket path; `None` disables the socket.
    pub socket: Option<PathBuf>,
    /// Admit callers without an identity as the restricted app `anonymous`.
    pub allow_anonymous: bool,
    /// Engine threads per loaded model.
    pub threads: usize,
    /// Sequences decoded together in one forward pass, per model.
    pub max_batch: usize,
    /// Requests waiting for a place in the batch, per model, before 503.
    pub max_queue: usize,
    /// Prompt tokens fed per forward pass (all waiting prompts together),
    /// so that a long prompt does not stall the sequences already decoding
    /// and a burst of requests gets its first tokens in turns. 64 on a
    /// 2-core Zen 3 with SmolLM2: eight simultaneous 15-token prompts, time
    /// to first token p50 301 -> 211 ms (the last one's 305 -> 333 ms); a
    /// lone 561-token prompt 1.75-1.79 -> 1.78-1.86 s; at that prompt rate
    /// (~320 t/s) a pass beside a long prompt takes ~0.2 s instead of ~0.8.
    pub prefill_chunk: usize,
    /// Context of a sequence when the request does not choose one.
    pub default_ctx: usize,
    /// Seconds that in-flight streams get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Models the anonymous app may use (all when empty).
    pub anonymous_models: Vec<String>,
    /// The model that serves `"model": "auto"` when no expert fits.
    pub auto_base: String,
    /// Bytes the governor may hand out for weights, adapters, KV caches and
    /// scratch together.
    pub memory_budget: u64,
    /// How long an idle model stays loaded when its requests do not say
    /// (Ollama's default: five minutes).
    pub keep_alive: KeepAlive,
    /// How long a request that does not fit waits for memory to free
    /// before it is answered 503.
    pub memory_wait_secs: u64,
}

/// A size or a duration in the file: a number or a string with a unit.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NumOrText {
    Num(i64),
    Text(String),
}

/// The file's form: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    socket: Option<String>,
    allow_anonymous: Option<bool>,
    threads: Option<usize>,
    max_batch: Option<usize>,
    max_queue: Option<usize>,
    prefill_chunk: Option<usize>,
    default_ctx: Option<usize>,
    shutdown_grace_secs: Option<u64>,
    anonymous_models: Option<Vec<String>>,
    auto_base: Option<String>,
    memory_budget: Option<NumOrText>,
    keep_alive: Option<NumOrText>,
    memory_wait_secs: Option<u64>,
}

/// What the command line said; `None` leaves the setting to the layers below.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub socket: Option<String>,
    pub allow_anonymous: bool,
    pub threads: Option<usize>,
    /// `--memory-budget` as written (`512MiB`, `2GiB`, bytes).
    pub memory_budget: Option<String>,
}

impl ServeConfig {
    /// Defaults for `home`.
    pub fn defaults(home: &Path) -> ServeConfig {
        ServeConfig {
            home: home.to_path_buf(),
            host: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            socket: Some(home.join("hearth.sock")),
            allow_anonymous: false,
            threads: hearth_engine::physical_cores(),
            max_batch: 16,
            max_queue: 64,
            prefill_chunk: 64,
            default_ctx: 4096,
            shutdown_grace_secs: 30,
            anonymous_models: Vec::new(),
            auto_base: "smollm2".to_string(),
            memory_budget: crate::governor::default_budget(),
            keep_alive: KeepAlive::For(std::time::Duration::from_secs(300)),
            memory_wait_secs: 30,
        }
    }

    /// Layer the file (`--config`, else `<home>/config.toml` if present),
    /// the environment (`HEARTH_HOST`, `HEARTH_PORT`, `HEARTH_SOCKET`,
    /// `HEARTH_ALLOW_ANONYMOUS`, `HEARTH_THREADS`, `HEARTH_MEMORY_BUDGET`,
    /// `HEARTH_KEEP_ALIVE`) and the flags.
    pub fn load(home: &Path, flags: &Flags) -> Result<ServeConfig> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self::layer(home, flags, &env)
    }

    fn layer(
        home: &Path,
        flags: &Flags,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ServeConfig> {
        let mut c = ServeConfig::defaults(home);
        let file = match &flags.config {
            Some(p) => Some(p.clone()),
            None => Some(home.join("config.toml")).filter(|p| p.is_file()),
        };
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading the configuration {}", path.display()))?;
            let f: FileConfig = toml::from_str(&text)
                .with_context(|| format!("in the configuration {}", path.display()))?;
            c.apply_file(f)?;
        }
        if let Some(v) = env("HEARTH_HOST") {
            c.host = parse_host(&v).context("HEARTH_HOST")?;
        }
        if let Some(v) = env("HEARTH_PORT") {
            c.port = v
                .parse()
                .with_context(|| format!("HEARTH_PORT={v:?} is not a port number"))?;
        }
        if let Some(v) = env("HEARTH_SOCKET") {
            c.socket = socket_setting(&v);
        }
        if let Some(v) = env("HEARTH_ALLOW_ANONYMOUS") {
            c.allow_anonymous = match v.as_str() {
                "1" | "true" | "yes" => true,
                "0" | "false" | "no" => false,
                _ => bail!("HEARTH_ALLOW_ANONYMOUS={v:?}: use 1 or 0"),
            };
        }
        if let Some(v) = env("HEARTH_THREADS") {
            c.threads = v
                .parse()
                .with_context(|| format!("HEARTH_THREADS={v:?} is not a number"))?;
        }
        if let Some(v) = env("HEARTH_MEMORY_BUDGET") {
            c.memory_budget = parse_bytes(&v)
                .map_err(anyhow::Error::msg)
                .context("HEARTH_MEMORY_BUDGET")?;
        }
        if let Some(v) = env("HEARTH_KEEP_ALIVE") {
            c.keep_alive = parse_duration(&v)
                .map_err(anyhow::Error::msg)
                .context("HEARTH_KEEP_ALIVE")?;
        }
        if let Some(b) = &flags.memory_budget {
            c.memory_budget = parse_bytes(b)
                .map_err(anyhow::Error::msg)
                .context("--memory-budget")?;
        }
        if let Some(h) = &flags.host {
            c.host = parse_host(h).context("--host")?;
        }
        if let Some(p) = flags.port {
            c.port = p;
        }
        if let Some(s) = &flags.socket {
            c.socket = socket_setting(s);
        }
        if flags.allow_anonymous {
            c.allow_anonymous = true;
        }
        if let Some(t) = flags.threads {
            c.threads = t;
        }
        c.check()?;
        Ok(c)
    }

    fn apply_file(&mut self, f: FileConfig) -> Result<()> {
        if let Some(h) = f.host {
            self.host = parse_host(&h).context("host")?;
        }
        if let Some(p) = f.port {
            self.port = p;
        }
        if let Some(s) = f.socket {
            self.socket = socket_setting(&s);
        }
        if let Some(a) = f.allow_anonymous {
            self.allow_anonymous = a;
        }
        match f.memory_budget {
            Some(NumOrText::Num(n)) if n > 0 => self.memory_budget = n as u64,
            Some(NumOrText::Num(n)) => bail!("memory_budget = {n}: the budget must be positive"),
            Some(NumOrText::Text(t)) => {
                self.memory_budget = parse_bytes(&t)
                    .map_err(anyhow::Error::msg)
                    .context("memory_budget")?
            }
            None => {}
        }
        match f.keep_alive {
            Some(NumOrText::Num(n)) => {
                self.keep_alive = parse_keep_alive(&serde_json::json!(n))
                    .map_err(anyhow::Error::msg)
                    .context("keep_alive")?
            }
            Some(NumOrText::Text(t)) => {
                self.keep_alive = parse_duration(&t)
                    .map_err(anyhow::Error::msg)
                    .context("keep_alive")?
            }
            None => {}
        }
        macro_rules! take {
            ($($field:ident),*) => { $( if let Some(v) = f.$field { self.$field = v; } )* };
        }
        take!(
            threads,
            max_batch,
            max_queue,
            prefill_chunk,
            default_ctx,
            shutdown_grace_secs,
            anonymous_models,
            auto_base,
            memory_wait_secs
        );
        Ok(())
    }

    fn check(&self) -> Result<()> {
        for (name, v) in [
            ("threads", self.threads),
            ("max_batch", self.max_batch),
            ("max_queue", self.max_queue),
            ("prefill_chunk", self.prefill_chunk),
            ("default_ctx", self.default_ctx),
        ] {
            if v == 0 {
                bail!("{name} must be at least 1");
            }
        }
        Ok(())
    }

    /// Whether the TCP listener is reachable from other machines.
    pub fn is_exposed(&self) -> bool {
        !self.host.is_loopback()
    }
}

fn parse_host(s: &str) -> Result<IpAddr> {
    if s == "localhost" {
        return Ok(IpAddr::from([127, 0, 0, 1]));
    }
    s.parse()
        .with_context(|| format!("{s:?} is not an IP address (use 127.0.0.1, ::1 or 0.0.0.0)"))
}

/// An empty value or `none` turns the socket off.
fn socket_setting(s: &str) -> Option<PathBuf> {
    match s {
        "" | "none" | "off" => None,
        p => Some(PathBuf::from(p)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_beat_environment_beat_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.toml"),
            "port = 1000\nhost = \"127.0.0.1\"\nmax_batch = 4\n",
        )
        .unwrap();
        let none = |_: &str| None;
        let c = ServeConfig::layer(dir.path(), &Flags::default(), &none).unwrap();
        assert_eq!((c.port, c.max_batch), (1000, 4));
        let env = |k: &str| (k == "HEARTH_PORT").then(|| "2000".to_string());
        let c = ServeConfig::layer(dir.path(), &Flags::default(), &env).unwrap();
        assert_eq!(c.port, 2000);
        let flags = Flags {
            port: Some(3000),
            ..Flags::default()
        };
        let c = ServeConfig::layer(dir.path(), &flags, &env).unwrap();
        assert_eq!((c.port, c.max_batch), (3000, 4));
    }

    #[test]
    fn the_memory_budget_from_each_layer() {
        let dir = tempfile::tempdir().unwrap();
        let none = |_: &str| None;
        let c = ServeConfig::layer(dir.path(), &Flags::default(), &none).unwrap();
        assert!(c.memory_budget > 0);
        std::fs::write(
            dir.path().join("config.toml"),
            "memory_budget = \"512MiB\"\nkeep_alive = \"10s\"\n",
        )
        .unwrap();
        let c = ServeConfig::layer(dir.path(), &Flags::default(), &none).unwrap();
        assert_eq!(c.memory_budget, 512 << 20);
        assert_eq!(
            c.keep_alive,
            KeepAlive::For(std::time::Duration::from_secs(10))
        );
        let env = |k: &str| (k == "HEARTH_MEMORY_BUDGET").then(|| "1GiB".to_string());
        let c = ServeConfig::layer(dir.path(), &Flags::default(), &env).unwrap();
        assert_eq!(c.memory_budget, 1 << 30);
        let flags = Flags {
            memory_budget: Some("300MiB".into()),
            ..Flags::default()
        };
        let c = ServeConfig::layer(dir.path(), &flags, &env).unwrap();
        assert_eq!(c.memory_budget, 300 << 20);
        let flags = Flags {
            memory_budget: Some("lots".into()),
            ..Flags::default()
        };
        let e = ServeConfig::layer(dir.path(), &flags, &env).unwrap_err();
        assert!(format!("{e:#}").contains("--memory-budget"), "{e:#}");
        std::fs::write(dir.path().join("config.toml"), "memory_budget = 0\n").unwrap();
        let e = ServeConfig::layer(dir.path(), &Flags::default(), &none).unwrap_err();
        assert!(format!("{e:#}").contains("memory_budget"), "{e:#}");
    }

    #[test]
    fn bad_settings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.toml"), "prot = 1\n").unwrap();
        let none = |_: &str| None;
        let e = ServeConfig::layer(dir.path(), &Flags::default(), &none).unwrap_err();
        assert!(format!("{e:#}").contains("prot"), "{e:#}");
        std::fs::write(dir.path().join("config.toml"), "max_batch = 0\n").unwrap();
        let e = ServeConfig::layer(dir.path(), &Flags::default(), &none).unwrap_err();
        assert!(format!("{e:#}").contains("max_batch"), "{e:#}");
        std::fs::remove_file(dir.path().join("config.toml")).unwrap();
        let env = |k: &str| (k == "HEARTH_PORT").then(|| "high".to_string());
        let e = ServeConfig::layer(dir.path(), &Flags::default(), &env).unwrap_err();
        assert!(format!("{e:#}").contains("HEARTH_PORT"), "{e:#}");
        let flags = Flags {
            host: Some("example".into()),
            ..Flags::default()
        };
        let e = ServeConfig::layer(dir.path(), &flags, &none).unwrap_err();
        assert!(format!("{e:#}").contains("--host"), "{e:#}");
    }
}
