//! LoRA adapters: loading them (llama.cpp's GGUF adapters and PEFT's
//! `adapter_config.json` + `adapter_model.safetensors`), checking them
//! against the base model they are meant for, and the low-rank products the
//! batched forward pass adds to the base matmuls unmerged.
//!
//! An adapter holds, per layer and per adapted matrix (Q, K, V, attention
//! output, gate, up, down), the pair `A` (`r` rows of `n_in`) and `B`
//! (`n_out` rows of `r`), both as f32, and the scale `s`; the forward pass
//! computes `y = x·W + s·(x·Aᵀ)·Bᵀ`, each product in the order llama.cpp's
//! F32 matmul takes for the token's batch (so adapted logits equal the
//! reference's as the base model's do). Keeping the adapter apart from the base
//! (instead of merging it into the weights) is what lets one forward pass
//! serve sequences with different adapters over one mapped base.
//!
//! Everything an adapter says is checked when it is loaded, against the base
//! model's [`Hyper`]: architecture, layer indices, each matrix's `n_in` and
//! `n_out`, the rank of each pair, the element types and every tensor name.
//! A wrong adapter is an error naming the field or tensor, never garbage.
//!
//! PEFT names Hugging Face modules (`model.layers.{i}.self_attn.q_proj`), in
//! Hugging Face's row order. GGUF's Llama stores Q and K with each head's
//! rows interleaved for adjacent-pair RoPE (the converter permutes them), so
//! the `B` matrices of `q_proj` and `k_proj`, whose rows are Q's and K's
//! output rows, get the same permutation here. A is left alone: its rows are
//! the rank dimension, not outputs.
//!
//! This module reads files only through `hearth-gguf` and
//! `hearth-safetensors`; the PEFT config arrives as text from the caller.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};

use hearth_gguf::{GgmlType, GgufFile};
use hearth_kernels as k;
use hearth_safetensors::{Dtype, SafeTensors};
use serde_json::Value as Json;
use thiserror::Error;

use crate::transformer::Hyper;

thread_local! {
    /// [`LoraMatrix::up`]'s eight lanes for a run of outputs.
    static LANES: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Errors of loading or applying an adapter: each names the field or tensor
/// at fault.
#[derive(Debug, Error)]
pub enum LoraError {
    #[error("adapter file: {0}")]
    Gguf(#[from] hearth_gguf::GgufError),
    #[error("adapter file: {0}")]
    Safetensors(#[from] hearth_safetensors::SafetensorsError),
    #[error("adapter_config.json: {0}")]
    Config(String),
    #[error("adapter field {field}: {why}")]
    Field { field: String, why: String },
    #[error("the adapter is for architecture {adapter:?}, but the base model is {base:?}")]
    Architecture { adapter: String, base: String },
    #[error("adapter tensor {name:?}: {why}")]
    Tensor { name: String, why: String },
    #[error(
        "adapter tensor {name:?} is for layer {layer}, but the base model has {n_layer} layers"
    )]
    Layer {
        name: String,
        layer: usize,
        n_layer: usize,
    },
    #[error("adapter tensor {name:?} has {found} (rows × columns), but the base matrix it adapts needs {expected}")]
    Shape {
        name: String,
        found: String,
        expected: String,
    },
    #[error("adapter tensor {name:?} has rank {found}, but {other:?} has rank {expected}")]
    Rank {
        name: String,
        found: usize,
        other: String,
        expected: usize,
    },
    #[error("adapter tensor {present:?} has no partner {missing:?}")]
    Missing { present: String, missing: String },
    #[error("the adapter has no LoRA tensors")]
    Empty,
    #[error("the adapter was checked against another base model ({0})")]
    WrongBase(String),
}

/// The matrices of a layer an adapter can adapt, in the order of their slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::Q,
        Role::K,
        Role::V,
        Role::O,
        Role::Gate,
        Role::Up,
        Role::Down,
    ];

    fn slot(self) -> usize {
        self as usize
    }

    /// The base tensor's name in GGUF (`blk.{i}.{this}.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Role::Q => "attn_q",
            Role::K => "attn_k",
            Role::V => "attn_v",
            Role::O => "attn_output",
            Role::Gate => "ffn_gate",
            Role::Up => "ffn_up",
            Role::Down => "ffn_down",
        }
    }

    /// The Hugging Face module under `model.layers.{i}.`.
    pub fn hf_name(self) -> &'static str {
        match self {
            Role::Q => "self_attn.q_proj",
            Role::K => "self_attn.k_proj",
            Role::V => "self_attn.v_proj",
            Role::O => "self_attn.o_proj",
            Role::Gate => "mlp.gate_proj",
            Role::Up => "mlp.up_proj",
            Role::Down => "mlp.down_proj",
        }
    }

    /// `(n_in, n_out)` of the base matrix in a model of shape `hp`.
    pub fn dims(self, hp: &Hyper) -> (usize, usize) {
        let q_dim = hp.n_head * hp.head_dim_k;
        let k_dim = hp.n_head_kv * hp.head_dim_k;
        let v_dim = hp.n_head_kv * hp.head_dim_v;
        let o_dim = hp.n_head * hp.head_dim_v;
        match self {
            Role::Q => (hp.n_embd, q_dim),
            Role::K => (hp.n_embd, k_dim),
            Role::V => (hp.n_embd, v_dim),
            Role::O => (o_dim, hp.n_embd),
            Role::Gate | Role::Up => (hp.n_embd, hp.n_ff),
            Role::Down => (hp.n_ff, hp.n_embd),
        }
    }
}

