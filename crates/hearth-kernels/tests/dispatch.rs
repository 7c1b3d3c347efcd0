//! The dispatched (SIMD on this machine, see `isa()`) kernels against the
//! scalar reference, and gemm against per-column vec_dot.
//!
//! The SIMD kernels are specified to be *bit-identical* to the reference
//! (same lane structure, same float operations), so every comparison here is
//! `==` on the bits, not a tolerance.

mod common;

use common::*;
use hearth_kernels::{reference, row_bytes, vec_dot_type, GgmlType, Rows};
use std::ops::Range;

#[test]
fn reports_an_isa() {
    let isa = hearth_kernels::isa();
    assert!(isa == "avx2" || isa == "scalar");
    #[cfg(target_arch = "x86_64")]
    if std::env::var("HEARTH_KERNELS").is_err()
        && is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
    {
        assert_eq!(isa, "avx2");
    }
}

#[test]
fn vec_dot_matches_reference_bitwise() {
    let mut r = rng(10);
    for t in GgmlType::ALL {
        for n in lengths(t) {
            for trial in 0..3 {
                let w = if trial == 0 {
                    quantized(t, &randn(&mut r, n, 1.0))
                } else {
                    random_weights(&mut r, t, n)
                };
                let x = activations(&mut r, t, n);
                let a = hearth_kernels::vec_dot(t, n, &w, &x);
                let b = reference::vec_dot(t, n, &w, &x);
                assert_eq!(
                    a.to_bits(),
                    b.to_bits(),
                    "{t} n={n} trial {trial}: {a} vs {b}"
                );
                // The batched forms (only Q4_K's and Q6_K's differ from the
                // one-row form).
                for form in Rows::ALL {
                    let a = hearth_kernels::vec_dot_rows(t, n, &w, &x, form);
                    let b = reference::vec_dot_rows(t, n, &w, &x, form);
                    assert_eq!(a.to_bits(), b.to_bits(), "{t} n={n} trial {trial} {form:?}");
                    if !Rows::matters_for(t) {
                        assert_eq!(a.to_bits(), reference::vec_dot(t, n, &w, &x).to_bits());
                    }
                }
            }
        }
    }
}

#[test]
fn vec_dot_uses_only_its_row() {
    // Trailing bytes past the row must not matter.
    let mut r = rng(11);
    for t in GgmlType::ALL {
        let n = lengths(t)[1];
        let w = random_weights(&mut r, t, n);
        let x = activations(&mut r, t, n);
        let mut w2 = w.clone();
        w2.extend_from_slice(&[0xAB; 300]);
        let mut x2 = x.clone();
        x2.extend_from_slice(&[0x7F; 300]);
        assert_eq!(
            hearth_kernels::vec_dot(t, n, &w, &x).to_bits(),
            hearth_kernels::vec_dot(t, n, &w2, &x2).to_bits(),
            "{t}"
        );
    }
}

#[test]
fn quantize_row_matches_reference_bytes() {
    let mut r = rng(12);
    for t in GgmlType::ALL {
        for n in lengths(t) {
            let mut x = randn(&mut r, n, 3.0);
            // ties and exact extremes, where rounding rules show
            for (i, v) in x.iter_mut().enumerate().step_by(37) {
                *v = [0.0, -0.0, 127.0, -127.0, 2.5, -2.5][i % 6];
            }
            let mut a = vec![0u8; row_bytes(t, n)];
            let mut b = vec![0u8; row_bytes(t, n)];
            hearth_kernels::quantize_row(t, &x, &mut a);
            reference::quantize_row(t, &x, &mut b);
            assert_eq!(a, b, "{t} n={n}");
        }
        // an all-zero row
        let n = t.block_size() * 2;
        let mut a = vec![0xFFu8; row_bytes(t, n)];
        let mut b = vec![0u8; row_bytes(t, n)];
        hearth_kernels::quantize_row(t, &vec![0.0; n], &mut a);
        reference::quantize_row(t, &vec![0.0; n], &mut b);
        assert_eq!(a, b, "{t} zero row");
    }
}

