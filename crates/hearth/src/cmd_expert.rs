//! `hearth expert create|list|show|rm`: arguments and printing. Experts are
//! stored by `hearth_store`; whether an adapter fits its base is checked
//! here, through the engine's adapter loader, before anything is stored.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use hearth_store::{AdapterFormat, Expert, ExpertSpec, Progress, Store};

use crate::cmd_store::human_size;

macro_rules! out {
    ($($t:tt)*) => {
        crate::cmd_store::out(format_args!($($t)*))
    };
}

#[derive(Args)]
pub struct ExpertArgs {
    #[command(subcommand)]
    pub cmd: ExpertCmd,
}

#[derive(Subcommand)]
pub enum ExpertCmd {
    /// Make an expert: a base model plus an optional LoRA adapter, prompt and defaults.
    Create(CreateArgs),
    /// List the experts.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One expert's settings.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an expert (its adapter's data too, unless another expert shares it).
    Rm {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct CreateArgs {
    pub name: String,
    /// The stored model it runs on.
    #[arg(long)]
    pub base: String,
    /// A LoRA adapter: a llama.cpp GGUF adapter file or a PEFT directory.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The system prompt its conversations start with.
    #[arg(long)]
    pub system: Option<String>,
    #[arg(long)]
    pub temperature: Option<f32>,
    #[arg(long = "top-p")]
    pub top_p: Option<f32>,
    #[arg(long = "max-tokens")]
    pub max_tokens: Option<u32>,
    /// What the expert does, in words (the router reads it).
    #[arg(long, default_value = "")]
    pub description: String,
    /// A file of example requests, one per line, for the router.
    #[arg(long)]
    pub examples: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: ExpertArgs) -> Result<()> {
    let store = Store::open_default()?;
    match a.cmd {
        ExpertCmd::Create(c) => create(&store, c),
        ExpertCmd::List { json } => list(&store, json),
        ExpertCmd::Show { name, json } => show(&store, &name, json),
        ExpertCmd::Rm { name, json } => rm(&store, &name, json),
    }
}

fn create(store: &Store, a: CreateArgs) -> Result<()> {
    if let Some(t) = a.temperature {
        if !(0.0..=2.0).contains(&t) {
            bail!("--temperature must be between 0 and 2");
        }
    }
    if let Some(p) = a.top_p {
        if !(0.0..=1.0).contains(&p) {
            bail!("--top-p must be between 0 and 1");
        }
    }
    let base_path = store.ensure(&a.base, Progress::Bar)?;
    let format = match &a.adapter {
        None => None,
        Some(p) => Some(check_adapter(&base_path, p)?),
    };
    let examples = match &a.examples {
        None => Vec::new(),
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    };
    let spec = ExpertSpec {
        base: a.base,
        adapter: format,
        system: a.system,
        temperature: a.temperature,
        top_p: a.top_p,
        max_tokens: a.max_tokens,
        description: a.description,
        examples,
    };
    let e = store.create_expert(&a.name, spec, a.adapter.as_deref(), Progress::Bar)?;
    if a.json {
        out!("{}", serde_json::to_string(&e)?);
    } else {
        out!("created expert {} on {}", e.name, e.spec.base);
    }
    Ok(())
}

/// The adapter's format, once the engine has loaded it against the base:
/// an adapter that does not fit is refused now, never at request time.
fn check_adapter(base: &Path, adapter: &Path) -> Result<AdapterFormat> {
    let format = if adapter.is_dir() {
        AdapterFormat::Peft
    } else if adapter.is_file() {
        AdapterFormat::Gguf
    } else {
        bail!("adapter {} does not exist", adapter.display());
    };
    let rt = hearth_runtime::Runtime::load(base, 1)
        .with_context(|| format!("loading the base {}", base.display()))?;
    rt.load_adapter(adapter)
        .context("the adapter does not fit its base")?;
    Ok(format)
}

fn list(store: &Store, json: bool) -> Result<()> {
    let experts = store.experts()?;
    if json {
        out!("{}", serde_json::to_string(&experts)?);
        return Ok(());
    }
    out!(
        "{:<20} {:<14} {:>9}  DESCRIPTION",
        "NAME",
        "BASE",
        "ADAPTER"
    );
    for e in experts {
        let adapter = if e.spec.adapter.is_some() {
            human_size(e.adapter_bytes)
        } else {
            "-".into()
        };
        out!(
            "{:<20} {:<14} {:>9}  {}",
            e.name,
            e.spec.base,
            adapter,
            e.spec.description
        );
    }
    Ok(())
}

fn find(store: &Store, name: &str) -> Result<Expert> {
    match store.expert(name)? {
        Some(e) => Ok(e),
        None => bail!("no expert `{name}` (see `hearth expert list`)"),
    }
}

fn show(store: &Store, name: &str, json: bool) -> Result<()> {
    let e = find(store, name)?;
    if json {
        out!("{}", serde_json::to_string(&e)?);
        return Ok(());
    }
    out!("name:        {}", e.name);
    out!("base:        {}", e.spec.base);
    match &e.adapter_path {
        Some(p) => out!(
            "adapter:     {} ({})",
            p.display(),
            human_size(e.adapter_bytes)
        ),
        None => out!("adapter:     none"),
    }
    if let Some(s) = &e.spec.system {
        out!("system:      {s}");
    }
    if let Some(t) = e.spec.temperature {
        out!("temperature: {t}");
    }
    if let Some(p) = e.spec.top_p {
        out!("top_p:       {p}");
    }
    if let Some(m) = e.spec.max_tokens {
        out!("max_tokens:  {m}");
    }
    out!("description: {}", e.spec.description);
    out!("examples:    {}", e.spec.examples.len());
    out!("created:     {}", e.created);
    Ok(())
}

fn rm(store: &Store, name: &str, json: bool) -> Result<()> {
    find(store, name)?;
    let removed = store.remove(name)?;
    if json {
        out!("{}", serde_json::to_string(&removed)?);
    } else {
        out!("removed expert {}", removed.name);
    }
    Ok(())
}
