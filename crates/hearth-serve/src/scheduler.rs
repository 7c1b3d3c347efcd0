//! Continuous batching: one thread per loaded model runs forward passes over
//! every sequence that model is serving, and requests join and leave between
//! passes.
//!
//! This module owns the waiting queue, admission into the batch (fair
//! between apps), cancellation of sequences whose client went away, and the
//! delivery of each step's text to the request that asked for it. The rules
//! of a single generation (sampling, stop strings, limits) are the runtime's
//! [`Sequence`]; the maths is the engine's.
//!
//! Fairness: a place in the batch goes to the waiting request whose app has
//! the fewest sequences running, then whose app was admitted least recently,
//! then the higher priority, then the one that has waited longest. So apps
//! take turns, and one app's flood takes the free places only when no other
//! app is waiting.
//!
//! Memory: a job carries the governor's reservation for its KV cache, so
//! the bytes are given back the moment the sequence (and its cache) is
//! dropped; before each pass the model's KV pool is given a capacity of
//! exactly what its jobs reserved plus the prefix cache's share, so the
//! pool never holds more than the governor granted and lets go of kept
//! blocks when a job ends. The worker also holds its model's reservation,
//! so the weights count until the thread that runs them has let go of
//! them. Each pass publishes what the pool holds, and times the adapter
//! plan when the batch's set of adapters changed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use hearth_runtime::{PrefixCache, Runtime, Sequence, Step, StopReason};
use tokio::sync::mpsc as tmpsc;

use crate::governor::Reservation;
use crate::metrics::{Metric, Metrics};

/// What a request hears from its generation.
#[derive(Debug)]
pub enum Event {
    /// New text (possibly empty) and the tokens sampled since the last event.
    Delta {
        text: String,
        steps: Vec<Step>,
    },
    Done(Summary),
    Error(String),
}

#[derive(Clone, Debug)]
pub struct Summary {
    pub reason: StopReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// From admission to the end of the prompt, and from there to the end.
    pub prefill_ms: f64,
    pub decode_ms: f64,
    pub queued_ms: f64,
}

pub struct Job {
    pub app: String,
    pub priority: i32,
    pub seq: Sequence,
    pub events: tmpsc::UnboundedSender<Event>,
    pub arrived: Instant,
    /// The governor's bytes for this sequence's KV cache; declared after
    /// `seq` so the cache is freed before the bytes are given back.
    pub kv: Option<Reservation>,
}

struct Running {
    job: Job,
    /// Still feeding its prompt before the last pass.
    prefilling: bool,
    admitted: Instant,
    first_token: Option<Instant>,
    last_token: Option<Instant>,
}

#[derive(Clone, Debug)]
pub struct SchedConfig {
    pub max_batch: usize,
    pub max_queue: usize,
    pub prefill_chunk: usize,
    /// Bytes of prompt caches kept for reuse (counted in the model's scratch).
    pub prefix_bytes: usize,
}

/// The handle requests are submitted through.
pub struct Scheduler {
    tx: mpsc::Sender<Job>,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    kv_bytes: Arc<AtomicU64>,
    max_queue: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue for model {model} is full ({limit} requests waiting); try again later")]
    QueueFull { model: String, limit: usize },
    #[error("model {0} is shutting down")]
    Closed(String),
}

impl Scheduler {
    /// Start the model's thread. `keep` (the model's reservation) lives as
    /// long as the thread does, after the thread's hold on `rt` ends.
    pub fn spawn(
        model: String,
        rt: Arc<Runtime>,
        cfg: SchedConfig,
        metrics: Arc<Metrics>,
        keep: Arc<Reservation>,
    ) -> std::io::Result<Scheduler> {
        let (tx, rx) = mpsc::channel();
        let waiting = Arc::new(AtomicUsize::new(0));
        let running = Arc::new(AtomicUsize::new(0));
        let kv_bytes = Arc::new(AtomicU64::new(0));
        let max_queue = cfg.max_queue;
        let prefix_bytes = cfg.prefix_bytes;
        let mut worker = Worker {
            model: model.clone(),
            rt,
            cfg,
            metrics,
            rx,
            queue: Vec::new(),
            active: Vec::new(),
            last_admitted: HashMap::new(),
            prefix: PrefixCache::new(16, prefix_bytes, 16),
            waiting: waiting.clone(),
            running: running.clone(),
            kv_bytes: kv_bytes.clone(),
            last_adapters: Vec::new(),
            _keep: keep,
        };
        std::thread::Builder::new()
            .name(format!("sched-{model}"))
            .spawn(move || worker.run())?;
        Ok(Scheduler {
            tx,
            waiting,
            running,
            kv_bytes,
            max_queue,
        })
    }

