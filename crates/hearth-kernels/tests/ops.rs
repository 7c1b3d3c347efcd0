//! Element-wise ops: the dispatched versions against the scalar reference
//! (bitwise), and the reference against plain f64 formulas.

mod common;

use common::*;
use half::f16;
use hearth_kernels::reference;
use rand::Rng;

const SIZES: [usize; 12] = [1, 2, 7, 8, 9, 15, 16, 17, 31, 64, 257, 4096];

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|f| f.to_bits()).collect()
}

#[test]
fn expf_is_accurate() {
    let mut worst = 0f64;
    let mut x = -86.0f32;
    while x < 88.5 {
        let got = reference::expf(x) as f64;
        let want = (x as f64).exp();
        worst = worst.max(((got - want) / want).abs());
        x += 0.0137;
    }
    assert!(worst < 4e-7, "worst relative error {worst}");
    assert_eq!(reference::expf(f32::NEG_INFINITY), 0.0);
    assert_eq!(reference::expf(-1000.0), 0.0);
    assert_eq!(reference::expf(0.0), 1.0);
    assert_eq!(reference::expf(89.0), f32::INFINITY);
    assert!(reference::expf(88.7).is_finite());
    assert!(reference::expf(f32::NAN).is_nan());
}

#[test]
fn rms_norm_matches_formula_and_simd() {
    let mut r = rng(20);
    for n in SIZES {
        let x = randn(&mut r, n, 2.0);
        let w = randn(&mut r, n, 1.0);
        let mut a = vec![0f32; n];
        let mut b = vec![0f32; n];
        hearth_kernels::rms_norm(&x, &w, 1e-6, &mut a);
        reference::rms_norm(&x, &w, 1e-6, &mut b);
        assert_eq!(bits(&a), bits(&b), "n={n}");
        let ms: f64 = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / n as f64;
        let s = 1.0 / (ms + 1e-6).sqrt();
        for i in 0..n {
            let want = x[i] as f64 * s * w[i] as f64;
            assert!(
                (a[i] as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30,
                "n={n} i={i}"
            );
        }
        let mut c = x.clone();
        hearth_kernels::rms_norm_inplace(&mut c, &w, 1e-6);
        assert_eq!(bits(&c), bits(&b));
        let mut c = x.clone();
        reference::rms_norm_inplace(&mut c, &w, 1e-6);
        assert_eq!(bits(&c), bits(&b));
    }
}

#[test]
fn softmax_matches_formula_and_simd() {
    let mut r = rng(21);
    for n in SIZES {
        let mut x = randn(&mut r, n, 5.0);
        if n > 3 {
            x[1] = f32::NEG_INFINITY;
            x[n - 1] = f32::NEG_INFINITY;
        }
        let mut a = x.clone();
        let mut b = x.clone();
        hearth_kernels::softmax_inplace(&mut a);
        reference::softmax_inplace(&mut b);
        assert_eq!(bits(&a), bits(&b), "n={n}");
        let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let sum: f64 = x.iter().map(|&v| (v as f64 - max).exp()).sum();
        for i in 0..n {
            let want = (x[i] as f64 - max).exp() / sum;
            assert!(
                (a[i] as f64 - want).abs() <= 2e-6 * want + 1e-12,
                "n={n} i={i}: {} vs {want}",
                a[i]
            );
        }
        if n > 3 {
            assert_eq!(a[1], 0.0);
        }
        let total: f64 = a.iter().map(|&v| v as f64).sum();
        assert!((total - 1.0).abs() < 1e-5);
    }
    let mut all_masked = vec![f32::NEG_INFINITY; 9];
    hearth_kernels::softmax_inplace(&mut all_masked);
    assert!(all_masked.iter().all(|&v| v == 0.0));
}

#[test]
fn glu_activations_match_formula_and_simd() {
    let mut r = rng(22);
    for n in SIZES {
        let mut g = randn(&mut r, n, 4.0);
        if n > 4 {
            g[0] = 100.0;
            g[1] = -100.0;
            g[2] = 0.0;
            g[3] = -0.0;
        }
        let u = randn(&mut r, n, 1.0);
        let (mut a, mut b) = (g.clone(), g.clone());
        hearth_kernels::silu_mul_inplace(&mut a, &u);
        reference::silu_mul_inplace(&mut b, &u);
        assert_eq!(bits(&a), bits(&b), "silu n={n}");
        for i in 0..n {
            let x = g[i] as f64;
            let want = x / (1.0 + (-x).exp()) * u[i] as f64;
            assert!(
                (a[i] as f64 - want).abs() <= 1e-6 * want.abs() + 1e-30,
                "silu {x}"
            );
        }
        let (mut a, mut b) = (g.clone(), g.clone());
        hearth_kernels::gelu_tanh_mul_inplace(&mut a, &u);
        reference::gelu_tanh_mul_inplace(&mut b, &u);
        assert_eq!(bits(&a), bits(&b), "gelu n={n}");
        for i in 0..n {
            let x = g[i] as f64;
            let c = (2.0 / std::f64::consts::PI).sqrt();
            let t = c * (x + 0.044715 * x * x * x);
            // 0.5 x (1 + tanh t) = x / (1 + e^(-2t)), the second form without
            // cancellation for very negative x.
            let want = x / (1.0 + (-2.0 * t).exp()) * u[i] as f64;
            assert!(
                (want - 0.5 * x * (1.0 + t.tanh()) * u[i] as f64).abs()
                    <= 1e-12 * (1.0 + want.abs())
            );
            // llama.cpp's table: the input rounded to F16 (half an F16 ulp,
            // 2^-11 relative, moves GELU by at most ~1.13x that) and the
            // output rounded to F16 (another 2^-11).
            let bound = 2.5 * 2f64.powi(-11) * (want.abs() + (x * u[i] as f64).abs()) + 1e-7;
            assert!(
                (a[i] as f64 - want).abs() <= bound,
                "gelu {x}: {} vs {want}",
                a[i]
            );
        }
    }
}

#[test]
fn binary_ops_match() {
    let mut r = rng(23);
    for n in SIZES {
        let x = randn(&mut r, n, 1.0);
        let y0 = randn(&mut r, n, 1.0);
        let mut a = y0.clone();
        hearth_kernels::add_inplace(&mut a, &x);
        assert_eq!(
            bits(&a),
            bits(&y0.iter().zip(&x).map(|(p, q)| p + q).collect::<Vec<_>>())
        );
        let mut a = y0.clone();
        hearth_kernels::mul_inplace(&mut a, &x);
        assert_eq!(
            bits(&a),
            bits(&y0.iter().zip(&x).map(|(p, q)| p * q).collect::<Vec<_>>())
        );
        let mut a = y0.clone();
        hearth_kernels::scale_inplace(&mut a, 0.3);
        assert_eq!(
            bits(&a),
            bits(&y0.iter().map(|p| p * 0.3).collect::<Vec<_>>())
        );
    }
}

#[test]
fn f16_helpers_match() {
    let mut r = rng(24);
    for n in SIZES {
        let q = randn(&mut r, n, 1.0);
        let kf = randn(&mut r, n, 1.0);
        let mut k = vec![f16::ZERO; n];
        hearth_kernels::f32_to_f16_row(&kf, &mut k);
        let mut k2 = vec![f16::ZERO; n];
        reference::f32_to_f16_row(&kf, &mut k2);
        assert_eq!(k, k2);
        assert!(k.iter().zip(&kf).all(|(h, f)| *h == f16::from_f32(*f)));
        // a longer destination (a KV-cache tail) gets only the first n written
        let mut long = vec![f16::from_f32(7.0); n + 5];
        hearth_kernels::f32_to_f16_row(&kf, &mut long);
        assert_eq!(&long[..n], &k[..]);
        assert!(long[n..].iter().all(|&h| h == f16::from_f32(7.0)));
        let a = hearth_kernels::dot_f32_f16(&q, &k);
        let b = reference::dot_f32_f16(&q, &k);
        assert_eq!(a.to_bits(), b.to_bits(), "dot n={n}");
        let want: f64 = q.iter().zip(&k).map(|(x, y)| *x as f64 * y.to_f64()).sum();
        let mag: f64 = q
            .iter()
            .zip(&k)
            .map(|(x, y)| (*x as f64 * y.to_f64()).abs())
            .sum();
        assert!((a as f64 - want).abs() <= 1e-6 * mag + 1e-30);
        let alpha: f32 = r.gen_range(-1.0..1.0);
        let mut y1 = kf.clone();
        let mut y2 = kf.clone();
        hearth_kernels::axpy_f16(&mut y1, alpha, &k);
        reference::axpy_f16(&mut y2, alpha, &k);
        assert_eq!(bits(&y1), bits(&y2), "axpy n={n}");
        assert_eq!(y1[0], kf[0] + alpha * k[0].to_f32());
    }
}

fn rope_formula(x: &[f32], pos: usize, n_rot: usize, base: f32, neox: bool) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for i in 0..n_rot / 2 {
        let theta = pos as f64 * (base as f64).powf(-2.0 * i as f64 / n_rot as f64);
        let (a, b) = if neox {
            (i, i + n_rot / 2)
        } else {
            (2 * i, 2 * i + 1)
        };
        let (x0, x1) = (x[a] as f64, x[b] as f64);
        out[a] = x0 * theta.cos() - x1 * theta.sin();
        out[b] = x0 * theta.sin() + x1 * theta.cos();
    }
    out
}

