//! The hearth command line. Argument parsing and printing only: every verb
//! calls into the library crates.

mod cmd_app;
mod cmd_embed;
mod cmd_expert;
mod cmd_serve;
mod cmd_store;
mod cmd_tasks;

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hearth_runtime::{ConstraintSpec, GenOptions, Message, Runtime};
use hearth_sample::SamplerConfig;
use hearth_store::{Progress, Store};

/// hearth: the device's own AI service.
#[derive(Parser)]
#[command(name = "hearth", version, about)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Chat with a model: the prompt goes through its chat template and the answer streams.
    Run(RunArgs),
    /// Generate from a raw or templated prompt, optionally as JSON with per-step log-probabilities.
    Generate(GenerateArgs),
    /// Print the token ids of a text.
    Tokenize(TokenizeArgs),
    /// Perplexity of a text file, as llama.cpp's llama-perplexity computes it.
    Perplexity(PerplexityArgs),
    /// Prompt-processing and generation speed.
    Bench(BenchArgs),
    /// Fetch a default model (smollm2, gemma3, minilm) into hearth's home.
    Pull {
        /// Model name.
        name: String,
    },
    /// List the models in hearth's home.
    List(cmd_store::ListArgs),
    /// Store an existing GGUF file as a named model.
    Import(cmd_store::ImportArgs),
    /// Show a stored model: manifest, path, size.
    Show(cmd_store::NameArgs),
    /// Remove a stored model (and its data, unless another model shares it).
    Rm(cmd_store::NameArgs),
    /// Manage the apps allowed to use the daemon.
    App(cmd_app::AppArgs),
    /// Sentence embeddings (minilm).
    Embed(cmd_embed::EmbedArgs),
    /// Run the daemon: OpenAI- and Ollama-compatible HTTP on loopback and a Unix socket.
    Serve(cmd_serve::ServeArgs),
    /// What the running daemon has loaded.
    Ps(cmd_serve::PsArgs),
    /// Manage experts: a base model plus an adapter, prompt, defaults and a task description.
    Expert(cmd_expert::ExpertArgs),
    /// Classify a text into one of the given labels, with a probability for each (from the model's likelihood of each label).
    Classify(cmd_tasks::ClassifyArgs),
    /// Summarize a text in at most N words.
    Summarize(cmd_tasks::SummarizeArgs),
    /// Extract a JSON object valid against a schema from a text.
    Extract(cmd_tasks::ExtractArgs),
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// A model name (smollm2, gemma3) or a path to a GGUF file.
    #[arg(short = 'm', long = "model", default_value = "smollm2")]
    model: String,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
}

#[derive(Args, Clone)]
struct SampleArgs {
    /// Temperature; 0 is greedy (default 0.8, or the expert's).
    #[arg(long = "temp")]
    temp: Option<f32>,
    #[arg(long = "top-k", default_value_t = 40)]
    top_k: usize,
    /// Nucleus sampling (default 0.95, or the expert's).
    #[arg(long = "top-p")]
    top_p: Option<f32>,
    #[arg(long = "min-p", default_value_t = 0.05)]
    min_p: f32,
    #[arg(long = "repeat-penalty", default_value_t = 1.0)]
    repeat_penalty: f32,
    #[arg(long = "presence-penalty", default_value_t = 0.0)]
    presence_penalty: f32,
    #[arg(long = "frequency-penalty", default_value_t = 0.0)]
    frequency_penalty: f32,
    /// Random seed (same seed, same output).
    #[arg(long = "seed")]
    seed: Option<u64>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// Most tokens to generate.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512)]
    max_tokens: usize,
    /// A system prompt (the template's default otherwise).
    #[arg(long = "system")]
    system: Option<String>,
    /// Context length.
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    prompt: String,
}

