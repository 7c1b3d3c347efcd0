//! The memory governor: the daemon's budget in bytes and the ledger of what
//! is charged against it.
//!
//! This module owns the arithmetic of memory, not the things that use it:
//! what a base, an adapter, a request's KV cache or the engine's scratch is
//! estimated to cost ([`Cost`]), the reservations that hold those bytes for as
//! long as the thing lives ([`Reservation`], released on drop), how a budget
//! and a `keep_alive` are written, and what the kernel says is resident (the
//! mapping of a model file in `/proc/self/smaps`, the process's `VmRSS`).
//! Deciding *what* to evict is [`crate::models`]' (it owns the loaded things
//! and knows which are in use); admission of a request goes through it too.
//!
//! Why reservations rather than a periodic sum: a reservation is taken
//! before the memory is touched and dropped only after the thing that used
//! it is gone, so the sum of live reservations bounds what the loaded things
//! can hold at any instant, and admission can check "fits or not" with one
//! lock. The estimates are deliberately conservative; `hearth ps` shows each
//! next to what was measured so they can be checked.
//!
//! KV is charged per request: the whole blocks of the model's KV pool that
//! the positions it can reach need. The governor owns each pool's capacity:
//! the scheduler sets it to the sum of its requests' reservations plus the
//! prefix cache's share, so the pool can never hold more than was reserved,
//! and blocks it kept for reuse go back when their request's bytes do.

use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::metrics::{Metric, Metrics};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Bytes by what they hold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Model weights (mapped tensor bytes; an embedding model's files).
    pub weights: u64,
    /// LoRA adapters' matrices.
    pub adapters: u64,
    /// Keys and values of running and queued requests (a model's prefix
    /// cache is part of its scratch).
    pub kv: u64,
    /// Engine and runtime working memory: activations, logits, tokenizer.
    pub scratch: u64,
}

impl Cost {
    pub fn total(&self) -> u64 {
        self.weights + self.adapters + self.kv + self.scratch
    }

    fn plus(self, o: Cost) -> Cost {
        Cost {
            weights: self.weights + o.weights,
            adapters: self.adapters + o.adapters,
            kv: self.kv + o.kv,
            scratch: self.scratch + o.scratch,
        }
    }

    fn minus(self, o: Cost) -> Cost {
        Cost {
            weights: self.weights.saturating_sub(o.weights),
            adapters: self.adapters.saturating_sub(o.adapters),
            kv: self.kv.saturating_sub(o.kv),
            scratch: self.scratch.saturating_sub(o.scratch),
        }
    }
}

/// The budget and the sum of live reservations.
pub struct Governor {
    budget: u64,
    used: Mutex<Cost>,
    /// Woken whenever bytes are released, for requests waiting for room.
    freed: tokio::sync::Notify,
    metrics: Arc<Metrics>,
}

/// Bytes held for one loaded thing or one request; given back on drop.
pub struct Reservation {
    gov: Arc<Governor>,
    cost: Cost,
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reservation({})", human(self.cost.total()))
    }
}

impl Reservation {
    pub fn cost(&self) -> Cost {
        self.cost
    }

    /// Change what this reservation holds to `to`, if the budget allows
    /// (shrinking always does); false leaves it as it was.
    pub fn resize(&mut self, to: Cost) -> bool {
        let mut used = self.gov.used.lock().unwrap_or_else(|p| p.into_inner());
        let after = used.minus(self.cost).plus(to);
        if to.total() > self.cost.total() && after.total() > self.gov.budget {
            return false;
        }
        *used = after;
        self.gov.publish(&used);
        drop(used);
        self.cost = to;
        self.gov.freed.notify_waiters();
        true
    }

    /// Take over `other`'s bytes: one reservation for both.
    pub fn absorb(&mut self, mut other: Reservation) {
        self.cost = self.cost.plus(other.cost);
        other.cost = Cost::default();
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        {
            let mut used = self.gov.used.lock().unwrap_or_else(|p| p.into_inner());
            *used = used.minus(self.cost);
            self.gov.publish(&used);
        }
        self.gov.freed.notify_waiters();
    }
}