#[test]
fn quantize_activations_many_blocks_bitwise() {
    // Many blocks of Q8 activations with varied magnitudes, including
    // tiny and huge scales.
    let mut r = rng(13);
    for t in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        for scale in [1e-6f32, 1e-2, 1.0, 300.0, 6e4] {
            let n = 256 * 8;
            let x = randn(&mut r, n, scale);
            let mut a = vec![0u8; row_bytes(t, n)];
            let mut b = vec![0u8; row_bytes(t, n)];
            hearth_kernels::quantize_row(t, &x, &mut a);
            reference::quantize_row(t, &x, &mut b);
            assert_eq!(a, b, "{t} scale {scale}");
        }
    }
}

#[test]
fn dequantize_row_matches_reference() {
    let mut r = rng(14);
    for t in GgmlType::ALL {
        for n in lengths(t) {
            let w = random_weights(&mut r, t, n);
            let mut a = vec![0f32; n];
            let mut b = vec![0f32; n];
            hearth_kernels::dequantize_row(t, &w, &mut a);
            reference::dequantize_row(t, &w, &mut b);
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{t} n={n}"
            );
        }
    }
}

fn check_gemm(t: GgmlType, n: usize, nrows: usize, r: &mut rand::rngs::StdRng) {
    let ranges = [0..nrows, 1..nrows - 1, 3..4, 2..2, nrows - 3..nrows];
    check_gemm_with(t, n, nrows, 1..=9, &ranges, r);
}

/// gemm over every `ncols` in `cols` and every row range in `ranges` against
/// per-(row, column) `vec_dot`, and the reference gemm against the same.
fn check_gemm_with(
    t: GgmlType,
    n: usize,
    nrows: usize,
    cols: std::ops::RangeInclusive<usize>,
    ranges: &[std::ops::Range<usize>],
    r: &mut rand::rngs::StdRng,
) {
    let rb = row_bytes(t, n);
    let mut w = Vec::with_capacity(nrows * rb);
    for _ in 0..nrows {
        w.extend(random_weights(r, t, n));
    }
    let xt = vec_dot_type(t);
    let xb = row_bytes(xt, n);
    let mut x = Vec::new();
    for _ in 0..*cols.end() {
        x.extend(activations(r, t, n));
    }
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    // vec_dot per (row, column) once for the whole matrix.
    let mut dots = vec![0f32; *cols.end() * nrows];
    for c in 0..*cols.end() {
        for row in 0..nrows {
            dots[c * nrows + row] = hearth_kernels::vec_dot(
                t,
                n,
                &w[row * rb..(row + 1) * rb],
                &x[c * xb..(c + 1) * xb],
            );
        }
    }
    for ncols in cols.clone() {
        for rows in ranges {
            let nr = rows.len();
            let mut expect = vec![0f32; ncols * nr];
            for c in 0..ncols {
                for (i, row) in rows.clone().enumerate() {
                    expect[c * nr + i] = dots[c * nrows + row];
                }
            }
            let mut y = vec![f32::NAN; ncols * nr];
            hearth_kernels::gemm(t, n, &w, rows.clone(), &x, ncols, &mut y);
            assert_eq!(
                bits(&y),
                bits(&expect),
                "{t} n={n} ncols={ncols} rows={rows:?}"
            );
            // Strided: each column at `c * ldy`, the gaps between untouched.
            let ldy = nr + 3;
            let sentinel = f32::from_bits(0x7fc0_1234);
            let mut ys = vec![sentinel; ncols * ldy];
            // SAFETY: `ys` holds `ncols` columns of `ldy >= nr` floats.
            unsafe {
                hearth_kernels::gemm_strided(
                    t,
                    n,
                    &w,
                    rows.clone(),
                    &x,
                    ncols,
                    ys.as_mut_ptr(),
                    ldy,
                    Rows::SINGLE,
                )
            };
            for c in 0..ncols {
                let col = &ys[c * ldy..(c + 1) * ldy];
                assert_eq!(
                    bits(&col[..nr]),
                    bits(&expect[c * nr..(c + 1) * nr]),
                    "strided {t} n={n} ncols={ncols} rows={rows:?} column {c}"
                );
                assert!(
                    col[nr..].iter().all(|v| v.to_bits() == sentinel.to_bits()),
                    "strided {t} n={n} ncols={ncols} rows={rows:?}: wrote past column {c}"
                );
            }
            check_batched_forms(t, n, &w, rows.clone(), &x, ncols);
            let mut yr = vec![f32::NAN; ncols * nr];
            reference::gemm(t, n, &w, rows.clone(), &x, ncols, &mut yr);
            assert_eq!(
                bits(&yr),
                bits(&expect),
                "reference {t} n={n} ncols={ncols} rows={rows:?}"
            );
        }
    }
}