#[test]
fn rope_matches_formula() {
    let mut r = rng(25);
    for &(head, n_rot) in &[
        (64usize, 64usize),
        (128, 128),
        (128, 64),
        (256, 256),
        (80, 32),
    ] {
        for &pos in &[0usize, 1, 7, 100, 4000] {
            for neox in [false, true] {
                let x = randn(&mut r, head, 1.0);
                let mut a = x.clone();
                hearth_kernels::rope_inplace(&mut a, pos, n_rot, 10000.0, neox);
                let want = rope_formula(&x, pos, n_rot, 10000.0, neox);
                // The angle is accumulated by repeated f32 multiplication as in
                // ggml, so large positions drift by a few ulp of the angle.
                let tol = 2e-6 * (1.0 + pos as f64) * 4.0;
                for i in 0..head {
                    assert!(
                        (a[i] as f64 - want[i]).abs() <= tol,
                        "head {head} rot {n_rot} pos {pos} neox {neox} i {i}: {} vs {}",
                        a[i],
                        want[i]
                    );
                }
                assert_eq!(&a[n_rot..], &x[n_rot..], "dims past n_rot untouched");
                let mut cs = vec![0f32; n_rot];
                hearth_kernels::rope_cache(pos, n_rot, 10000.0, &mut cs);
                let mut b = x.clone();
                hearth_kernels::rope_apply(&mut b, &cs, neox);
                assert_eq!(bits(&a), bits(&b));
                let mut c = x.clone();
                reference::rope_apply(&mut c, &cs, neox);
                assert_eq!(bits(&c), bits(&b));
            }
        }
    }
}