/// One adapted matrix: `A` (`rank` rows of `n_in`), kept as little-endian
/// f32 rows so the kernels' F32 GEMM reads them directly (long dot
/// products), and `B` kept transposed (`rank` rows of `n_out`): its dot
/// products are only `rank` long, too short for a GEMM, so the second
/// product runs as `rank` row updates over contiguous outputs instead.
pub struct LoraMatrix {
    pub rank: usize,
    pub n_in: usize,
    pub n_out: usize,
    pub scale: f32,
    /// `A`, row-major (`rank × n_in`).
    a: Vec<f32>,
    /// `B` transposed (`rank × n_out`), so that one rank index's weights for
    /// a run of outputs are contiguous.
    bt: Vec<f32>,
}

impl LoraMatrix {
    /// `t[j] = A[j] · x` for one token's row `x` (`n_in` values), in the
    /// order llama.cpp's F32 matmul takes for the token's batch: tinyBLAS
    /// for a batch of two rows or more (`batched`), ggml's dot product for
    /// one row (and when `n_in` is not a multiple of 8, which tinyBLAS
    /// refuses).
    pub(crate) fn down(&self, x: &[f32], batched: bool, t: &mut [f32]) {
        let n = self.n_in;
        let tiny = batched && n.is_multiple_of(8);
        for (j, t) in t[..self.rank].iter_mut().enumerate() {
            let a = &self.a[j * n..(j + 1) * n];
            *t = if tiny {
                k::dot_f32_tiny(a, x)
            } else {
                k::dot_f32_ggml(a, x)
            };
        }
    }

    /// `u[o - rows.start] = B[o] · t` for `o` in `rows`, one token's row `t`
    /// of `rank` values, in the order llama.cpp's F32 matmul takes for the
    /// token's batch (see [`Self::down`]). Both orders are computed across
    /// outputs, so the result does not depend on `rows`.
    pub(crate) fn up(&self, rows: Range<usize>, t: &[f32], batched: bool, u: &mut [f32]) {
        let r = self.rank;
        let col = |j: usize| &self.bt[j * self.n_out + rows.start..j * self.n_out + rows.end];
        if batched && r.is_multiple_of(8) {
            // tinyBLAS: eight lanes, lane `l` a fused chain over ranks
            // `l, l + 8, ...` from zero (its first step is the product),
            // folded as `hsum`: ((0+4) + (2+6)) + ((1+5) + (3+7)).
            LANES.with(|cell| {
                let mut lanes = cell.borrow_mut();
                let n = rows.len();
                lanes.resize(8 * n, 0.0);
                for (l, lane) in lanes.chunks_exact_mut(n).enumerate() {
                    for (y, &b) in lane.iter_mut().zip(col(l)) {
                        *y = b * t[l];
                    }
                    for j in (l + 8..r).step_by(8) {
                        for (y, &b) in lane.iter_mut().zip(col(j)) {
                            *y = b.mul_add(t[j], *y);
                        }
                    }
                }
                let lane = |l: usize| &lanes[l * n..(l + 1) * n];
                for (o, y) in u.iter_mut().enumerate() {
                    let h = |l: usize| lane(l)[o] + lane(l + 4)[o];
                    *y = (h(0) + h(2)) + (h(1) + h(3));
                }
            });
        } else {
            // ggml's dot product on fewer than 32 elements: rounded
            // products added in order (`dot_f32_ggml`'s tail), eight and
            // four at a time, the last one to three fused. (A rank of 32 or
            // more would start with ggml's four banks, which this does not
            // follow; every adapter here has rank 8.)
            let products = k::dot_f32_ggml_tail_products(r);
            u.fill(0.0);
            for (j, &tj) in t[..r].iter().enumerate() {
                for (y, &b) in u.iter_mut().zip(col(j)) {
                    *y = if j < products {
                        *y + tj * b
                    } else {
                        tj.mul_add(b, *y)
                    };
                }
            }
        }
    }