impl Governor {
    pub fn new(budget: u64, metrics: Arc<Metrics>) -> Arc<Governor> {
        metrics.set(Metric::GovernorBudget, &[], budget as f64);
        let g = Arc::new(Governor {
            budget,
            used: Mutex::new(Cost::default()),
            freed: tokio::sync::Notify::new(),
            metrics,
        });
        g.publish(&Cost::default());
        g
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    /// What live reservations hold now.
    pub fn used(&self) -> Cost {
        *self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve `cost` if it fits under the budget with everything else.
    pub fn try_reserve(self: &Arc<Self>, cost: Cost) -> Option<Reservation> {
        let mut used = self.used.lock().unwrap_or_else(|p| p.into_inner());
        if used.total() + cost.total() > self.budget {
            return None;
        }
        *used = used.plus(cost);
        self.publish(&used);
        Some(Reservation {
            gov: self.clone(),
            cost,
        })
    }

    /// Wait until some bytes are released, or `max` passes. Polling with a
    /// bound keeps a release that happened just before the wait from being
    /// missed.
    pub async fn wait_for_release(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.freed.notified()).await;
    }

    fn publish(&self, used: &Cost) {
        for (kind, v) in [
            ("weights", used.weights),
            ("adapters", used.adapters),
            ("kv", used.kv),
            ("scratch", used.scratch),
        ] {
            self.metrics
                .set(Metric::GovernorUsed, &[("kind", kind)], v as f64);
        }
    }
}

/// A rough KV figure for a short request on a model not yet loaded (the
/// start-up check): 64 positions at 64 KiB, more than either default
/// model's per-position cost.
pub const SHORT_REQUEST_KV: u64 = 64 * 64 * KIB;

/// What the shape of a base says its runtime needs besides the weights: the
/// tokenizer's tables, logits and sampler candidates for a full batch,
/// activations of a prefill chunk, the prefix cache's cap and a fixed
/// allowance for the thread pool and small tables. Conservative on purpose
/// (`hearth ps` shows it beside the process's measured resident memory).
pub struct ScratchShape {
    pub n_vocab: u64,
    pub n_embd: u64,
    pub n_ff: u64,
    pub max_batch: u64,
    pub prefill_chunk: u64,
    pub prefix_cache: u64,
}

pub fn scratch_estimate(s: &ScratchShape) -> u64 {
    let tokenizer = s.n_vocab * 160;
    let logits = s.max_batch * s.n_vocab * 12;
    let activations = s.prefill_chunk * (4 * s.n_embd + 2 * s.n_ff) * 8;
    tokenizer + logits + activations + s.prefix_cache + 4 * MIB
}

/// The prefix cache a model may keep: a small share of the budget, at
/// most 64 MiB, at least 4 MiB.
pub fn prefix_cache_bytes(budget: u64) -> u64 {
    (budget / 32).clamp(4 * MIB, 64 * MIB)
}

/// `512MiB`, `1GiB`, `1.5 GiB`, `1000000` (bytes), `2GB` (decimal).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (write e.g. 512MiB, 2GiB or a byte count)"))?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => KIB,
        "m" | "mib" => MIB,
        "g" | "gib" => GIB,
        "t" | "tib" => GIB * 1024,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!(
                "{s:?}: unknown unit {other:?} (use KiB, MiB, GiB or bytes)"
            ))
        }
    };
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 1.0 {
        return Err(format!("{s:?}: the size must be positive"));
    }
    Ok(bytes as u64)
}

/// Sizes in binary units, as the budget is written.
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes >= GIB {
        format!("{:.2} GiB", b / GIB as f64)
    } else if bytes >= MIB {
        format!("{:.0} MiB", b / MIB as f64)
    } else if bytes >= KIB {
        format!("{:.0} KiB", b / KIB as f64)
    } else {
        format!("{bytes} B")
    }
}