/// `gemm_rows` in each batched form equals the reference's dot in that
/// form per (row, column).
fn check_batched_forms(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
) {
    let (rb, xb, nr) = (row_bytes(t, n), row_bytes(vec_dot_type(t), n), rows.len());
    for form in Rows::ALL {
        let mut y = vec![f32::NAN; ncols * nr];
        hearth_kernels::gemm_rows(t, n, w, rows.clone(), x, ncols, &mut y, form);
        for c in 0..ncols {
            for (i, row) in rows.clone().enumerate() {
                let (wr, xc) = (&w[row * rb..(row + 1) * rb], &x[c * xb..(c + 1) * xb]);
                let want = reference::vec_dot_rows(t, n, wr, xc, form);
                assert_eq!(
                    y[c * nr + i].to_bits(),
                    want.to_bits(),
                    "{t} n={n} ncols={ncols} rows={rows:?} {form:?} r{row} c{c}"
                );
            }
        }
    }
}

#[test]
fn gemm_is_bit_identical_to_vec_dot() {
    let mut r = rng(15);
    for t in GgmlType::ALL {
        let ls = lengths(t);
        for n in [ls[0], ls[2], *ls.last().unwrap()] {
            check_gemm(t, n, 11, &mut r);
        }
    }
}

#[test]
fn gemm_tall_matrix() {
    // More rows than any internal tile, odd count.
    let mut r = rng(16);
    for t in [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::F16,
    ] {
        check_gemm(t, 512, 77, &mut r);
    }
}

#[test]
fn gemm_tiled_prefill_shapes() {
    // The prefill kernels work in groups of four columns over row tiles of
    // up to 64 rows (fewer for long rows): column counts around multiples of
    // four, odd block counts, row ranges that start and end mid-tile and
    // span several tiles.
    let mut r = rng(17);
    let ranges = [0..150, 5..143, 67..131, 63..65, 149..150, 7..7];
    for t in [
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::Q8_1,
    ] {
        for n in [32, 96, 32 * 17] {
            check_gemm_with(t, n, 150, 3..=13, &ranges, &mut r);
        }
        // Long rows: tiles of 16 rows.
        check_gemm_with(t, 4096, 40, 4..=9, &[0..40, 3..37, 15..17], &mut r);
    }
    // K-quants: the AVX-512 tiles take nine columns or more, in groups of
    // four, four rows at a time over row tiles of 4..64 rows (fewer for
    // longer rows).
    for t in [GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q5_K] {
        for n in [256, 768] {
            check_gemm_with(t, n, 70, 3..=13, &[0..70, 5..69, 33..34], &mut r);
        }
        check_gemm_with(t, 4096, 37, 8..=13, &[0..37, 3..35, 15..17], &mut r);
    }
}

