//! Counters, gauges and histograms, rendered in Prometheus' text format for
//! `GET /metrics`.
//!
//! This module owns the metric names, their help texts and buckets; callers
//! only say which metric moved and by how much. It is a small registry of
//! its own rather than a client library: hearth exports a dozen series.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    Requests,
    Tokens,
    InFlight,
    TimeToFirstToken,
    TokenLatency,
    QueueDepth,
    BatchSize,
    LoadedModels,
    ModelBytes,
    ModelLoadSeconds,
    PrefixReused,
    ExpertLoads,
    ExpertLoadSeconds,
    AdapterBytes,
    ExpertEvictions,
    ModelEvictions,
    GovernorBudget,
    GovernorUsed,
    AdapterSwapSeconds,
}

enum Kind {
    Counter,
    Gauge,
    Histogram(&'static [f64]),
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Adapter swaps are bookkeeping between passes: microseconds, not seconds.
const SWAP_BUCKETS: &[f64] = &[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0];

impl Metric {
    fn describe(self) -> (&'static str, Kind, &'static str) {
        match self {
            Metric::Requests => (
                "hearth_requests_total",
                Kind::Counter,
                "Requests answered, by app, model, endpoint and HTTP status.",
            ),
            Metric::Tokens => (
                "hearth_tokens_total",
                Kind::Counter,
                "Tokens processed, by app, model and kind (prompt or completion).",
            ),
            Metric::InFlight => (
                "hearth_requests_in_flight",
                Kind::Gauge,
                "Requests being answered now, by app.",
            ),
            Metric::TimeToFirstToken => (
                "hearth_time_to_first_token_seconds",
                Kind::Histogram(LATENCY_BUCKETS),
                "Time from a generation request's arrival to its first token.",
            ),
            Metric::TokenLatency => (
                "hearth_token_latency_seconds",
                Kind::Histogram(LATENCY_BUCKETS),
                "Time between consecutive generated tokens of one sequence.",
            ),
            Metric::QueueDepth => (
                "hearth_queue_depth",
                Kind::Gauge,
                "Requests waiting for a place in a model's batch.",
            ),
            Metric::BatchSize => (
                "hearth_batch_size",
                Kind::Histogram(BATCH_BUCKETS),
                "Sequences in each forward pass.",
            ),
            Metric::LoadedModels => (
                "hearth_loaded_models",
                Kind::Gauge,
                "Models loaded in memory.",
            ),
            Metric::ModelBytes => (
                "hearth_model_bytes",
                Kind::Gauge,
                "Bytes of a loaded model's weights, by model.",
            ),
            Metric::PrefixReused => (
                "hearth_prefix_tokens_reused_total",
                Kind::Counter,
                "Prompt tokens whose keys and values were copied from an earlier prompt instead of computed.",
            ),
            Metric::ModelLoadSeconds => (
                "hearth_model_load_seconds",
                Kind::Histogram(LATENCY_BUCKETS),
                "Time to load a model.",
            ),
            Metric::ExpertLoads => (
                "hearth_expert_loads_total",
                Kind::Counter,
                "Experts' adapters loaded into memory, by expert.",
            ),
            Metric::ExpertLoadSeconds => (
                "hearth_expert_load_seconds",
                Kind::Histogram(LATENCY_BUCKETS),
                "Time to load an expert's adapter and check it against its base.",
            ),
            Metric::AdapterBytes => (
                "hearth_adapter_bytes",
                Kind::Gauge,
                "Bytes of a loaded expert's adapter, by expert.",
            ),
            Metric::ExpertEvictions => (
                "hearth_expert_evictions_total",
                Kind::Counter,
                "Experts' adapters unloaded by the governor (for room, idleness or with their base), by expert and reason.",
            ),
            Metric::ModelEvictions => (
                "hearth_model_evictions_total",
                Kind::Counter,
                "Models unloaded by the governor (for room or after keep_alive), by model and reason.",
            ),
            Metric::GovernorBudget => (
                "hearth_governor_budget_bytes",
                Kind::Gauge,
                "The memory budget (--memory-budget).",
            ),
            Metric::GovernorUsed => (
                "hearth_governor_used_bytes",
                Kind::Gauge,
                "Bytes the governor has reserved, by kind (weights, adapters, kv, scratch).",
            ),
            Metric::AdapterSwapSeconds => (
                "hearth_adapter_swap_seconds",
                Kind::Histogram(SWAP_BUCKETS),
                "Time to prepare a batch's adapter plan when its set of adapters changed since the previous pass.",
            ),
        }
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub struct Metrics {
    values: Mutex<BTreeMap<(Metric, Labels), f64>>,
    histograms: Mutex<BTreeMap<(Metric, Labels), Histogram>>,
}

fn labels(l: &[(&'static str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl Metrics {
    pub fn add(&self, m: Metric, l: &[(&'static str, &str)], v: f64) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        *values.entry((m, labels(l))).or_default() += v;
    }

    pub fn set(&self, m: Metric, l: &[(&'static str, &str)], v: f64) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.insert((m, labels(l)), v);
    }

    /// Forget a labelled series (a model that was unloaded).
    pub fn remove(&self, m: Metric, l: &[(&'static str, &str)]) {
        let mut values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        values.remove(&(m, labels(l)));
    }

    pub fn observe(&self, m: Metric, l: &[(&'static str, &str)], v: f64) {
        let Kind::Histogram(buckets) = m.describe().1 else {
            return;
        };
        let mut hs = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let h = hs.entry((m, labels(l))).or_default();
        if h.counts.is_empty() {
            h.counts = vec![0; buckets.len()];
        }
        for (c, &b) in h.counts.iter_mut().zip(buckets) {
            if v <= b {
                *c += 1;
            }
        }
        h.sum += v;
        h.count += 1;
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let values = self.values.lock().unwrap_or_else(|p| p.into_inner());
        let hs = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        let mut last: Option<Metric> = None;
        let mut header = |out: &mut String, m: Metric| {
            if last != Some(m) {
                let (name, kind, help) = m.describe();
                let ty = match kind {
                    Kind::Counter => "counter",
                    Kind::Gauge => "gauge",
                    Kind::Histogram(_) => "histogram",
                };
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
                last = Some(m);
            }
        };
        for ((m, l), v) in values.iter() {
            header(&mut out, *m);
            let _ = writeln!(out, "{}{} {}", m.describe().0, fmt_labels(l, None), v);
        }
        for ((m, l), h) in hs.iter() {
            header(&mut out, *m);
            let (name, kind, _) = m.describe();
            let Kind::Histogram(buckets) = kind else {
                continue;
            };
            for (c, b) in h.counts.iter().zip(buckets.iter()) {
                let le = b.to_string();
                let _ = writeln!(out, "{name}_bucket{} {c}", fmt_labels(l, Some(&le)));
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                fmt_labels(l, Some("+Inf")),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
        }
        out
    }
}

fn fmt_labels(l: &Labels, le: Option<&str>) -> String {
    let mut parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        m.add(Metric::Requests, &[("app", "a\"b"), ("model", "m")], 1.0);
        m.add(Metric::Requests, &[("app", "a\"b"), ("model", "m")], 2.0);
        m.observe(Metric::BatchSize, &[("model", "m")], 3.0);
        let text = m.render();
        assert!(
            text.contains("# TYPE hearth_requests_total counter"),
            "{text}"
        );
        assert!(
            text.contains("hearth_requests_total{app=\"a\\\"b\",model=\"m\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("hearth_batch_size_bucket{model=\"m\",le=\"2\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("hearth_batch_size_bucket{model=\"m\",le=\"4\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("hearth_batch_size_count{model=\"m\"} 1"),
            "{text}"
        );
    }
}