#[test]
fn rope_pairs_are_where_documented() {
    // pos 1, base so that theta_0 = 1 rad: only pair 0 sees exactly angle 1.
    let mut x = vec![0f32; 8];
    x[0] = 1.0;
    hearth_kernels::rope_inplace(&mut x, 1, 8, 10000.0, false);
    assert!((x[0] - 1f32.cos()).abs() < 1e-7 && (x[1] - 1f32.sin()).abs() < 1e-7);
    let mut x = vec![0f32; 8];
    x[0] = 1.0;
    hearth_kernels::rope_inplace(&mut x, 1, 8, 10000.0, true);
    assert!((x[0] - 1f32.cos()).abs() < 1e-7 && (x[4] - 1f32.sin()).abs() < 1e-7);
    assert_eq!(x[1], 0.0);
}

/// A plain f64 softmax-weighted sum of the value rows, the formula the
/// online kernel approximates.
fn attention_formula(
    q: &[f16],
    keys: &[f16],
    values: &[f16],
    n: usize,
    hdv: usize,
    scale: f32,
) -> Vec<f64> {
    let hdk = q.len();
    let s: Vec<f64> = (0..n)
        .map(|i| {
            let k = &keys[i * hdk..(i + 1) * hdk];
            k.iter()
                .zip(q)
                .map(|(a, b)| a.to_f64() * b.to_f64())
                .sum::<f64>()
                * scale as f64
        })
        .collect();
    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
    let z: f64 = w.iter().sum();
    (0..hdv)
        .map(|d| {
            (0..n)
                .map(|i| w[i] * values[i * hdv + d].to_f64())
                .sum::<f64>()
                / z
        })
        .collect()
}