#[derive(Args)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    sample: SampleArgs,
    /// Use the prompt as it is (BOS added, special tokens parsed) instead of the chat template.
    #[arg(long)]
    raw: bool,
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    max_tokens: usize,
    /// Ban end-of-generation tokens so that exactly N tokens come.
    #[arg(long = "ignore-eos")]
    ignore_eos: bool,
    /// Report the top K log-probabilities at each step.
    #[arg(long = "top-logprobs", default_value_t = 0)]
    top_logprobs: usize,
    #[arg(short = 'c', long = "ctx")]
    ctx: Option<usize>,
    #[command(flatten)]
    constrain: ConstrainArgs,
    /// Print one JSON object instead of streaming text.
    #[arg(long)]
    json: bool,
    prompt: String,
}

/// Constrained output: at most one of these.
#[derive(Args)]
struct ConstrainArgs {
    /// Output valid against the JSON schema in FILE.
    #[arg(long = "json-schema", value_name = "FILE", group = "constraint")]
    json_schema: Option<PathBuf>,
    /// Output the whole of which matches this regular expression.
    #[arg(long, value_name = "REGEX", group = "constraint")]
    regex: Option<String>,
    /// Output in the language of the Lark grammar in FILE.
    #[arg(long, value_name = "FILE", group = "constraint")]
    grammar: Option<PathBuf>,
}

impl ConstrainArgs {
    fn spec(&self) -> Result<Option<ConstraintSpec>> {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))
        };
        Ok(if let Some(p) = &self.json_schema {
            let v: serde_json::Value = serde_json::from_str(&read(p)?)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            Some(ConstraintSpec::JsonSchema(v))
        } else if let Some(r) = &self.regex {
            Some(ConstraintSpec::Regex(r.clone()))
        } else if let Some(p) = &self.grammar {
            Some(ConstraintSpec::Lark(read(p)?))
        } else {
            None
        })
    }
}

#[derive(Args)]
struct TokenizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Add BOS where the model adds one.
    #[arg(long)]
    bos: bool,
    /// Parse special-token text as special tokens.
    #[arg(long)]
    special: bool,
    #[arg(long)]
    json: bool,
    text: String,
}

#[derive(Args)]
struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[arg(short = 'c', long = "ctx", default_value_t = 512)]
    ctx: usize,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
struct BenchArgs {
    #[command(subcommand)]
    cmd: Option<BenchCmd>,
    #[command(flatten)]
    model: ModelArgs,
    #[arg(short = 'p', long = "n-prompt", default_value_t = 512)]
    n_prompt: usize,
    #[arg(short = 'n', long = "n-gen", default_value_t = 128)]
    n_gen: usize,
    #[arg(short = 'r', long = "repetitions", default_value_t = 3)]
    reps: usize,
    /// Also measure decode while another process keeps one core busy.
    #[arg(long)]
    contended: bool,
    /// Instead: the constraint's cost per token, on a chat prompt asking for
    /// JSON (greedy, at most --n-gen tokens), against unconstrained decoding.
    #[command(flatten)]
    constrain: ConstrainArgs,
    /// The prompt for the constraint benchmark.
    #[arg(
        long,
        default_value = "Describe a product for sale in an online shop, as JSON."
    )]
    prompt: String,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The daemon under 1, 4, 8 concurrent streams: aggregate t/s and time to first token.
    Serve(cmd_serve::BenchServeArgs),
    /// On-demand experts: cold vs loaded time to first token, adapter switch cost, 8 streams on 8 adapters vs 1 vs none, resident memory vs the governor.
    Experts(cmd_serve::BenchExpertsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Run(a) => run(a),
        Cmd::Generate(a) => generate(a),
        Cmd::Tokenize(a) => tokenize(a),
        Cmd::Perplexity(a) => perplexity(a),
        Cmd::Bench(a) => bench(a),
        Cmd::Pull { name } => {
            let path = Store::open_default()?.pull(&name, Progress::Bar)?;
            println!("{}", path.display());
            Ok(())
        }
        Cmd::List(a) => cmd_store::list(a),
        Cmd::Import(a) => cmd_store::import(a),
        Cmd::Show(a) => cmd_store::show(a),
        Cmd::Rm(a) => cmd_store::rm(a),
        Cmd::App(a) => cmd_app::run(a),
        Cmd::Embed(a) => cmd_embed::embed(a),
        Cmd::Serve(a) => cmd_serve::serve(a),
        Cmd::Ps(a) => cmd_serve::ps(a),
        Cmd::Expert(a) => cmd_expert::run(a),
        Cmd::Classify(a) => cmd_tasks::classify(a),
        Cmd::Summarize(a) => cmd_tasks::summarize(a),
        Cmd::Extract(a) => cmd_tasks::extract(a),
    }
}

