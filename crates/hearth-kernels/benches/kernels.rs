//! Criterion-free micro benchmark: `cargo bench -p hearth-kernels --bench kernels [filter]`.
//!
//! GEMV (one column, decode) reports GB/s of weight bytes streamed on one
//! thread; GEMM (prefill) reports multiply-accumulates per second.

use hearth_kernels::{gemm, quantize_row, reference, row_bytes, vec_dot_type, GgmlType};
use std::hint::black_box;
use std::time::Instant;

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0
        })
        .collect()
}

fn matrix(t: GgmlType, rows: usize, n: usize) -> Vec<u8> {
    let rb = row_bytes(t, n);
    let mut w = vec![0u8; rows * rb];
    let src = data(n * 16, 7);
    for r in 0..rows {
        // 16 distinct rows repeated: quantising every row would dominate start-up.
        let i = r % 16;
        reference::quantize_row(t, &src[i * n..(i + 1) * n], &mut w[r * rb..(r + 1) * rb]);
    }
    w
}

/// Fastest single call over about `budget` seconds: the machine is shared,
/// and the minimum is the least disturbed estimate of what the kernel costs.
fn time<F: FnMut()>(mut f: F, budget: f64) -> f64 {
    f();
    let start = Instant::now();
    let mut best = f64::INFINITY;
    while start.elapsed().as_secs_f64() < budget {
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    println!("isa: {}", hearth_kernels::isa());
    let types = [
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q5_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
        GgmlType::Q4_0,
        GgmlType::Q5_1,
        GgmlType::Q2_K,
        GgmlType::Q3_K,
        GgmlType::Q5_K,
        GgmlType::F16,
    ];
    // `HEARTH_BENCH_SHAPE=rows,n` overrides the GEMV matrix shape (e.g.
    // `262144,640` for Gemma 3 270M's output matrix).
    let (rows, n) = std::env::var("HEARTH_BENCH_SHAPE")
        .ok()
        .and_then(|s| {
            let (r, n) = s.split_once(',')?;
            Some((r.trim().parse().ok()?, n.trim().parse().ok()?))
        })
        .unwrap_or((8192, 4096));
    for t in types {
        if filter.as_ref().is_some_and(|f| {
            !f.split(',')
                .any(|f| t.name().eq_ignore_ascii_case(f.trim()))
        }) {
            continue;
        }
        let w = matrix(t, rows, n);
        let xt = vec_dot_type(t);
        let xb = row_bytes(xt, n);
        let ncols = 512;
        let mut x = vec![0u8; ncols * xb];
        let src = data(n * ncols, 3);
        for c in 0..ncols {
            quantize_row(xt, &src[c * n..(c + 1) * n], &mut x[c * xb..(c + 1) * xb]);
        }
        let mut y = vec![0f32; (8 * rows).max(512 * ncols)];
        let ncols64 = 64;
        let gemv = time(
            || gemm(t, n, black_box(&w), 0..rows, &x[..xb], 1, &mut y),
            0.5,
        );
        let gbs = w.len() as f64 / gemv / 1e9;
        let rows_small = 512.min(rows);
        let mm = time(
            || gemm(t, n, black_box(&w), 0..rows_small, &x, ncols64, &mut y),
            0.5,
        );
        let gmacs = (rows_small * ncols64 * n) as f64 / mm / 1e9;
        // Decode of 8 (and 4) concurrent streams: the whole matrix, 8 (4) columns.
        let mm8 = time(|| gemm(t, n, black_box(&w), 0..rows, &x, 8, &mut y), 0.5);
        let gbs8 = w.len() as f64 / mm8 / 1e9;
        let mm4 = time(|| gemm(t, n, black_box(&w), 0..rows, &x, 4, &mut y), 0.5);
        let gbs4 = w.len() as f64 / mm4 / 1e9;
        // Prefill-sized: 512 prompt tokens.
        let rows_big = 512.min(rows);
        let mm = time(
            || gemm(t, n, black_box(&w), 0..rows_big, &x, ncols, &mut y),
            0.5,
        );
        let gmacs512 = (rows_big * ncols * n) as f64 / mm / 1e9;
        let refv = time(
            || reference::gemm(t, n, black_box(&w), 0..256, &x[..xb], 1, &mut y),
            0.3,
        );
        let ref_gbs = (256 * row_bytes(t, n)) as f64 / refv / 1e9;
        println!(
            "{:5} gemv {rows}x{n}: {:7.3} ms  {:6.2} GB/s | 4 / 8 columns {:6.2} / {:6.2} GB/s | gemm {rows_small}x{n}x{ncols64}: {:6.2} GMAC/s | {rows_big}x{n}x{ncols}: {:6.2} GMAC/s | scalar gemv {:5.2} GB/s",
            t.name(),
            gemv * 1e3,
            gbs,
            gbs4,
            gbs8,
            gmacs,
            gmacs512,
            ref_gbs
        );
    }
    let n = 8192;
    let q = data(n, 1);
    let v: Vec<half::f16> = data(n, 2).iter().map(|&f| half::f16::from_f32(f)).collect();
    let dt = time(
        || {
            black_box(hearth_kernels::dot_f32_f16(black_box(&q), &v));
        },
        0.2,
    );
    println!(
        "dot_f32_f16 n={n}: {:.2} GB/s of f16",
        (2 * n) as f64 / dt / 1e9
    );
    let mut xs = data(n, 4);
    let up = data(n, 5);
    let dt = time(
        || hearth_kernels::silu_mul_inplace(black_box(&mut xs), &up),
        0.2,
    );
    println!("silu_mul n={n}: {:.2} ns/elem", dt / n as f64 * 1e9);
    let mut xq = vec![0u8; row_bytes(GgmlType::Q8_0, n)];
    let dt = time(|| quantize_row(GgmlType::Q8_0, black_box(&q), &mut xq), 0.2);
    println!("quantize Q8_0 n={n}: {:.2} ns/elem", dt / n as f64 * 1e9);
    let mut xk = vec![0u8; row_bytes(GgmlType::Q8_K, n)];
    let dt = time(|| quantize_row(GgmlType::Q8_K, black_box(&q), &mut xk), 0.2);
    println!("quantize Q8_K n={n}: {:.2} ns/elem", dt / n as f64 * 1e9);
}