/// Rows `range` of contiguous key and value rows (`hdv` values a row, keys
/// as many per row as `keys` holds for the same rows).
fn kv_rows<'a>(
    keys: &'a [f16],
    values: &'a [f16],
    hdv: usize,
    range: std::ops::Range<usize>,
) -> hearth_kernels::KvRun<'a> {
    let rows = values.len() / hdv;
    let hdk = keys.len() / rows;
    hearth_kernels::KvRun {
        keys: &keys[range.start * hdk..],
        k_stride: hdk,
        values: &values[range.start * hdv..],
        v_stride: hdv,
        n: range.len(),
    }
}

/// `got` is [`attention_formula`] over keys `first..n` within `tol`.
#[allow(clippy::too_many_arguments)]
fn assert_near_formula(
    got: &[f32],
    q: &[f16],
    keys: &[f16],
    values: &[f16],
    first: usize,
    n: usize,
    scale: f32,
    tol: f64,
    what: &str,
) {
    let (hdk, hdv) = (q.len(), got.len());
    let exact = attention_formula(
        q,
        &keys[first * hdk..],
        &values[first * hdv..],
        n - first,
        hdv,
        scale,
    );
    for (d, (&g, &e)) in got.iter().zip(&exact).enumerate() {
        assert!((g as f64 - e).abs() <= tol, "{what}, d {d}: {g} vs {e}");
    }
}

/// The online-softmax attention: the dispatched kernel equals the scalar
/// reference bit for bit (head sizes that take the SIMD path and sizes that
/// fall back, runs longer than one pass of keys), feeding the keys in two
/// runs equals one run, and the result is the softmax-weighted sum of the
/// values to F16 accuracy.
/// (key, value) head sizes: SIMD paths, and sizes that fall back.
const ONLINE_SHAPES: [(usize, usize); 5] = [(64, 64), (128, 128), (256, 256), (48, 40), (32, 64)];

#[test]
fn online_attention_matches_reference_and_formula() {
    let mut r = rng(31);
    for (hdk, hdv) in ONLINE_SHAPES {
        for &n in &[1usize, 7, 64, 65, 130] {
            let q = randn_f16(&mut r, hdk);
            let keys = randn_f16(&mut r, n * hdk);
            let values = randn_f16(&mut r, n * hdv);
            let scale = 1.0 / (hdk as f32).sqrt();
            let run = |split: usize, simd: bool| {
                let mut state = (f32::NEG_INFINITY, 0f32);
                let mut acc = vec![f16::ZERO; hdv];
                for (from, to) in [(0, split), (split, n)] {
                    let kv = kv_rows(&keys, &values, hdv, from..to);
                    if simd {
                        hearth_kernels::attn_online_f16(&q, kv, scale, &mut state, &mut acc);
                    } else {
                        reference::attn_online_f16(&q, kv, scale, &mut state, &mut acc);
                    }
                }
                let mut out = vec![0f32; hdv];
                hearth_kernels::attn_online_finish(state, &acc, &mut out);
                out
            };
            let want = run(n, false);
            assert_eq!(
                bits(&run(n, true)),
                bits(&want),
                "hdk {hdk} hdv {hdv} n {n}"
            );
            assert_eq!(bits(&run(n / 2, true)), bits(&want), "two runs, n {n}");
            let what = format!("hdk {hdk} n {n}");
            assert_near_formula(&want, &q, &keys, &values, 0, n, scale, 2e-2, &what);
        }
    }
    // No keys at all: zeros, not NaN.
    let mut out = vec![1f32; 8];
    hearth_kernels::attn_online_finish((f32::NEG_INFINITY, 0.0), &[f16::ZERO; 8], &mut out);
    assert_eq!(out, vec![0f32; 8]);
}

