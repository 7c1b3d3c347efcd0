//! `hearth classify`, `hearth summarize`, `hearth extract`: the typed tasks
//! in-process (arguments and printing; the prompts and rules are
//! `hearth_runtime::tasks`', the same the daemon's `/v1/tasks/*` use).

use std::ops::ControlFlow;

use anyhow::{bail, Result};
use clap::Args;
use hearth_runtime::tasks::{self, WordLimit};
use hearth_runtime::GenOptions;

use crate::ModelArgs;

#[derive(Args)]
pub struct ClassifyArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The labels, separated by commas.
    #[arg(long = "labels", required = true, value_delimiter = ',')]
    labels: Vec<String>,
    /// Print `{"label":…,"labels":[{"label","probability","logprob","tokens"}]}`.
    #[arg(long)]
    json: bool,
    text: String,
}

#[derive(Args)]
pub struct SummarizeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// The most words the summary may have; generation stops past them.
    #[arg(long = "max-words")]
    max_words: usize,
    /// Print `{"summary":…,"words":…,"finish_reason":…}`.
    #[arg(long)]
    json: bool,
    text: String,
}

pub fn classify(a: ClassifyArgs) -> Result<()> {
    let labels: Vec<String> = a.labels.iter().map(|l| l.trim().to_string()).collect();
    if let Err(e) = tasks::check_labels(&labels) {
        bail!("--labels: {e}");
    }
    if a.text.trim().is_empty() {
        bail!("the text is empty");
    }
    let l = crate::load(&a.model)?;
    let c = l.rt.classify(&labels, &a.text, l.adapter.clone(), None)?;
    if a.json {
        println!("{}", serde_json::to_string(&c)?);
    } else {
        for s in &c.labels {
            println!("{:.4}  {}", s.probability, s.label);
        }
        println!("{}", c.label);
    }
    Ok(())
}

pub fn summarize(a: SummarizeArgs) -> Result<()> {
    if a.max_words == 0 {
        bail!("--max-words must be at least 1");
    }
    if a.text.trim().is_empty() {
        bail!("the text is empty");
    }
    let l = crate::load(&a.model)?;
    let ids =
        l.rt.chat_prompt(&tasks::summarize_messages(&a.text, a.max_words))?;
    let opts = GenOptions {
        max_tokens: tasks::summary_max_tokens(a.max_words),
        sampler: tasks::task_sampler(),
        ..GenOptions::default()
    };
    let mut limit = WordLimit::new(a.max_words);
    let out =
        l.rt.generate_with_adapter(&ids, &opts, l.adapter.clone(), |piece| {
            if limit.push(piece) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })?;
    let summary = limit.text();
    let reason = if limit.exceeded() {
        "max_words"
    } else {
        out.stop.finish_reason()
    };
    if a.json {
        let v = serde_json::json!({
            "summary": summary,
            "words": summary.split_whitespace().count(),
            "max_words": a.max_words,
            "finish_reason": reason,
        });
        println!("{v}");
    } else {
        println!("{summary}");
    }
    Ok(())
}

#[derive(Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// A file holding the JSON schema the output must follow.
    #[arg(long = "schema")]
    schema: std::path::PathBuf,
    /// Most tokens of output.
    #[arg(short = 'n', long = "max-tokens", default_value_t = tasks::EXTRACT_MAX_TOKENS)]
    max_tokens: usize,
    /// Print `{"data":…,"finish_reason":…}` instead of the object alone.
    #[arg(long)]
    json: bool,
    text: String,
}

pub fn extract(a: ExtractArgs) -> Result<()> {
    use anyhow::Context;
    if a.text.trim().is_empty() {
        bail!("the text is empty");
    }
    let raw = std::fs::read_to_string(&a.schema)
        .with_context(|| format!("reading the schema {}", a.schema.display()))?;
    let schema: serde_json::Value = serde_json::from_str(&raw)
        .with_context(|| format!("the schema {} is not JSON", a.schema.display()))?;
    let l = crate::load(&a.model)?;
    let ids =
        l.rt.chat_prompt(&tasks::extract_messages(&schema, &a.text))?;
    let opts = GenOptions {
        max_tokens: a.max_tokens,
        sampler: tasks::task_sampler(),
        constraint: Some(hearth_runtime::ConstraintSpec::JsonSchema(schema)),
        ..GenOptions::default()
    };
    let out =
        l.rt.generate_with_adapter(
            &ids,
            &opts,
            l.adapter.clone(),
            |_| ControlFlow::Continue(()),
        )?;
    let data: serde_json::Value = serde_json::from_str(out.text.trim()).with_context(|| {
        format!(
            "the output ended ({}) before the object was complete; raise --max-tokens",
            out.stop.finish_reason()
        )
    })?;
    if a.json {
        let v = serde_json::json!({"data": data, "finish_reason": out.stop.finish_reason()});
        println!("{v}");
    } else {
        println!("{data}");
    }
    Ok(())
}