/// A model ready to run, with what an expert adds to it.
struct Loaded {
    rt: Runtime,
    expert: Option<hearth_store::Expert>,
    adapter: Option<std::sync::Arc<hearth_runtime::Adapter>>,
}

fn load(m: &ModelArgs) -> Result<Loaded> {
    let threads = match m.threads {
        Some(0) => bail!("-t 0: the thread count must be at least 1"),
        Some(t) => t,
        None => hearth_engine::physical_cores(),
    };
    let store = Store::open_default()?;
    let expert = store.expert(&m.model)?;
    let name = expert
        .as_ref()
        .map_or(m.model.as_str(), |e| e.spec.base.as_str());
    let path = store.ensure(name, Progress::Bar)?;
    if path.is_dir() {
        bail!("{name} is an embedding model; use `hearth embed -m {name}`");
    }
    let rt =
        Runtime::load(&path, threads).with_context(|| format!("loading {}", path.display()))?;
    let adapter = match expert.as_ref().and_then(|e| e.adapter_path.as_ref()) {
        Some(p) => Some(
            rt.load_adapter(p)
                .with_context(|| format!("loading the adapter of expert {}", m.model))?,
        ),
        None => None,
    };
    Ok(Loaded {
        rt,
        expert,
        adapter,
    })
}

/// The sampling settings: the flags, else the expert's defaults, else ours.
fn sampler(s: &SampleArgs, expert: Option<&hearth_store::Expert>) -> SamplerConfig {
    let spec = expert.map(|e| &e.spec);
    SamplerConfig {
        temperature: s.temp.or(spec.and_then(|e| e.temperature)).unwrap_or(0.8),
        top_k: s.top_k,
        top_p: s.top_p.or(spec.and_then(|e| e.top_p)).unwrap_or(0.95),
        min_p: s.min_p,
        repeat_penalty: s.repeat_penalty,
        presence_penalty: s.presence_penalty,
        frequency_penalty: s.frequency_penalty,
        seed: s.seed,
        ..SamplerConfig::default()
    }
}

fn stream_to_stdout(piece: &str) -> ControlFlow<()> {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(piece.as_bytes())
        .and_then(|_| out.flush())
        .is_err()
    {
        // The reader went away (a closed pipe): stop generating.
        return ControlFlow::Break(());
    }
    ControlFlow::Continue(())
}