/// llama.cpp's split-KV merge: ranges of keys, each run afresh, then merged.
/// One range merged equals [`hearth_kernels::attn_online_finish`] bit for
/// bit; empty ranges (a window that starts past them) are skipped, also in
/// first place; several ranges give the softmax-weighted sum of all the
/// values; and the merge is not the single run's arithmetic (the split
/// changes bits, which is why the engine follows llama.cpp's split).
#[test]
fn split_attention_merges_to_the_formula() {
    let mut r = rng(37);
    let mut differs = 0;
    for (hdk, hdv) in ONLINE_SHAPES {
        for &(n, chunk) in &[(9usize, 4usize), (300, 128), (600, 256), (130, 65)] {
            let q = randn_f16(&mut r, hdk);
            let keys = randn_f16(&mut r, n * hdk);
            let values = randn_f16(&mut r, n * hdv);
            let scale = 1.0 / (hdk as f32).sqrt();
            // Each range of `chunk` keys from `first` on, run afresh.
            let parts = |first: usize| {
                let n_parts = n.div_ceil(chunk);
                let mut states = vec![(f32::NEG_INFINITY, 0f32); n_parts];
                let mut accs = vec![f16::ZERO; n_parts * hdv];
                for (p, (state, acc)) in states.iter_mut().zip(accs.chunks_mut(hdv)).enumerate() {
                    let (from, to) = (first.max(p * chunk), n.min((p + 1) * chunk));
                    if from >= to {
                        continue;
                    }
                    let kv = kv_rows(&keys, &values, hdv, from..to);
                    hearth_kernels::attn_online_f16(&q, kv, scale, state, acc);
                }
                (states, accs)
            };
            let (states, accs) = parts(0);
            let mut one = vec![0f32; hdv];
            let mut merged_one = vec![0f32; hdv];
            hearth_kernels::attn_online_finish(states[0], &accs[..hdv], &mut one);
            hearth_kernels::attn_online_merge(&states[..1], &accs[..hdv], &mut merged_one);
            assert_eq!(bits(&merged_one), bits(&one), "one range, hdv {hdv} n {n}");

            let mut merged = vec![0f32; hdv];
            hearth_kernels::attn_online_merge(&states, &accs, &mut merged);
            let what = format!("merged, hdv {hdv} n {n}");
            assert_near_formula(&merged, &q, &keys, &values, 0, n, scale, 2e-2, &what);
            let mut state = (f32::NEG_INFINITY, 0f32);
            let mut acc = vec![f16::ZERO; hdv];
            let all = kv_rows(&keys, &values, hdv, 0..n);
            hearth_kernels::attn_online_f16(&q, all, scale, &mut state, &mut acc);
            let mut single = vec![0f32; hdv];
            hearth_kernels::attn_online_finish(state, &acc, &mut single);
            differs += usize::from(bits(&single) != bits(&merged));

            // The first range entirely outside the window: skipped.
            let first = chunk + 1;
            let (states, accs) = parts(first);
            assert_eq!(states[0], (f32::NEG_INFINITY, 0.0));
            let mut windowed = vec![0f32; hdv];
            hearth_kernels::attn_online_merge(&states, &accs, &mut windowed);
            let what = format!("windowed, hdv {hdv} n {n}");
            assert_near_formula(&windowed, &q, &keys, &values, first, n, scale, 2e-2, &what);
        }
    }
    assert!(differs > 0, "the merge never changed a bit");
    // No keys at all: zeros, not NaN.
    let mut out = vec![1f32; 8];
    let none = [(f32::NEG_INFINITY, 0.0); 2];
    hearth_kernels::attn_online_merge(&none, &[f16::ZERO; 16], &mut out);
    assert_eq!(out, vec![0f32; 8]);
}