/// Half of the machine's memory (`MemTotal` of `/proc/meminfo`): room for
/// the apps the daemon serves and the page cache, and far from swapping.
/// 4 GiB where the kernel does not say.
pub fn default_budget() -> u64 {
    mem_total().map_or(4 * GIB, |t| t / 2)
}

fn mem_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    meminfo_field(&text, "MemTotal:")
}

/// A `kB` field of `/proc/meminfo` or `/proc/PID/status`, in bytes.
fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: u64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024)
}

/// This process's resident set (`VmRSS`).
pub fn process_rss() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    meminfo_field(&text, "VmRSS:")
}

/// Resident bytes of every mapping of the file `path` in this process,
/// from `/proc/self/smaps`: mappings are matched by device and inode, so a
/// hard-linked blob is found whatever name it was opened by.
pub fn mapped_resident(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    Some(smaps_resident(&smaps, meta.ino()))
}

fn smaps_resident(smaps: &str, inode: u64) -> u64 {
    let mut total = 0;
    let mut inside = false;
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or("");
        // A mapping's header: `start-end perms offset dev inode [path]`.
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let ino = f.nth(3).and_then(|i| i.parse::<u64>().ok());
            inside = ino == Some(inode) && inode != 0;
        } else if inside && first == "Rss:" {
            total += f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0) * 1024;
        }
    }
    total
}

/// How long a model stays loaded once idle, as a request says it
/// (Ollama's `keep_alive`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeepAlive {
    /// Unload this long after the last request ends (zero: at once).
    For(Duration),
    /// Never unload for idleness (a negative `keep_alive`); the budget can
    /// still evict it when something else needs the room.
    Forever,
}

/// Ollama's forms: a number of seconds, or a duration string (`"5m"`,
/// `"1h30m"`, `"90s"`, `"250ms"`, `"0"`); negative keeps the model loaded.
pub fn parse_keep_alive(v: &serde_json::Value) -> Result<KeepAlive, String> {
    match v {
        serde_json::Value::Number(n) => {
            let secs = n
                .as_f64()
                .ok_or_else(|| format!("keep_alive {n} is not a number"))?;
            Ok(seconds(secs))
        }
        serde_json::Value::String(s) => parse_duration(s),
        other => Err(format!(
            "keep_alive {other} must be a duration such as \"5m\" or a number of seconds"
        )),
    }
}

fn seconds(secs: f64) -> KeepAlive {
    if secs < 0.0 {
        KeepAlive::Forever
    } else {
        KeepAlive::For(Duration::from_secs_f64(secs.min(1e9)))
    }
}

/// A duration string: a sequence of number+unit (`h`, `m`, `s`, `ms`), or
/// a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<KeepAlive, String> {
    let t = s.trim();
    let bad = || {
        format!("keep_alive {s:?} is not a duration (write e.g. \"5m\", \"30s\", \"0\" or \"-1\")")
    };
    if let Ok(n) = t.parse::<f64>() {
        return Ok(seconds(n));
    }
    let (neg, mut rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let n: f64 = rest[..n_end].parse().map_err(|_| bad())?;
        let after = &rest[n_end..];
        let u_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let unit = match &after[..u_end] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            _ => return Err(bad()),
        };
        total += n * unit;
        rest = &after[u_end..];
    }
    Ok(if neg {
        KeepAlive::Forever
    } else {
        seconds(total)
    })
}

/// Make freed memory go back to the kernel, so that resident memory falls
/// when a model or adapter is dropped. glibc keeps freed heap for reuse;
/// a fixed mmap threshold makes large buffers (KV caches, adapter matrices,
/// logits) their own mappings, returned on free, and a trim after an
/// eviction hands back what small allocations left in the arenas.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called once at
        // start, before the daemon's threads exist.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        }
    }
}

