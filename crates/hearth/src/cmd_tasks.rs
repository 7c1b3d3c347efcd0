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
