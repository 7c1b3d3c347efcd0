//! `hearth embed`: sentence embeddings from the command line (arguments and
//! printing; the model is `hearth-runtime`'s `Embedder`).

use anyhow::{bail, Context, Result};
use clap::Args;
use hearth_runtime::Embedder;
use hearth_store::{Progress, Store};

#[derive(Args)]
pub struct EmbedArgs {
    /// An embedding model name (minilm) or a model directory.
    #[arg(short = 'm', long = "model", default_value = "minilm")]
    model: String,
    /// Threads (default: the number of physical cores).
    #[arg(short = 't', long = "threads")]
    threads: Option<usize>,
    /// Print `{"model":…,"embeddings":[[…]],"tokens":[…]}`.
    #[arg(long)]
    json: bool,
    /// The texts to embed.
    #[arg(required = true)]
    texts: Vec<String>,
}

pub fn embed(a: EmbedArgs) -> Result<()> {
    let threads = match a.threads {
        Some(0) => bail!("-t 0: the thread count must be at least 1"),
        Some(t) => t,
        None => hearth_engine::physical_cores(),
    };
    if let Some(i) = a.texts.iter().position(String::is_empty) {
        bail!("text {} is empty", i + 1);
    }
    let dir = Store::open_default()?.ensure(&a.model, Progress::Bar)?;
    if !dir.is_dir() {
        bail!(
            "{} is a generative model, not an embedding model (try -m minilm)",
            a.model
        );
    }
    let emb = Embedder::load(&dir, threads)
        .with_context(|| format!("loading {}", dir.display()))?
        .with_name(&a.model);
    let refs: Vec<&str> = a.texts.iter().map(String::as_str).collect();
    let out = emb.embed(&refs)?;
    if a.json {
        let v =
            serde_json::json!({"model": a.model, "embeddings": out.vectors, "tokens": out.tokens});
        println!("{v}");
    } else {
        for (t, v) in a.texts.iter().zip(&out.vectors) {
            let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
            println!("{} dims [{} …]  {t}", v.len(), head.join(", "));
        }
    }
    Ok(())
}