#[test]
fn gemm_tiled_extreme_activations() {
    // Activations at +-127 everywhere (the largest `maddubs` pair sums) and
    // weights with every quant value.
    let mut r = rng(18);
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
    ] {
        let n = if t.block_size() == 256 {
            256 * 3
        } else {
            32 * 9
        };
        let nrows = 9;
        let rb = row_bytes(t, n);
        let mut w = Vec::new();
        for _ in 0..nrows {
            w.extend(random_weights(&mut r, t, n));
        }
        let xt = vec_dot_type(t);
        let xb = row_bytes(xt, n);
        // Past eight columns for the K-quants' AVX-512 tiles.
        let ncols = if t.block_size() == 256 { 11 } else { 8 };
        let mut x = Vec::new();
        for c in 0..ncols {
            let v: Vec<f32> = (0..n)
                .map(|e| if (e + c) % 3 == 0 { -1.0 } else { 1.0 })
                .collect();
            x.extend(quantized(xt, &v));
        }
        let mut y = vec![f32::NAN; ncols * nrows];
        hearth_kernels::gemm(t, n, &w, 0..nrows, &x, ncols, &mut y);
        check_batched_forms(t, n, &w, 0..nrows, &x, ncols);
        for c in 0..ncols {
            for row in 0..nrows {
                let d = hearth_kernels::vec_dot(
                    t,
                    n,
                    &w[row * rb..(row + 1) * rb],
                    &x[c * xb..(c + 1) * xb],
                );
                let rf = reference::vec_dot(
                    t,
                    n,
                    &w[row * rb..(row + 1) * rb],
                    &x[c * xb..(c + 1) * xb],
                );
                assert_eq!(y[c * nrows + row].to_bits(), d.to_bits(), "{t} r{row} c{c}");
                assert_eq!(d.to_bits(), rf.to_bits(), "{t} r{row} c{c} reference");
            }
        }
    }
}

#[test]
fn gemv_shapes() {
    // Decode (one column): many rows, row ranges starting and ending
    // anywhere (the engine splits a matmul into chunks), odd and even block
    // counts, and rows longer than the GEMV kernels' per-call tables (which
    // fall back to the plain kernels).
    let mut r = rng(19);
    let ranges = [0..37, 1..36, 5..6, 16..32, 36..37, 9..9];
    for t in [
        GgmlType::Q4_0,
        GgmlType::Q5_0,
        GgmlType::Q8_0,
        GgmlType::Q4_1,
        GgmlType::Q5_1,
        GgmlType::Q8_1,
    ] {
        for n in [32, 64, 32 * 7, 640, 32 * 512, 32 * 513] {
            check_gemm_with(t, n, 37, 1..=1, &ranges, &mut r);
        }
    }
}

#[test]
fn gemv_extreme_activations() {
    // One column at +-127 everywhere (the largest `maddubs` pair sums, and
    // the largest unsigned-offset corrections) against weights with every
    // quant value, for each row range.
    let mut r = rng(20);
    for t in [GgmlType::Q4_0, GgmlType::Q5_0, GgmlType::Q8_0] {
        let n = 32 * 9;
        let nrows = 11;
        let rb = row_bytes(t, n);
        let mut w = Vec::new();
        for _ in 0..nrows {
            w.extend(random_weights(&mut r, t, n));
        }
        let xt = vec_dot_type(t);
        for sign in [1.0f32, -1.0] {
            let v: Vec<f32> = (0..n)
                .map(|e| if e % 5 == 0 { -sign } else { sign })
                .collect();
            let x = quantized(xt, &v);
            for rows in [0..nrows, 3..8] {
                let mut y = vec![f32::NAN; rows.len()];
                hearth_kernels::gemm(t, n, &w, rows.clone(), &x, 1, &mut y);
                for (k, row) in rows.enumerate() {
                    let rf = reference::vec_dot(t, n, &w[row * rb..(row + 1) * rb], &x);
                    assert_eq!(y[k].to_bits(), rf.to_bits(), "{t} r{row} sign {sign}");
                }
            }
        }
    }
}