/// The F32 dot products in llama.cpp's two matmul orders: dispatched
/// equals the scalar reference bit for bit at every length (ggml's: any,
/// with every kind of tail; tinyBLAS: multiples of 8), both are the f64
/// dot product to f32 accuracy, and the two orders do differ.
#[test]
fn f32_dots_in_llama_cpp_orders() {
    let mut r = rng(41);
    let mut differ = 0;
    for n in [
        1usize, 3, 4, 5, 7, 8, 9, 12, 15, 31, 32, 33, 40, 44, 47, 64, 96, 576, 1536, 1541,
    ] {
        let a = randn(&mut r, n, 1.0);
        let b = randn(&mut r, n, 1.0);
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        let magnitude: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (*x as f64 * *y as f64).abs())
            .sum();
        // The dispatched kernel equals the reference, which is the dot
        // product to f32 accuracy.
        let check = |order: &str, reference: f32, dispatched: f32| {
            assert_eq!(dispatched.to_bits(), reference.to_bits(), "{order}, n {n}");
            let err = (reference as f64 - exact).abs();
            assert!(err <= 1e-6 * magnitude + 1e-7, "{order}, n {n}: {err}");
            reference
        };
        let ggml = check(
            "ggml order",
            reference::dot_f32_ggml(&a, &b),
            hearth_kernels::dot_f32_ggml(&a, &b),
        );
        if n % 8 == 0 {
            let tiny = check(
                "tinyBLAS order",
                reference::dot_f32_tiny(&a, &b),
                hearth_kernels::dot_f32_tiny(&a, &b),
            );
            differ += usize::from(tiny.to_bits() != ggml.to_bits());
        }
    }
    assert!(differ > 0, "the two orders never differed");
    // ggml's tail below 32: rounded products added in order, eight then four
    // at a time, the last one to three fused.
    let a: Vec<f32> = (0..7).map(|i| 1.0 + i as f32 / 3.0).collect();
    let b: Vec<f32> = (0..7).map(|i| 0.7 - i as f32 / 5.0).collect();
    let mut want = 0f32;
    for i in 0..4 {
        want += a[i] * b[i];
    }
    for i in 4..7 {
        want = a[i].mul_add(b[i], want);
    }
    assert_eq!(reference::dot_f32_ggml(&a, &b).to_bits(), want.to_bits());
}

/// `n` normal values rounded to F16, as a cache holds keys and values.
fn randn_f16(r: &mut rand::rngs::StdRng, n: usize) -> Vec<f16> {
    randn(r, n, 1.0).into_iter().map(f16::from_f32).collect()
}

/// (key, value) head sizes for the tiled attention: the SIMD paths (values
/// a multiple of 64, and of 8 with a tail), and odd sizes that fall back.
const TILE_SHAPES: [(usize, usize); 5] = [(64, 64), (256, 256), (33, 72), (7, 12), (1, 8)];

/// The tiled attention over keys `first..n` of F16 rows, tile by tile as
/// the engine packs them; unused slots of a tile hold NaN so that a kernel
/// which reads them shows it.
fn tiled_attention(
    q: &[f32],
    keys: &[f16],
    values: &[f16],
    first: usize,
    n: usize,
    scale: f32,
    simd: bool,
) -> Vec<f32> {
    use hearth_kernels::{KvTile, ATTN_TILE};
    let (hdk, hdv) = (q.len(), values.len() / n);
    let mut state = (f32::NEG_INFINITY, 0f32);
    let mut acc = vec![0f32; hdv];
    for t0 in (first / ATTN_TILE * ATTN_TILE..n).step_by(ATTN_TILE) {
        let mut keys_t = vec![f32::NAN; hdk * ATTN_TILE];
        let mut vals = vec![f32::NAN; ATTN_TILE * hdv];
        let valid = first.max(t0) - t0..n.min(t0 + ATTN_TILE) - t0;
        for j in valid.clone() {
            for d in 0..hdk {
                keys_t[d * ATTN_TILE + j] = keys[(t0 + j) * hdk + d].to_f32();
            }
            for d in 0..hdv {
                vals[j * hdv + d] = values[(t0 + j) * hdv + d].to_f32();
            }
        }
        let tile = KvTile {
            keys_t: &keys_t,
            values: &vals,
        };
        if simd {
            hearth_kernels::attn_tile_row(q, tile, valid, scale, &mut state, &mut acc);
        } else {
            reference::attn_tile_row(q, tile, valid, scale, &mut state, &mut acc);
        }
    }
    let mut out = vec![0f32; hdv];
    hearth_kernels::attn_tile_finish(state, &acc, &mut out);
    out
}