    /// `A` as f32 values, row-major (`rank × n_in`).
    pub fn a(&self) -> Vec<f32> {
        self.a.clone()
    }

    /// `B` as f32 values, row-major (`n_out × rank`), in GGUF's row order.
    pub fn b(&self) -> Vec<f32> {
        let mut b = vec![0f32; self.n_out * self.rank];
        for j in 0..self.rank {
            for o in 0..self.n_out {
                b[o * self.rank + j] = self.bt[j * self.n_out + o];
            }
        }
        b
    }
}

/// Where an adapter came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterFormat {
    Gguf,
    Peft,
}

/// The shape of the base an adapter was checked against, so the forward
/// pass can refuse an adapter meant for another model.
#[derive(Clone, Debug, PartialEq, Eq)]
struct BaseShape {
    arch: String,
    n_layer: usize,
    dims: [(usize, usize); 7],
}

impl BaseShape {
    fn of(hp: &Hyper) -> BaseShape {
        BaseShape {
            arch: hp.arch.clone(),
            n_layer: hp.n_layer,
            dims: Role::ALL.map(|r| r.dims(hp)),
        }
    }
}

/// A loaded, validated LoRA adapter.
pub struct Adapter {
    id: u64,
    format: AdapterFormat,
    base: BaseShape,
    layers: Vec<[Option<LoraMatrix>; 7]>,
    bytes: usize,
}

impl fmt::Debug for Adapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapter")
            .field("id", &self.id)
            .field("format", &self.format)
            .field("arch", &self.base.arch)
            .field("matrices", &self.n_matrices())
            .field("bytes", &self.bytes)
            .finish()
    }
}

/// Ids tell loaded adapters apart (the prefix cache keys on them); a
/// counter, not an address, so a freed adapter's id is never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One tensor of a pair, as read: `rows × cols` f32 values.
struct Raw {
    name: String,
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

#[derive(Default)]
struct Pair {
    a: Option<Raw>,
    b: Option<Raw>,
}

impl Adapter {
    /// A process-unique id: two loads of the same file get different ids.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn format(&self) -> AdapterFormat {
        self.format
    }

    /// Bytes the adapter's matrices occupy in memory.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The architecture it was checked against.
    pub fn arch(&self) -> &str {
        &self.base.arch
    }

    /// How many base matrices it adapts.
    pub fn n_matrices(&self) -> usize {
        self.layers.iter().flatten().filter(|m| m.is_some()).count()
    }

    /// The adapted matrix `role` of layer `layer`, if the adapter has one.
    pub fn matrix(&self, layer: usize, role: Role) -> Option<&LoraMatrix> {
        self.layers.get(layer)?[role.slot()].as_ref()
    }

    /// Whether it was checked against a base of shape `hp`.
    pub(crate) fn check_base(&self, hp: &Hyper) -> Result<(), LoraError> {
        if self.base != BaseShape::of(hp) {
            return Err(LoraError::WrongBase(format!(
                "adapter for {} with {} layers, model {} with {} layers or other matrix sizes",
                self.base.arch, self.base.n_layer, hp.arch, hp.n_layer
            )));
        }
        Ok(())
    }

