//! Tiny models written as GGUF by the tests, and a plain f32 reference
//! forward pass written independently of the engine (no kernels, no pool,
//! no batching), to check every architecture against.

#![allow(dead_code)]

use std::sync::Arc;

use hearth_gguf::{GgmlType, GgufFile, GgufWriter, Value};
use rand::{rngs::StdRng, Rng, SeedableRng};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arch {
    Llama,
    Qwen2,
    Qwen3,
    Gemma3,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
        }
    }
}

pub const N_VOCAB: usize = 40;
pub const N_EMBD: usize = 64;
pub const N_HEAD: usize = 4;
pub const N_HEAD_KV: usize = 2;
pub const N_FF: usize = 96;
pub const N_LAYER: usize = 7;
pub const WINDOW: usize = 3;

pub fn head_dim(arch: Arch) -> usize {
    match arch {
        // An explicit key_length different from n_embd / n_head.
        Arch::Qwen3 | Arch::Gemma3 => 32,
        _ => N_EMBD / N_HEAD,
    }
}

/// All weights of a tiny model, as f32, with their GGUF names and dims.
pub struct Tiny {
    pub arch: Arch,
    pub tensors: Vec<(String, Vec<u64>, Vec<f32>)>,
}

impl Tiny {
    pub fn get(&self, name: &str) -> &[f32] {
        &self
            .tensors
            .iter()
            .find(|t| t.0 == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
            .2
    }
    pub fn has(&self, name: &str) -> bool {
        self.tensors.iter().any(|t| t.0 == name)
    }
}

pub fn tiny(arch: Arch, seed: u64) -> Tiny {
    let mut rng = StdRng::seed_from_u64(seed);
    let hd = head_dim(arch);
    let mut t: Vec<(String, Vec<u64>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, dims: Vec<u64>, scale: f32, offset: f32, rng: &mut StdRng| {
        let n: u64 = dims.iter().product();
        let v = (0..n)
            .map(|_| offset + scale * (rng.gen::<f32>() * 2.0 - 1.0))
            .collect();
        t.push((name, dims, v));
    };
    let e = N_EMBD as u64;
    add(
        "token_embd.weight".into(),
        vec![e, N_VOCAB as u64],
        1.0,
        0.0,
        &mut rng,
    );
    add("output_norm.weight".into(), vec![e], 0.2, 1.0, &mut rng);
    if arch == Arch::Llama {
        // Llama gets an untied output matrix; the others tie it.
        add(
            "output.weight".into(),
            vec![e, N_VOCAB as u64],
            0.3,
            0.0,
            &mut rng,
        );
    }
    let (q, kv) = ((N_HEAD * hd) as u64, (N_HEAD_KV * hd) as u64);
    for i in 0..N_LAYER {
        let n = |s: &str| format!("blk.{i}.{s}");
        add(n("attn_norm.weight"), vec![e], 0.2, 1.0, &mut rng);
        add(n("attn_q.weight"), vec![e, q], 0.25, 0.0, &mut rng);
        add(n("attn_k.weight"), vec![e, kv], 0.25, 0.0, &mut rng);
        add(n("attn_v.weight"), vec![e, kv], 0.25, 0.0, &mut rng);
        add(n("attn_output.weight"), vec![q, e], 0.25, 0.0, &mut rng);
        if arch == Arch::Qwen2 {
            add(n("attn_q.bias"), vec![q], 0.5, 0.0, &mut rng);
            add(n("attn_k.bias"), vec![kv], 0.5, 0.0, &mut rng);
            add(n("attn_v.bias"), vec![kv], 0.5, 0.0, &mut rng);
        }
        if matches!(arch, Arch::Qwen3 | Arch::Gemma3) {
            add(n("attn_q_norm.weight"), vec![hd as u64], 0.2, 1.0, &mut rng);
            add(n("attn_k_norm.weight"), vec![hd as u64], 0.2, 1.0, &mut rng);
        }
        if arch == Arch::Gemma3 {
            add(n("post_attention_norm.weight"), vec![e], 0.2, 1.0, &mut rng);
            add(n("post_ffw_norm.weight"), vec![e], 0.2, 1.0, &mut rng);
        }
        add(n("ffn_norm.weight"), vec![e], 0.2, 1.0, &mut rng);
        add(
            n("ffn_gate.weight"),
            vec![e, N_FF as u64],
            0.25,
            0.0,
            &mut rng,
        );
        add(
            n("ffn_up.weight"),
            vec![e, N_FF as u64],
            0.25,
            0.0,
            &mut rng,
        );
        add(
            n("ffn_down.weight"),
            vec![N_FF as u64, e],
            0.25,
            0.0,
            &mut rng,
        );
    }
    Tiny { arch, tensors: t }
}

/// Write the tiny model as GGUF with every matrix in `ty` (F32 keeps it exact).
pub fn write_gguf(m: &Tiny, ty: GgmlType) -> Vec<u8> {
    let a = m.arch.name();
    let mut w = GgufWriter::new();
    let hd = head_dim(m.arch);
    w.add("general.architecture", Value::String(a.into()))
        .add(&format!("{a}.block_count"), Value::U32(N_LAYER as u32))
        .add(&format!("{a}.embedding_length"), Value::U32(N_EMBD as u32))
        .add(&format!("{a}.feed_forward_length"), Value::U32(N_FF as u32))
        .add(
            &format!("{a}.attention.head_count"),
            Value::U32(N_HEAD as u32),
        )
        .add(
            &format!("{a}.attention.head_count_kv"),
            Value::U32(N_HEAD_KV as u32),
        )
        .add(&format!("{a}.context_length"), Value::U32(256))
        .add(
            &format!("{a}.attention.layer_norm_rms_epsilon"),
            Value::F32(1e-6),
        )
        .add(
            &format!("{a}.rope.freq_base"),
            Value::F32(rope_base(m.arch)),
        );
    if matches!(m.arch, Arch::Qwen3 | Arch::Gemma3) {
        w.add(&format!("{a}.attention.key_length"), Value::U32(hd as u32))
            .add(
                &format!("{a}.attention.value_length"),
                Value::U32(hd as u32),
            );
    }
    if m.arch == Arch::Gemma3 {
        w.add("gemma3.attention.sliding_window", Value::U32(WINDOW as u32));
    }
    let tokens = (0..N_VOCAB)
        .map(|i| Value::String(format!("t{i}")))
        .collect();
    w.add("tokenizer.ggml.tokens", Value::Array(tokens));
    for (name, dims, data) in &m.tensors {
        if dims.len() == 2 && ty != GgmlType::F32 {
            let rb = ty.row_bytes(dims[0] as usize).expect("whole blocks");
            let mut bytes = vec![0u8; rb * dims[1] as usize];
            for (r, row) in data.chunks_exact(dims[0] as usize).enumerate() {
                hearth_kernels::quantize_row(ty, row, &mut bytes[r * rb..(r + 1) * rb]);
            }
            w.add_tensor(name, dims, ty, bytes).unwrap();
        } else {
            w.add_f32(name, dims, data).unwrap();
        }
    }
    w.to_bytes()
}

pub fn load(m: &Tiny, ty: GgmlType, threads: usize) -> hearth_engine::Model {
    let f = Arc::new(GgufFile::from_bytes(write_gguf(m, ty)).unwrap());
    hearth_engine::Model::from_file(f, threads).unwrap()
}

fn rope_base(arch: Arch) -> f32 {
    match arch {
        Arch::Gemma3 => 1_000_000.0,
        _ => 10_000.0,
    }
}

// ---- the reference forward ----------------------------------------------

fn matvec(w: &[f32], x: &[f32], n_out: usize) -> Vec<f32> {
    let n_in = x.len();
    (0..n_out)
        .map(|r| {
            (0..n_in)
                .map(|i| w[r * n_in + i] as f64 * x[i] as f64)
                .sum::<f64>() as f32
        })
        .collect()
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len() as f64;
    let s = 1.0 / (ms + eps as f64).sqrt();
    x.iter()
        .zip(w)
        .map(|(v, w)| (*v as f64 * s) as f32 * w)
        .collect()
}

fn rope(x: &mut [f32], pos: usize, base: f32, neox: bool) {
    let d = x.len();
    for i in 0..d / 2 {
        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / d as f64);
        let (s, c) = theta.sin_cos();
        let (a, b) = if neox {
            (i, i + d / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (x[a] as f64, x[b] as f64);
        x[a] = (x0 * c - x1 * s) as f32;
        x[b] = (x0 * s + x1 * c) as f32;
    }
}

fn f16_round(v: f32) -> f32 {
    half::f16::from_f32(v).to_f32()
}

fn gelu_tanh(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()))
        as f32
}

fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

/// Logits at every position of `tokens` (one sequence from position 0).
pub fn reference_logits(m: &Tiny, tokens: &[u32]) -> Vec<Vec<f32>> {
    let arch = m.arch;
    let hd = head_dim(arch);
    let eps = 1e-6;
    let neox = arch != Arch::Llama;
    let group = N_HEAD / N_HEAD_KV;
    let embd = m.get("token_embd.weight");
    let mut keys: Vec<Vec<Vec<f32>>> = vec![Vec::new(); N_LAYER];
    let mut vals: Vec<Vec<Vec<f32>>> = vec![Vec::new(); N_LAYER];
    let mut out = Vec::new();
    for (pos, &tok) in tokens.iter().enumerate() {
        let mut x: Vec<f32> = embd[tok as usize * N_EMBD..(tok as usize + 1) * N_EMBD].to_vec();
        if arch == Arch::Gemma3 {
            let s = (N_EMBD as f32).sqrt();
            x.iter_mut().for_each(|v| *v *= s);
        }
        for l in 0..N_LAYER {
            let n = |s: &str| format!("blk.{l}.{s}");
            let (window, base) = if arch == Arch::Gemma3 && (l + 1) % 6 != 0 {
                (Some(WINDOW), 10_000.0)
            } else {
                (None, rope_base(arch))
            };
            let h = rmsnorm(&x, m.get(&n("attn_norm.weight")), eps);
            let mut q = matvec(m.get(&n("attn_q.weight")), &h, N_HEAD * hd);
            let mut k = matvec(m.get(&n("attn_k.weight")), &h, N_HEAD_KV * hd);
            let mut v = matvec(m.get(&n("attn_v.weight")), &h, N_HEAD_KV * hd);
            if m.has(&n("attn_q.bias")) {
                for (a, b) in q.iter_mut().zip(m.get(&n("attn_q.bias"))) {
                    *a += b;
                }
                for (a, b) in k.iter_mut().zip(m.get(&n("attn_k.bias"))) {
                    *a += b;
                }
                for (a, b) in v.iter_mut().zip(m.get(&n("attn_v.bias"))) {
                    *a += b;
                }
            }
            for (vec, norm) in [
                (&mut q, "attn_q_norm.weight"),
                (&mut k, "attn_k_norm.weight"),
            ] {
                for head in vec.chunks_exact_mut(hd) {
                    if m.has(&n(norm)) {
                        let normed = rmsnorm(head, m.get(&n(norm)), eps);
                        head.copy_from_slice(&normed);
                    }
                    rope(head, pos, base, neox);
                }
            }
            keys[l].push(k.iter().map(|&v| f16_round(v)).collect());
            vals[l].push(v.iter().map(|&v| f16_round(v)).collect());
            let mut att = vec![0f32; N_HEAD * hd];
            for head in 0..N_HEAD {
                let kvh = head / group;
                let first = window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let qh = &q[head * hd..(head + 1) * hd];
                let scores: Vec<f64> = (first..=pos)
                    .map(|p| {
                        let kh = &keys[l][p][kvh * hd..(kvh + 1) * hd];
                        qh.iter()
                            .zip(kh)
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let mx = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - mx).exp()).collect();
                let z: f64 = e.iter().sum();
                for (i, p) in (first..=pos).enumerate() {
                    let vh = &vals[l][p][kvh * hd..(kvh + 1) * hd];
                    for d in 0..hd {
                        att[head * hd + d] += (e[i] / z * vh[d] as f64) as f32;
                    }
                }
            }
            let mut o = matvec(m.get(&n("attn_output.weight")), &att, N_EMBD);
            if m.has(&n("post_attention_norm.weight")) {
                o = rmsnorm(&o, m.get(&n("post_attention_norm.weight")), eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rmsnorm(&x, m.get(&n("ffn_norm.weight")), eps);
            let g = matvec(m.get(&n("ffn_gate.weight")), &h, N_FF);
            let u = matvec(m.get(&n("ffn_up.weight")), &h, N_FF);
            let a: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| {
                    if arch == Arch::Gemma3 {
                        gelu_tanh(*g) * u
                    } else {
                        silu(*g) * u
                    }
                })
                .collect();
            let mut d = matvec(m.get(&n("ffn_down.weight")), &a, N_EMBD);
            if m.has(&n("post_ffw_norm.weight")) {
                d = rmsnorm(&d, m.get(&n("post_ffw_norm.weight")), eps);
            }
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
        let h = rmsnorm(&x, m.get("output_norm.weight"), eps);
        let w = if m.has("output.weight") {
            m.get("output.weight")
        } else {
            embd
        };
        out.push(matvec(w, &h, N_VOCAB));
    }
    out
}