/// The tiled attention: the dispatched kernel equals the scalar reference
/// bit for bit (whole and partial tiles, keys masked at the front as a
/// sliding window masks them, NaN in the slots no key fills), and the
/// result is the softmax-weighted sum of the values to F32 accuracy.
#[test]
fn tiled_attention_matches_reference_and_formula() {
    let mut r = rng(37);
    for (hdk, hdv) in TILE_SHAPES {
        for &(first, n) in &[
            (0usize, 1usize),
            (0, 7),
            (0, 64),
            (0, 65),
            (5, 130),
            (70, 200),
        ] {
            let q = randn(&mut r, hdk, 1.0);
            let q16: Vec<f16> = q.iter().map(|&v| f16::from_f32(v)).collect();
            let keys = randn_f16(&mut r, n * hdk);
            let values = randn_f16(&mut r, n * hdv);
            let scale = 1.0 / (hdk as f32).sqrt();
            let want = tiled_attention(&q, &keys, &values, first, n, scale, false);
            let got = tiled_attention(&q, &keys, &values, first, n, scale, true);
            assert_eq!(
                bits(&got),
                bits(&want),
                "hdk {hdk} hdv {hdv} keys {first}..{n}"
            );
            // The formula over the same keys, with the query as F16 so the
            // helper can take it; the query's rounding is within the bound.
            let what = format!("hdk {hdk} keys {first}..{n}");
            assert_near_formula(&want, &q16, &keys, &values, first, n, scale, 1e-2, &what);
        }
    }
    // A tile with no valid key leaves the state alone; no keys give zeros.
    let mut state = (f32::NEG_INFINITY, 0f32);
    let mut acc = vec![0f32; 8];
    let keys_t = vec![f32::NAN; hearth_kernels::ATTN_TILE];
    let vals = vec![f32::NAN; hearth_kernels::ATTN_TILE * 8];
    let tile = hearth_kernels::KvTile {
        keys_t: &keys_t,
        values: &vals,
    };
    hearth_kernels::attn_tile_row(&[1.0], tile, 3..3, 1.0, &mut state, &mut acc);
    assert_eq!((state.0, state.1), (f32::NEG_INFINITY, 0.0));
    let mut out = vec![1f32; 8];
    hearth_kernels::attn_tile_finish(state, &acc, &mut out);
    assert_eq!(out, vec![0f32; 8]);
}

/// llama.cpp's vector exp (SiLU's): within a few ulp of e^x over the
/// whole range, including the scaled paths past |n| > 126 and the
/// overflow/underflow ends; and the SIMD SiLU equals the reference there.
#[test]
fn vexpf_is_accurate_over_its_range() {
    let mut x = -104.0f32;
    while x < 89.0 {
        let got = reference::vexpf(x) as f64;
        let want = (x as f64).exp();
        if want > f32::MAX as f64 {
            assert!(got.is_infinite(), "{x}");
        } else if want > 1e-37 {
            assert!((got / want - 1.0).abs() < 4e-7, "{x}: {got} vs {want}");
        } else {
            // Subnormal results: within a few of their ulps.
            assert!(
                (got - want).abs() <= want * 4e-7 + 8.0 * 1.4e-45,
                "{x}: {got} vs {want}"
            );
        }
        x += 0.0137;
    }
    let g: Vec<f32> = (0..64).map(|i| -95.0 + 3.1 * i as f32).collect();
    let u = vec![1.5f32; 64];
    let (mut a, mut b) = (g.clone(), g.clone());
    hearth_kernels::silu_mul_inplace(&mut a, &u);
    reference::silu_mul_inplace(&mut b, &u);
    assert_eq!(bits(&a), bits(&b));
}

/// The F16 dot product in llama.cpp's lane order is a dot product.
#[test]
fn f16_dot_matches_formula() {
    let mut r = rng(32);
    for n in [1usize, 31, 32, 64, 95, 256] {
        let x: Vec<f16> = randn(&mut r, n, 1.0)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let y: Vec<f16> = randn(&mut r, n, 1.0)
            .into_iter()
            .map(f16::from_f32)
            .collect();
        let want: f64 = x.iter().zip(&y).map(|(a, b)| a.to_f64() * b.to_f64()).sum();
        let got = reference::dot_f16_f16(&x, &y) as f64;
        assert!(
            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "n {n}: {got} vs {want}"
        );
    }
}