    /// Read a llama.cpp LoRA adapter (`general.type = adapter`,
    /// `adapter.type = lora`) and check it against the base `hp`.
    /// The scale of each pair is `adapter.lora.alpha / r`, `r` from its shapes.
    pub fn from_gguf(file: &GgufFile, hp: &Hyper) -> Result<Adapter, LoraError> {
        let text = |key: &str| -> Result<String, LoraError> {
            match file.get(key) {
                None => Err(LoraError::Field {
                    field: key.into(),
                    why: "is missing (not a llama.cpp adapter file?)".into(),
                }),
                Some(v) => v.as_str().map(str::to_string).ok_or(LoraError::Field {
                    field: key.into(),
                    why: format!("is a {}, expected a string", v.type_name()),
                }),
            }
        };
        let ty = text("general.type")?;
        if ty != "adapter" {
            return Err(LoraError::Field {
                field: "general.type".into(),
                why: format!("is {ty:?}, expected \"adapter\" (is this a model, not an adapter?)"),
            });
        }
        let kind = text("adapter.type")?;
        if kind != "lora" {
            return Err(LoraError::Field {
                field: "adapter.type".into(),
                why: format!("is {kind:?}; only \"lora\" adapters are supported"),
            });
        }
        let arch = text("general.architecture")?;
        if arch != hp.arch {
            return Err(LoraError::Architecture {
                adapter: arch,
                base: hp.arch.clone(),
            });
        }
        let alpha = match file.get("adapter.lora.alpha") {
            None => {
                return Err(LoraError::Field {
                    field: "adapter.lora.alpha".into(),
                    why: "is missing".into(),
                })
            }
            Some(v) => v.as_f32().ok_or(LoraError::Field {
                field: "adapter.lora.alpha".into(),
                why: format!("is a {}, expected a number", v.type_name()),
            })?,
        };
        check_alpha("adapter.lora.alpha", alpha)?;

        let mut pairs: BTreeMap<(usize, Role), Pair> = BTreeMap::new();
        for t in file.tensors() {
            let (layer, role, is_a) = parse_gguf_name(&t.name)?;
            check_layer(&t.name, layer, hp)?;
            if t.dims.len() != 2 {
                return Err(LoraError::Tensor {
                    name: t.name.clone(),
                    why: format!("has {} dimensions {:?}, expected 2", t.dims.len(), t.dims),
                });
            }
            let (cols, rows) = (t.dims[0] as usize, t.dims[1] as usize);
            let bytes = file.tensor_data(t);
            let data = match t.ggml_type {
                GgmlType::F32 | GgmlType::F16 => {
                    let mut out = vec![0f32; rows * cols];
                    k::dequantize_row(t.ggml_type, bytes, &mut out);
                    out
                }
                other => {
                    return Err(LoraError::Tensor {
                        name: t.name.clone(),
                        why: format!("has type {other}; adapters must be F32 or F16"),
                    })
                }
            };
            let raw = Raw {
                name: t.name.clone(),
                rows,
                cols,
                data,
            };
            let pair = pairs.entry((layer, role)).or_default();
            if is_a {
                pair.a = Some(raw);
            } else {
                pair.b = Some(raw);
            }
        }
        build(
            AdapterFormat::Gguf,
            pairs,
            hp,
            |_, r| Ok(alpha / r as f32),
            |(layer, role), is_a| {
                format!(
                    "blk.{layer}.{}.weight.lora_{}",
                    role.gguf_name(),
                    if is_a { "a" } else { "b" }
                )
            },
        )
    }