    pub fn submit(&self, job: Job, model: &str) -> Result<(), SubmitError> {
        // Reserve a place first so concurrent submitters cannot overshoot.
        let before = self.waiting.fetch_add(1, Ordering::SeqCst);
        if before >= self.max_queue {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull {
                model: model.to_string(),
                limit: self.max_queue,
            });
        }
        self.tx.send(job).map_err(|_| {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            SubmitError::Closed(model.to_string())
        })
    }

    /// Requests waiting and sequences in the batch.
    pub fn load(&self) -> (usize, usize) {
        (
            self.waiting.load(Ordering::SeqCst),
            self.running.load(Ordering::SeqCst),
        )
    }

    /// Bytes the running sequences' caches and the prefix cache hold, as
    /// measured after the last pass.
    pub fn kv_bytes(&self) -> u64 {
        self.kv_bytes.load(Ordering::SeqCst)
    }
}

struct Worker {
    model: String,
    rt: Arc<Runtime>,
    cfg: SchedConfig,
    metrics: Arc<Metrics>,
    rx: mpsc::Receiver<Job>,
    queue: Vec<Job>,
    active: Vec<Running>,
    /// When each app last had a request admitted.
    last_admitted: HashMap<String, Instant>,
    /// Prompts recently prefilled, for requests that start the same way.
    prefix: PrefixCache,
    waiting: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    kv_bytes: Arc<AtomicU64>,
    /// The adapter ids of the previous pass, sorted.
    last_adapters: Vec<u64>,
    /// Declared last: dropped after `rt`.
    _keep: Arc<Reservation>,
}

impl Worker {
    fn run(&mut self) {
        loop {
            if self.active.is_empty() && self.queue.is_empty() {
                match self.rx.recv() {
                    Ok(job) => self.queue.push(job),
                    // Every handle is gone: the model was unloaded.
                    Err(_) => return,
                }
            }
            while let Ok(job) = self.rx.try_recv() {
                self.queue.push(job);
            }
            self.drop_abandoned();
            self.admit();
            self.size_kv_pool();
            self.publish_load();
            if self.active.is_empty() {
                continue;
            }
            self.step();
        }
    }

    /// Requests whose client has gone are cancelled here, before the next pass.
    fn drop_abandoned(&mut self) {
        let before = self.queue.len();
        self.queue.retain(|j| !j.events.is_closed());
        let gone = before - self.queue.len();
        if gone > 0 {
            self.waiting.fetch_sub(gone, Ordering::SeqCst);
        }
        self.active.retain(|r| !r.job.events.is_closed());
    }

    fn admit(&mut self) {
        while self.active.len() < self.cfg.max_batch && !self.queue.is_empty() {
            let mut per_app: HashMap<&str, usize> = HashMap::new();
            for r in &self.active {
                *per_app.entry(r.job.app.as_str()).or_default() += 1;
            }
            let pick = self
                .queue
                .iter()
                .enumerate()
                .min_by_key(|(_, j)| {
                    (
                        per_app.get(j.app.as_str()).copied().unwrap_or(0),
                        // Never admitted sorts first.
                        self.last_admitted.get(&j.app).copied(),
                        -j.priority,
                        j.arrived,
                    )
                })
                .map(|(i, _)| i);
            let Some(i) = pick else { break };
            let mut job = self.queue.remove(i);
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            self.last_admitted.insert(job.app.clone(), Instant::now());
            match self.prefix.seed(&mut job.seq, 0) {
                Ok(0) => {}
                Ok(n) => {
                    self.metrics
                        .add(Metric::PrefixReused, &[("model", &self.model)], n as f64)
                }
                Err(e) => tracing::warn!(model = %self.model, "prefix reuse failed: {e}"),
            }
            self.active.push(Running {
                prefilling: job.seq.prefilling(),
                job,
                admitted: Instant::now(),
                first_token: None,
                last_token: None,
            });
        }
    }

    /// The KV pool may hold what the jobs here reserved, and the prefix
    /// cache's share.
    fn size_kv_pool(&self) {
        let reserved: u64 = self
            .queue
            .iter()
            .chain(self.active.iter().map(|r| &r.job))
            .filter_map(|j| j.kv.as_ref())
            .map(|r| r.cost().kv)
            .sum();
        let cap = reserved as usize + self.cfg.prefix_bytes;
        if self.rt.kv_capacity() != cap {
            self.rt.set_kv_capacity(cap);
        }
    }

