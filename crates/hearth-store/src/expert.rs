//! Experts: a base model plus an optional LoRA adapter, a system prompt,
//! default sampling settings and a description of the task, stored under a
//! name like any model.
//!
//! An expert is a manifest of kind `expert` in `manifests/`, so it shares the
//! models' name space (a request's `model` may name either), their locks and
//! their removal: the adapter's files are ordinary blobs listed in the
//! manifest's `files` and laid out under `models/<name>/` (`adapter.gguf`,
//! or `peft/adapter_config.json` and `peft/adapter_model.safetensors`), so
//! `rm` frees them when no other manifest uses them and two experts over
//! the same adapter store it once.
//!
//! This module must not read the adapter's contents: whether an adapter
//! fits its base is the engine's question, asked by the caller before
//! [`Store::create_expert`].

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsutil::{self, Mode};
use crate::manifest::{
    files_digest, now_rfc3339, valid_name, Manifest, ManifestFile, MANIFEST_SCHEMA_FILES,
};
use crate::progress::Progress;
use crate::registry;
use crate::store::Store;

/// The manifest kind of an expert.
pub const EXPERT_KIND: &str = "expert";

/// The formats a LoRA adapter can come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdapterFormat {
    /// llama.cpp's GGUF adapter file.
    Gguf,
    /// PEFT's directory: `adapter_config.json` + `adapter_model.safetensors`.
    Peft,
}

impl AdapterFormat {
    /// The files of each format, as (source name, path inside the expert's
    /// directory). The first one is what loaders open.
    fn layout(self) -> &'static [(&'static str, &'static str)] {
        match self {
            AdapterFormat::Gguf => &[("", "adapter.gguf")],
            AdapterFormat::Peft => &[
                ("adapter_config.json", "peft/adapter_config.json"),
                (
                    "adapter_model.safetensors",
                    "peft/adapter_model.safetensors",
                ),
            ],
        }
    }

    /// Where the loader finds the adapter inside the expert's directory.
    fn entry(self) -> &'static str {
        match self {
            AdapterFormat::Gguf => "adapter.gguf",
            AdapterFormat::Peft => "peft",
        }
    }
}

/// What an expert is made of (the `expert` field of its manifest).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ExpertSpec {
    /// The stored model it runs on.
    pub base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<AdapterFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The task, in words: what the router reads.
    #[serde(default)]
    pub description: String,
    /// Requests this expert should serve, for the router.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
}

/// A stored expert, with where its adapter is.
#[derive(Clone, Debug, Serialize)]
pub struct Expert {
    pub name: String,
    pub spec: ExpertSpec,
    /// The adapter file (GGUF) or directory (PEFT), when there is one.
    pub adapter_path: Option<PathBuf>,
    pub adapter_bytes: u64,
    pub created: String,
}

impl Expert {
    fn from_manifest(m: Manifest, dir: &Path) -> Option<Expert> {
        let spec = m.expert.filter(|_| m.kind == EXPERT_KIND)?;
        Some(Expert {
            adapter_path: spec.adapter.map(|f| dir.join(f.entry())),
            adapter_bytes: m.size,
            name: m.name,
            created: m.created,
            spec,
        })
    }
}