    /// Read a PEFT LoRA adapter (the text of `adapter_config.json` and the
    /// parsed `adapter_model.safetensors`) and check it against the base
    /// `hp`. The `B` matrices of `q_proj` and `k_proj` are permuted into
    /// GGUF's rotary row order for Llama (see the module docs).
    pub fn from_peft(config: &str, st: &SafeTensors, hp: &Hyper) -> Result<Adapter, LoraError> {
        let cfg = PeftConfig::parse(config)?;
        let mut pairs: BTreeMap<(usize, Role), Pair> = BTreeMap::new();
        for t in st.tensors() {
            let name = t.name();
            let (layer, role, is_a) = parse_peft_name(name)?;
            check_layer(name, layer, hp)?;
            if !matches!(t.dtype(), Dtype::F32 | Dtype::F16) {
                return Err(LoraError::Tensor {
                    name: name.into(),
                    why: format!("has dtype {}; adapters must be F32 or F16", t.dtype()),
                });
            }
            let shape = t.shape();
            if shape.len() != 2 {
                return Err(LoraError::Tensor {
                    name: name.into(),
                    why: format!("has {} dimensions {shape:?}, expected 2", shape.len()),
                });
            }
            let raw = Raw {
                name: name.into(),
                rows: shape[0],
                cols: shape[1],
                data: t.to_f32()?,
            };
            let pair = pairs.entry((layer, role)).or_default();
            if is_a {
                pair.a = Some(raw);
            } else {
                pair.b = Some(raw);
            }
        }
        if hp.arch == "llama" {
            // Llama's converter permutes Q and K; Qwen and Gemma (NeoX RoPE) keep HF's order.
            for ((_, role), pair) in pairs.iter_mut() {
                let heads = match role {
                    Role::Q => hp.n_head,
                    Role::K => hp.n_head_kv,
                    _ => continue,
                };
                let Some(b) = pair.b.as_mut() else { continue };
                // A B of the wrong height is refused by `build`, naming it.
                if b.rows == role.dims(hp).1 {
                    if b.rows % heads != 0 || (b.rows / heads) % 2 != 0 {
                        return Err(LoraError::Tensor {
                            name: b.name.clone(),
                            why: format!(
                                "{} rows do not split into {heads} heads of rotary pairs",
                                b.rows
                            ),
                        });
                    }
                    b.data = permute_rows_to_gguf(&b.data, b.rows, b.cols, heads);
                }
            }
        }
        build(
            AdapterFormat::Peft,
            pairs,
            hp,
            |(layer, role), r| cfg.scale(&module_name(layer, role), r),
            |(layer, role), is_a| {
                format!(
                    "base_model.model.model.layers.{layer}.{}.lora_{}.weight",
                    role.hf_name(),
                    if is_a { "A" } else { "B" }
                )
            },
        )
    }
}

fn check_alpha(field: &str, alpha: f32) -> Result<(), LoraError> {
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(LoraError::Field {
            field: field.into(),
            why: format!("is {alpha}, expected a finite number above zero"),
        });
    }
    Ok(())
}

fn check_layer(name: &str, layer: usize, hp: &Hyper) -> Result<(), LoraError> {
    if layer >= hp.n_layer {
        return Err(LoraError::Layer {
            name: name.into(),
            layer,
            n_layer: hp.n_layer,
        });
    }
    Ok(())
}

fn role_of(name: &str, f: impl Fn(Role) -> &'static str) -> Option<Role> {
    Role::ALL.into_iter().find(|r| f(*r) == name)
}

fn unknown(name: &str, expected: &str) -> LoraError {
    LoraError::Tensor {
        name: name.into(),
        why: format!("is not a LoRA tensor this engine knows (expected {expected})"),
    }
}

/// `blk.{i}.{role}.weight.lora_{a,b}` → (layer, role, is A).
fn parse_gguf_name(name: &str) -> Result<(usize, Role, bool), LoraError> {
    let bad = || {
        unknown(
            name,
            "blk.{i}.{attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down}.weight.lora_{a,b}",
        )
    };
    let rest = name.strip_prefix("blk.").ok_or_else(bad)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(bad)?;
    let layer: usize = parse_index(layer).ok_or_else(bad)?;
    let (role, is_a) = if let Some(r) = rest.strip_suffix(".weight.lora_a") {
        (r, true)
    } else if let Some(r) = rest.strip_suffix(".weight.lora_b") {
        (r, false)
    } else {
        return Err(bad());
    };
    let role = role_of(role, Role::gguf_name).ok_or_else(bad)?;
    Ok((layer, role, is_a))
}

/// `base_model.model.model.layers.{i}.{module}.lora_{A,B}.weight` → (layer, role, is A).
fn parse_peft_name(name: &str) -> Result<(usize, Role, bool), LoraError> {
    let bad = || {
        unknown(
            name,
            "base_model.model.model.layers.{i}.{self_attn.{q,k,v,o}_proj,mlp.{gate,up,down}_proj}.lora_{A,B}.weight",
        )
    };
    let rest = name
        .strip_prefix("base_model.model.model.layers.")
        .ok_or_else(bad)?;
    let (layer, rest) = rest.split_once('.').ok_or_else(bad)?;
    let layer: usize = parse_index(layer).ok_or_else(bad)?;
    let (module, is_a) = if let Some(m) = rest.strip_suffix(".lora_A.weight") {
        (m, true)
    } else if let Some(m) = rest.strip_suffix(".lora_B.weight") {
        (m, false)
    } else {
        return Err(bad());
    };
    let role = role_of(module, Role::hf_name).ok_or_else(bad)?;
    Ok((layer, role, is_a))
}