    fn publish_load(&self) {
        self.running.store(self.active.len(), Ordering::SeqCst);
        let kv = self.rt.kv_stats().reserved;
        self.kv_bytes.store(kv as u64, Ordering::SeqCst);
        self.metrics.set(
            Metric::QueueDepth,
            &[("model", &self.model)],
            self.queue.len() as f64,
        );
    }

    /// The batch's adapter plan: which adapters this pass runs (the engine
    /// groups rows by them). Unmerged adapters make a change of set pure
    /// bookkeeping, timed here when the set differs from the last pass.
    fn plan_adapters(&mut self) {
        let t0 = Instant::now();
        let mut ids: Vec<u64> = self
            .active
            .iter()
            .filter_map(|r| r.job.seq.adapter().map(|a| a.id()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids != self.last_adapters {
            self.last_adapters = ids;
            self.metrics.observe(
                Metric::AdapterSwapSeconds,
                &[("model", &self.model)],
                t0.elapsed().as_secs_f64(),
            );
        }
    }

    fn step(&mut self) {
        self.plan_adapters();
        let mut seqs: Vec<&mut Sequence> = self.active.iter_mut().map(|r| &mut r.job.seq).collect();
        let result = self.rt.step_batch(&mut seqs, self.cfg.prefill_chunk);
        let now = Instant::now();
        match result {
            Ok(n) => self
                .metrics
                .observe(Metric::BatchSize, &[("model", &self.model)], n as f64),
            Err(e) => {
                // A failed pass leaves every cache in it unusable: end them all.
                let msg = format!("the forward pass failed: {e}");
                tracing::error!(model = %self.model, "{msg}");
                for r in self.active.drain(..) {
                    let _ = r.job.events.send(Event::Error(msg.clone()));
                }
                return;
            }
        }
        for r in self.active.iter_mut() {
            if r.prefilling && !r.job.seq.prefilling() {
                r.prefilling = false;
                self.prefix.remember(&r.job.seq, 0);
            }
        }
        let model = self.model.clone();
        let metrics = self.metrics.clone();
        self.active
            .retain_mut(|r| deliver(r, now, &model, &metrics));
        self.size_kv_pool();
        self.publish_load();
    }
}

/// Send a sequence's news to its request; false when the sequence is over.
fn deliver(r: &mut Running, now: Instant, model: &str, metrics: &Metrics) -> bool {
    let seq = &mut r.job.seq;
    let steps = seq.take_steps().to_vec();
    let text = seq.take_text();
    if !steps.is_empty() {
        match r.last_token {
            None => {
                r.first_token = Some(now);
                let ttft = now.duration_since(r.job.arrived).as_secs_f64();
                metrics.observe(Metric::TimeToFirstToken, &[("model", model)], ttft);
            }
            Some(last) => {
                let gap = now.duration_since(last).as_secs_f64();
                metrics.observe(Metric::TokenLatency, &[("model", model)], gap);
            }
        }
        r.last_token = Some(now);
    }
    if (!text.is_empty() || !steps.is_empty())
        && r.job.events.send(Event::Delta { text, steps }).is_err()
    {
        return false;
    }
    match seq.finished() {
        None => true,
        // The constraint could not go on (no token of this vocabulary fits
        // the grammar here): what was sent is valid so far but incomplete,
        // and ending it as a normal stop would pass it off as whole.
        Some(_) if seq.constraint_error().is_some() => {
            let e = seq.constraint_error().unwrap_or_default();
            let msg = format!("the output constraint could not be satisfied: {e}");
            tracing::warn!(model = %model, "{msg}");
            let _ = r.job.events.send(Event::Error(msg));
            false
        }
        Some(reason) => {
            let first = r.first_token.unwrap_or(now);
            let _ = r.job.events.send(Event::Done(Summary {
                reason,
                prompt_tokens: seq.prompt().len(),
                completion_tokens: seq.completion().len(),
                prefill_ms: first.duration_since(r.admitted).as_secs_f64() * 1e3,
                decode_ms: now.duration_since(first).as_secs_f64() * 1e3,
                queued_ms: r.admitted.duration_since(r.job.arrived).as_secs_f64() * 1e3,
            }));
            false
        }
    }
}
