//! `hearth import`, `list`, `show` and `rm`: the model store verbs.
//!
//! Argument structs and printing only; the work is in `hearth_store`. This
//! file checks one thing the store must not: that an imported file is a GGUF.
//! It must not touch the state database (that is `cmd_app`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use hearth_store::{ImportMethod, ImportOptions, Progress, Store};

/// `println!` that treats a closed stdout (`hearth list | head`) as the
/// reader being done rather than panicking.
macro_rules! out {
    ($($t:tt)*) => {
        crate::cmd_store::out(format_args!($($t)*))
    };
}

#[derive(Args)]
pub struct ImportArgs {
    /// The GGUF file to store.
    pub file: PathBuf,
    /// The name to store it as (letters, digits, `.`, `_`, `-`).
    #[arg(long)]
    pub name: String,
    /// Replace an existing model of that name (default models' names are
    /// never replaced).
    #[arg(long)]
    pub force: bool,
    /// Copy the file even where a hard link is possible. A linked blob shares
    /// the file's data: editing FILE in place afterwards changes the model.
    #[arg(long)]
    pub copy: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct NameArgs {
    /// Model name.
    pub name: String,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct ListArgs {
    /// Print a JSON array of manifests.
    #[arg(long)]
    pub json: bool,
}

pub fn import(a: ImportArgs) -> Result<()> {
    if !a.file.is_file() {
        bail!(
            "{} does not exist or is not a regular file",
            a.file.display()
        );
    }
    // Parsing the header and tensor table catches a wrong or truncated file
    // before it gets a name; the tensor data itself is not read.
    hearth_gguf::GgufFile::open(&a.file)
        .with_context(|| format!("{} is not a usable GGUF file", a.file.display()))?;
    let opts = ImportOptions {
        force: a.force,
        copy: a.copy,
        progress: Progress::Bar,
    };
    let done = Store::open_default()?.import(&a.file, &a.name, &opts)?;
    if a.json {
        out!("{}", serde_json::to_string(&done)?);
    } else {
        let how = match done.method {
            ImportMethod::Linked => "hard-linked",
            ImportMethod::Copied => "copied",
            ImportMethod::Deduplicated => "already stored; added a name",
        };
        out!(
            "imported {} ({}, {}): {}",
            done.manifest.name,
            human_size(done.manifest.size),
            how,
            done.manifest.digest
        );
    }
    Ok(())
}

pub fn list(a: ListArgs) -> Result<()> {
    let models = Store::open_default()?.list()?;
    if a.json {
        out!("{}", serde_json::to_string(&models)?);
        return Ok(());
    }
    let width = models
        .iter()
        .map(|m| m.name.len())
        .max()
        .unwrap_or(0)
        .max("NAME".len());
    out!(
        "{:<width$}  {:>9}  {:<12}  CREATED",
        "NAME",
        "SIZE",
        "DIGEST"
    );
    for m in models {
        let hex = m.digest.strip_prefix("sha256:").unwrap_or(&m.digest);
        let prefix: String = hex.chars().take(12).collect();
        out!(
            "{:<width$}  {:>9}  {:<12}  {}",
            m.name,
            human_size(m.size),
            prefix,
            m.created
        );
    }
    Ok(())
}

pub fn show(a: NameArgs) -> Result<()> {
    let info = Store::open_default()?.show(&a.name)?;
    if a.json {
        out!("{}", serde_json::to_string(&info)?);
        return Ok(());
    }
    let m = &info.manifest;
    out!("name:     {}", m.name);
    out!("kind:     {}", m.kind);
    out!("size:     {} ({} bytes)", human_size(m.size), m.size);
    out!("digest:   {}", m.digest);
    out!("source:   {}", m.source);
    out!("file:     {}", m.file_name);
    out!("created:  {}", m.created);
    out!("path:     {}", info.path.display());
    out!(
        "status:   {}",
        if info.present {
            "ok"
        } else {
            "data missing or damaged"
        }
    );
    if let Some(files) = &m.files {
        out!("files:");
        for f in files {
            out!("  {:<36} {:>9}  {}", f.path, human_size(f.size), f.digest);
        }
    }
    Ok(())
}

pub fn rm(a: NameArgs) -> Result<()> {
    let removed = Store::open_default()?.remove(&a.name)?;
    if a.json {
        out!("{}", serde_json::to_string(&removed)?);
        return Ok(());
    }
    match (removed.freed.len(), removed.kept.len()) {
        (0, 0) => out!("removed {}", removed.name),
        (_, 0) => out!(
            "removed {} (freed {})",
            removed.name,
            human_size(removed.freed_bytes)
        ),
        (_, k) => out!(
            "removed {} (freed {}; {k} blob(s) kept, still used by other models)",
            removed.name,
            human_size(removed.freed_bytes)
        ),
    }
    Ok(())
}

/// Writes one line to stdout. A reader that went away (a closed pipe) ends
/// the process quietly with success, as `head` expects; any other write
/// failure is reported.
pub fn out(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{args}").and_then(|_| o.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// Sizes for humans, decimal units as disk tools print them.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