/// A decimal layer index without sign or leading zeros.
fn parse_index(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// The PEFT module name a pattern of `rank_pattern` / `alpha_pattern` is matched against.
fn module_name(layer: usize, role: Role) -> String {
    format!("model.layers.{layer}.{}", role.hf_name())
}

/// Check every pair against the base and turn it into an [`Adapter`].
fn build(
    format: AdapterFormat,
    pairs: BTreeMap<(usize, Role), Pair>,
    hp: &Hyper,
    scale_of: impl Fn((usize, Role), usize) -> Result<f32, LoraError>,
    name_of: impl Fn((usize, Role), bool) -> String,
) -> Result<Adapter, LoraError> {
    if pairs.is_empty() {
        return Err(LoraError::Empty);
    }
    let mut layers: Vec<[Option<LoraMatrix>; 7]> =
        (0..hp.n_layer).map(|_| Default::default()).collect();
    let mut bytes = 0;
    for (key, pair) in pairs {
        let (layer, role) = key;
        let (a, b) = match (pair.a, pair.b) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => {
                return Err(LoraError::Missing {
                    present: a.name,
                    missing: name_of(key, false),
                })
            }
            (None, Some(b)) => {
                return Err(LoraError::Missing {
                    present: b.name,
                    missing: name_of(key, true),
                })
            }
            (None, None) => continue,
        };
        let (n_in, n_out) = role.dims(hp);
        let rank = a.rows;
        if rank == 0 {
            return Err(LoraError::Tensor {
                name: a.name,
                why: "has rank 0".into(),
            });
        }
        if a.cols != n_in {
            return Err(LoraError::Shape {
                name: a.name,
                found: format!("{} × {}", a.rows, a.cols),
                expected: format!("r × {n_in} (n_in of {})", role.gguf_name()),
            });
        }
        if b.rows != n_out {
            return Err(LoraError::Shape {
                name: b.name,
                found: format!("{} × {}", b.rows, b.cols),
                expected: format!("{n_out} × r (n_out of {})", role.gguf_name()),
            });
        }
        if b.cols != rank {
            return Err(LoraError::Rank {
                name: b.name,
                found: b.cols,
                other: a.name,
                expected: rank,
            });
        }
        let scale = scale_of(key, rank)?;
        let mut bt = vec![0f32; n_out * rank];
        for o in 0..n_out {
            for j in 0..rank {
                bt[j * n_out + o] = b.data[o * rank + j];
            }
        }
        let m = LoraMatrix {
            rank,
            n_in,
            n_out,
            scale,
            a: a.data,
            bt,
        };
        bytes += 4 * (m.a.len() + m.bt.len());
        layers[layer][role.slot()] = Some(m);
    }
    Ok(Adapter {
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        format,
        base: BaseShape::of(hp),
        layers,
        bytes,
    })
}