/// See [`tune_allocator`].
pub fn trim_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim walks the allocator's own free lists under its
        // locks; it is safe to call from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_and_decimal_units() {
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 * MIB);
        assert_eq!(parse_bytes("1GiB").unwrap(), GIB);
        assert_eq!(parse_bytes("1.5 GiB").unwrap(), 3 * GIB / 2);
        assert_eq!(parse_bytes("64KiB").unwrap(), 64 * KIB);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("12345").unwrap(), 12345);
        for bad in ["", "lots", "12XB", "0", "-1GiB", "GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?}");
        }
        assert!(parse_bytes("3 furlongs").unwrap_err().contains("furlongs"));
    }

    #[test]
    fn keep_alive_in_ollamas_forms() {
        use serde_json::json;
        let s = |n: u64| KeepAlive::For(Duration::from_secs(n));
        assert_eq!(parse_keep_alive(&json!("5m")).unwrap(), s(300));
        assert_eq!(parse_keep_alive(&json!("1h30m")).unwrap(), s(5400));
        assert_eq!(parse_keep_alive(&json!("0")).unwrap(), s(0));
        assert_eq!(parse_keep_alive(&json!(0)).unwrap(), s(0));
        assert_eq!(parse_keep_alive(&json!(90)).unwrap(), s(90));
        assert_eq!(parse_keep_alive(&json!(-1)).unwrap(), KeepAlive::Forever);
        assert_eq!(parse_keep_alive(&json!("-1m")).unwrap(), KeepAlive::Forever);
        assert_eq!(
            parse_keep_alive(&json!("250ms")).unwrap(),
            KeepAlive::For(Duration::from_millis(250))
        );
        for bad in [json!("soon"), json!("5x"), json!(true), json!("")] {
            assert!(parse_keep_alive(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reservations_never_pass_the_budget_and_give_back_on_drop() {
        let g = Governor::new(100, Arc::new(Metrics::default()));
        let c = |w, k| Cost {
            weights: w,
            kv: k,
            ..Cost::default()
        };
        let a = g.try_reserve(c(60, 0)).expect("fits");
        assert!(g.try_reserve(c(0, 41)).is_none());
        let b = g.try_reserve(c(0, 40)).expect("fits exactly");
        assert_eq!(g.used().total(), 100);
        assert!(g.try_reserve(c(1, 0)).is_none());
        drop(a);
        assert_eq!(g.used(), c(0, 40));
        drop(b);
        assert_eq!(g.used().total(), 0);
        let mut r = g.try_reserve(c(50, 0)).expect("fits");
        assert!(!r.resize(c(101, 0)), "past the budget");
        assert!(r.resize(c(90, 0)));
        assert_eq!(g.used().total(), 90);
        assert!(r.resize(c(10, 0)));
        let other = g.try_reserve(c(0, 5)).expect("fits");
        r.absorb(other);
        assert_eq!((r.cost(), g.used()), (c(10, 5), c(10, 5)));
        drop(r);
        assert_eq!(g.used().total(), 0);
    }

    #[test]
    fn smaps_rss_is_summed_per_inode() {
        let smaps = "\
7f00-7f10 r--s 00000000 fe:00 42                   /blobs/a
Size:                 64 kB
Rss:                  12 kB
7f10-7f20 rw-p 00000000 00:00 0
Rss:                 100 kB
7f20-7f30 r--s 00001000 fe:00 42                   /blobs/a
Rss:                   8 kB
7f30-7f40 r--s 00000000 fe:00 43                   /blobs/b
Rss:                   4 kB
";
        assert_eq!(smaps_resident(smaps, 42), 20 * 1024);
        assert_eq!(smaps_resident(smaps, 43), 4 * 1024);
        assert_eq!(smaps_resident(smaps, 0), 0);
    }

    #[test]
    fn the_kernel_reports_this_process() {
        assert!(process_rss().unwrap_or(0) > 0);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("blob");
        std::fs::write(&p, vec![7u8; 1 << 16]).unwrap();
        assert_eq!(mapped_resident(&p), Some(0), "nothing maps it");
        assert_eq!(mapped_resident(&dir.path().join("missing")), None);
    }
}