fn run(a: RunArgs) -> Result<()> {
    if a.prompt.trim().is_empty() {
        bail!("the prompt is empty");
    }
    let l = load(&a.model)?;
    let mut messages = Vec::new();
    let expert_system = l.expert.as_ref().and_then(|e| e.spec.system.clone());
    if let Some(s) = a.system.or(expert_system) {
        messages.push(Message::new("system", &s));
    }
    messages.push(Message::new("user", &a.prompt));
    let ids = l.rt.chat_prompt(&messages)?;
    let opts = GenOptions {
        max_tokens: a.max_tokens,
        sampler: sampler(&a.sample, l.expert.as_ref()),
        n_ctx: a.ctx,
        ..GenOptions::default()
    };
    l.rt.generate_with_adapter(&ids, &opts, l.adapter.clone(), stream_to_stdout)?;
    println!();
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    if a.prompt.is_empty() {
        bail!("the prompt is empty");
    }
    let l = load(&a.model)?;
    let rt = &l.rt;
    let ids = if a.raw {
        rt.tokenize(&a.prompt, true, true)?
    } else {
        let mut messages = Vec::new();
        if let Some(s) = l.expert.as_ref().and_then(|e| e.spec.system.as_ref()) {
            messages.push(Message::new("system", s));
        }
        messages.push(Message::new("user", &a.prompt));
        rt.chat_prompt(&messages)?
    };
    let opts = GenOptions {
        max_tokens: a.max_tokens,
        sampler: sampler(&a.sample, l.expert.as_ref()),
        ignore_eos: a.ignore_eos,
        top_logprobs: a.top_logprobs,
        n_ctx: a.ctx,
        constraint: a.constrain.spec()?,
    };
    if a.json {
        let out =
            rt.generate_with_adapter(
                &ids,
                &opts,
                l.adapter.clone(),
                |_| ControlFlow::Continue(()),
            )?;
        let v = serde_json::json!({
            "prompt_ids": out.prompt_ids,
            "completion_ids": out.completion_ids,
            "text": out.text,
            "steps": out.steps,
            "stop": out.stop,
        });
        println!("{v}");
    } else {
        rt.generate_with_adapter(&ids, &opts, l.adapter.clone(), stream_to_stdout)?;
        println!();
    }
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let rt = load(&a.model)?.rt;
    let ids = rt.tokenize(&a.text, a.bos, a.special)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            println!("{id}\t{:?}", rt.tokenizer.token_text(id));
        }
    }
    Ok(())
}

fn perplexity(a: PerplexityArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let l = load(&a.model)?;
    if l.adapter.is_some() {
        bail!("perplexity with an expert's adapter is not supported yet; use its base model");
    }
    let p = hearth_runtime::perplexity(&l.rt, &text, a.ctx)?;
    if a.json {
        println!("{}", serde_json::to_string(&p)?);
    } else {
        println!(
            "perplexity {:.4} over {} chunks of {}",
            p.ppl, p.chunks, a.ctx
        );
    }
    Ok(())
}

fn bench(a: BenchArgs) -> Result<()> {
    match a.cmd {
        Some(BenchCmd::Serve(s)) => return cmd_serve::bench_serve(s),
        Some(BenchCmd::Experts(e)) => return cmd_serve::bench_experts(e),
        None => {}
    }
    let l = load(&a.model)?;
    let rt = &l.rt;
    if let Some(spec) = a.constrain.spec()? {
        let ids = rt.chat_prompt(&[Message::new("user", &a.prompt)])?;
        let r = hearth_runtime::bench_constraint(rt, &ids, &spec, a.n_gen, a.reps)?;
        if a.json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            println!(
                "{} tokens: decode {:.1} t/s free, {:.1} t/s constrained; mask {:.0} us/token ({:.1} % of decode); vocab {:.0} ms, compile {:.1} ms, {} threads",
                r.tokens, r.free_tps, r.constrained_tps, r.mask_us_per_token,
                r.mask_share * 100.0, r.vocab_ms, r.compile_ms, r.threads
            );
        }
        return Ok(());
    }
    let r =
        hearth_runtime::bench_with_adapter(rt, l.adapter.as_deref(), a.n_prompt, a.n_gen, a.reps)?;
    let mut v = serde_json::to_value(&r)?;
    if a.contended {
        let c = hearth_runtime::bench_contended(rt, a.n_gen, a.reps)?;
        v["contended_tg_tps"] = c.into();
        v["contended_ratio"] = (c / r.tg_tps.max(1e-9)).into();
    }
    if a.json {
        println!("{v}");
    } else {
        println!(
            "pp{} {:.1} t/s, tg{} {:.1} t/s, load {:.0} ms, {} threads",
            a.n_prompt, r.pp_tps, a.n_gen, r.tg_tps, r.load_ms, r.threads
        );
        if let Some(c) = v.get("contended_tg_tps") {
            println!("tg{} with one busy core: {c:.1} t/s", a.n_gen);
        }
    }
    Ok(())
}