impl Store {
    /// Stores expert `name`. `adapter` is the GGUF file or PEFT directory
    /// named by `spec.adapter`'s format, already checked against the base
    /// by the caller; its files become blobs (hard-linked when possible).
    ///
    /// Errors: an invalid or default-model name, a name already taken (by a
    /// model or an expert), a base that is not a stored model, an adapter
    /// path that does not hold the files of its format, and I/O errors. On
    /// any error nothing new is left in the store.
    pub fn create_expert(
        &self,
        name: &str,
        spec: ExpertSpec,
        adapter: Option<&Path>,
        progress: Progress,
    ) -> Result<Expert> {
        if !valid_name(name) {
            return Err(Error::InvalidName {
                what: "expert",
                name: name.to_string(),
            });
        }
        if registry::find(name).is_some() {
            return Err(Error::ReservedName {
                name: name.to_string(),
            });
        }
        match self.read_manifest(&spec.base) {
            Ok(Some(m)) if m.kind != EXPERT_KIND => {}
            Ok(Some(_)) => {
                return Err(Error::BadExpert {
                    name: name.to_string(),
                    why: format!("its base `{}` is itself an expert", spec.base),
                })
            }
            _ => {
                return Err(Error::BadExpert {
                    name: name.to_string(),
                    why: format!(
                        "its base `{}` is not a stored model (see `hearth list`)",
                        spec.base
                    ),
                })
            }
        }
        let sources = match (spec.adapter, adapter) {
            (None, None) => Vec::new(),
            (Some(format), Some(path)) => adapter_sources(name, format, path)?,
            _ => {
                return Err(Error::BadExpert {
                    name: name.to_string(),
                    why: "an adapter format needs an adapter path and the other way round".into(),
                })
            }
        };
        let lock = self.name_lock(name, progress)?;
        let blobs = self.blobs_lock(Mode::Shared, progress)?;
        fsutil::sweep_tmp(&self.home);
        if fs::symlink_metadata(self.home.manifest_path(name)).is_ok() {
            return Err(Error::ModelExists {
                name: name.to_string(),
            });
        }
        let mut files = Vec::new();
        for (i, (src, rel)) in sources.iter().enumerate() {
            let before = fs::metadata(src).map_err(|e| Error::io("reading", src, e))?;
            let (hashed, _) =
                self.store_file(src, &before, &format!("{name}.expert.{i}"), false, progress)?;
            files.push(ManifestFile {
                path: rel.to_string(),
                digest: format!("sha256:{}", hashed.sha256_hex),
                size: hashed.size,
            });
        }
        let digest = files_digest(files.iter().map(|f| {
            (
                f.path.as_str(),
                f.digest.trim_start_matches("sha256:"),
                f.size,
            )
        }));
        let source = adapter
            .map(|p| fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf()))
            .map_or_else(String::new, |p| format!("file:{}", p.display()));
        let manifest = Manifest {
            schema: MANIFEST_SCHEMA_FILES,
            name: name.to_string(),
            kind: EXPERT_KIND.to_string(),
            digest: format!("sha256:{digest}"),
            size: files.iter().map(|f| f.size).sum(),
            source,
            file_name: String::new(),
            created: now_rfc3339(),
            files: Some(files),
            expert: Some(spec),
        };
        let old_dir = self.home.model_dir(name);
        fsutil::remove_any(&old_dir).map_err(|e| Error::io("removing", &old_dir, e))?;
        self.write_manifest(&manifest)?;
        drop(blobs);
        drop(lock);
        // Lay the adapter's files out now rather than on first use.
        let dir = self.resolve(name)?;
        Expert::from_manifest(manifest, &dir).ok_or_else(|| Error::NotAnExpert {
            name: name.to_string(),
        })
    }

    /// Expert `name`, or `None` when no expert has that name (a model may).
    pub fn expert(&self, name: &str) -> Result<Option<Expert>> {
        if !valid_name(name) {
            return Ok(None);
        }
        let Some(m) = self.read_manifest(name)? else {
            return Ok(None);
        };
        if m.kind != EXPERT_KIND {
            return Ok(None);
        }
        let dir = self.resolve(name)?;
        Ok(Expert::from_manifest(m, &dir))
    }

    /// Every stored expert, sorted by name.
    pub fn experts(&self) -> Result<Vec<Expert>> {
        let mut out = Vec::new();
        for m in self.list()? {
            if m.kind == EXPERT_KIND {
                if let Some(e) = self.expert(&m.name)? {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }
}

/// The files to store for an adapter of `format` at `path`, each with its
/// place in the expert's directory.
fn adapter_sources(
    name: &str,
    format: AdapterFormat,
    path: &Path,
) -> Result<Vec<(PathBuf, &'static str)>> {
    let missing = |what: String| Error::BadExpert {
        name: name.to_string(),
        why: what,
    };
    let mut out = Vec::new();
    for (src, rel) in format.layout() {
        let file = if src.is_empty() {
            path.to_path_buf()
        } else {
            path.join(src)
        };
        if !file.is_file() {
            return Err(missing(format!(
                "the adapter {} has no file {}",
                path.display(),
                file.display()
            )));
        }
        out.push((file, *rel));
    }
    Ok(out)
}