/// Reorder the rows of a Q or K output matrix (`n_rows × cols`, row-major)
/// from Hugging Face's layout to GGUF Llama's. In HF, each head's rows are
/// the first halves of its rotary pairs followed by the second halves; the
/// GGUF converter interleaves them so pair `i` sits in rows `2i, 2i+1`. So
/// row `2i + j` of a head in GGUF is row `j · half + i` of that head in HF.
pub fn permute_rows_to_gguf(data: &[f32], n_rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let head = n_rows / heads;
    let half = head / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let dst = h * head + 2 * i + j;
                let src = h * head + j * half + i;
                out[dst * cols..(dst + 1) * cols]
                    .copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// What of `adapter_config.json` decides the arithmetic.
struct PeftConfig {
    r: usize,
    alpha: f32,
    rslora: bool,
    /// Plain module-name suffixes with their rank or alpha.
    rank_pattern: Vec<(String, usize)>,
    alpha_pattern: Vec<(String, f32)>,
}

impl PeftConfig {
    fn parse(text: &str) -> Result<PeftConfig, LoraError> {
        let bad = |s: String| LoraError::Config(s);
        let v: Json =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("is not a JSON object".into()))?;
        let get = |k: &str| obj.get(k).filter(|v| !v.is_null());
        match get("peft_type").and_then(Json::as_str) {
            Some("LORA") => {}
            Some(t) => {
                return Err(bad(format!(
                    "peft_type is {t:?}; only \"LORA\" is supported"
                )))
            }
            None => return Err(bad("peft_type is missing (expected \"LORA\")".into())),
        }
        let r = get("r")
            .and_then(Json::as_u64)
            .filter(|&r| r > 0)
            .ok_or_else(|| bad("r is missing or not a positive integer".into()))?
            as usize;
        let alpha = get("lora_alpha")
            .and_then(Json::as_f64)
            .ok_or_else(|| bad("lora_alpha is missing or not a number".into()))?
            as f32;
        check_alpha("lora_alpha", alpha).map_err(|e| bad(e.to_string()))?;
        match get("bias").map(|b| b.as_str()) {
            None | Some(Some("none")) => {}
            Some(b) => {
                return Err(bad(format!(
                    "bias is {}; only \"none\" is supported (trained biases are not applied)",
                    b.map_or("not a string".to_string(), |s| format!("{s:?}"))
                )))
            }
        }
        // Features that change the arithmetic and are not implemented: refuse
        // them rather than apply the adapter wrongly.
        let truthy = |k: &str| match get(k) {
            None => false,
            Some(Json::Bool(b)) => *b,
            Some(Json::Array(a)) => !a.is_empty(),
            Some(Json::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        for (key, what) in [
            ("use_dora", "DoRA (weight-decomposed LoRA)"),
            ("use_qalora", "QA-LoRA"),
            ("use_bdlora", "block-diagonal LoRA"),
            ("lora_bias", "LoRA biases"),
            ("fan_in_fan_out", "fan-in-fan-out (Conv1D) weights"),
            ("modules_to_save", "fully trained extra modules"),
            ("trainable_token_indices", "trained token embeddings"),
            ("layer_replication", "layer replication"),
            ("alora_invocation_tokens", "activated LoRA"),
            ("target_parameters", "LoRA on parameters"),
        ] {
            if truthy(key) {
                return Err(bad(format!("{key} is set: {what} is not supported")));
            }
        }
        let rslora = truthy("use_rslora");
        let pattern = |key: &str| -> Result<Vec<(String, f64)>, LoraError> {
            let Some(p) = get(key) else {
                return Ok(Vec::new());
            };
            let p = p
                .as_object()
                .ok_or_else(|| bad(format!("{key} is not an object")))?;
            p.iter()
                .map(|(k, v)| {
                    if k.is_empty()
                        || !k
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
                    {
                        return Err(bad(format!(
                            "{key} key {k:?}: only plain module names are supported, not regular expressions"
                        )));
                    }
                    let n = v
                        .as_f64()
                        .ok_or_else(|| bad(format!("{key} value of {k:?} is not a number")))?;
                    Ok((k.clone(), n))
                })
                .collect()
        };
        let rank_pattern = pattern("rank_pattern")?
            .into_iter()
            .map(|(k, v)| {
                if v >= 1.0 && v.fract() == 0.0 {
                    Ok((k, v as usize))
                } else {
                    Err(bad(format!(
                        "rank_pattern value of {k:?} is {v}, not a positive integer"
                    )))
                }
            })
            .collect::<Result<_, _>>()?;
        let alpha_pattern = pattern("alpha_pattern")?
            .into_iter()
            .map(|(k, v)| {
                let a = v as f32;
                check_alpha(&format!("alpha_pattern[{k:?}]"), a).map_err(|e| bad(e.to_string()))?;
                Ok((k, a))
            })
            .collect::<Result<_, LoraError>>()?;
        Ok(PeftConfig {
            r,
            alpha,
            rslora,
            rank_pattern,
            alpha_pattern,
        })
    }

    /// The one pattern that matches `module` (as PEFT does, a whole trailing
    /// run of dotted components); two that disagree are an error.
    fn lookup<T: Copy + PartialEq + fmt::Debug>(
        key: &str,
        patterns: &[(String, T)],
        module: &str,
    ) -> Result<Option<T>, LoraError> {
        let mut found: Option<(&str, T)> = None;
        for (p, v) in patterns {
            let hit = module == p || module.ends_with(&format!(".{p}"));
            if !hit {
                continue;
            }
            if let Some((q, w)) = found {
                if w != *v {
                    return Err(LoraError::Config(format!(
                        "{key} patterns {q:?} and {p:?} both match {module} with different values"
                    )));
                }
            }
            found = Some((p, *v));
        }
        Ok(found.map(|(_, v)| v))
    }

    /// The scale of `module`, whose tensors have rank `rank`.
    fn scale(&self, module: &str, rank: usize) -> Result<f32, LoraError> {
        let want_r = Self::lookup("rank_pattern", &self.rank_pattern, module)?.unwrap_or(self.r);
        if want_r != rank {
            return Err(LoraError::Config(format!(
                "{module} has rank {rank} in the safetensors file but the config gives r = {want_r}"
            )));
        }
        let alpha =
            Self::lookup("alpha_pattern", &self.alpha_pattern, module)?.unwrap_or(self.alpha);
        Ok(if self.rslora {
            alpha / (rank as f32).sqrt()
        } else {
            alpha / rank as f32
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_refuse() {
        assert_eq!(
            parse_gguf_name("blk.12.attn_output.weight.lora_b").unwrap(),
            (12, Role::O, false)
        );
        assert_eq!(
            parse_peft_name("base_model.model.model.layers.3.mlp.up_proj.lora_A.weight").unwrap(),
            (3, Role::Up, true)
        );
        for bad in [
            "blk.1.attn_q.weight",
            "blk.01.attn_q.weight.lora_a",
            "blk.x.attn_q.weight.lora_a",
            "blk.1.attn_qkv.weight.lora_a",
            "output.weight.lora_a",
        ] {
            assert!(parse_gguf_name(bad).is_err(), "{bad}");
        }
        for bad in [
            "base_model.model.model.layers.3.mlp.up_proj.lora_A.default.weight",
            "base_model.model.lm_head.lora_A.weight",
            "base_model.model.model.layers.3.mlp.fc1.lora_A.weight",
        ] {
            assert!(parse_peft_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn permutation_interleaves_each_head_halves() {
        // Two heads of 4 rows, one column holding the row index.
        let hf: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let g = permute_rows_to_gguf(&hf, 8, 1, 2);
        assert_eq!(g, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
    }

    #[test]
    fn patterns_match_whole_trailing_components() {
        let cfg = PeftConfig::parse(
            r#"{"peft_type":"LORA","r":8,"lora_alpha":16,
                "rank_pattern":{"model.layers.2.self_attn.q_proj":4},
                "alpha_pattern":{"down_proj":4}}"#,
        )
        .unwrap();
        assert_eq!(
            cfg.scale("model.layers.2.self_attn.q_proj", 4).unwrap(),
            4.0
        );
        assert!(cfg.scale("model.layers.2.self_attn.q_proj", 8).is_err());
        assert_eq!(
            cfg.scale("model.layers.12.self_attn.q_proj", 8).unwrap(),
            2.0
        );
        assert_eq!(cfg.scale("model.layers.0.mlp.down_proj", 8).unwrap(), 0.5);
        // "proj" is not a whole component of "mlp.down_proj".
        let cfg = PeftConfig::parse(
            r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"alpha_pattern":{"proj":1}}"#,
        )
        .unwrap();
        assert_eq!(cfg.scale("model.layers.0.mlp.down_proj", 8).unwrap(), 2.0);
        let rs =
            PeftConfig::parse(r#"{"peft_type":"LORA","r":4,"lora_alpha":8,"use_rslora":true}"#)
                .unwrap();
        assert_eq!(rs.scale("model.layers.0.mlp.up_proj", 4).unwrap(), 4.0);
    }

    #[test]
    fn config_refusals_name_the_field() {
        for (text, needle) in [
            ("[1]", "not a JSON object"),
            ("{", "not valid JSON"),
            (r#"{"r":8,"lora_alpha":16}"#, "peft_type"),
            (r#"{"peft_type":"IA3","r":8,"lora_alpha":16}"#, "IA3"),
            (r#"{"peft_type":"LORA","lora_alpha":16}"#, "r is missing"),
            (
                r#"{"peft_type":"LORA","r":0,"lora_alpha":16}"#,
                "r is missing",
            ),
            (r#"{"peft_type":"LORA","r":8}"#, "lora_alpha"),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":-1}"#,
                "lora_alpha",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"bias":"all"}"#,
                "bias",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"use_dora":true}"#,
                "use_dora",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"modules_to_save":["lm_head"]}"#,
                "modules_to_save",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"rank_pattern":{"^q.*":4}}"#,
                "regular expressions",
            ),
            (
                r#"{"peft_type":"LORA","r":8,"lora_alpha":16,"alpha_pattern":{"q_proj":"x"}}"#,
                "not a number",
            ),
        ] {
            let e = PeftConfig::parse(text).err().expect(text).to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
    }
}
