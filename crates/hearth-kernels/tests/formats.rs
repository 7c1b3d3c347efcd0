//! Scalar reference checks for every block format: bit layouts against
//! hand-built blocks, quantise/dequantise round trips, and the reference dot
//! products against a float dot product of the dequantised rows.

mod common;

use common::*;
use hearth_kernels::{reference, row_bytes, vec_dot_type, GgmlType, Rows};

fn deq(t: GgmlType, b: &[u8]) -> Vec<f32> {
    let n = b.len() / t.type_size() * t.block_size();
    dequantized(t, b, n)
}

#[test]
fn block_sizes_match_gguf() {
    for t in GgmlType::ALL {
        let n = t.block_size() * 3;
        assert_eq!(row_bytes(t, n), 3 * t.type_size(), "{t}");
    }
}

#[test]
fn hand_built_q4_0() {
    let mut b = vec![0u8; 18];
    b[0..2].copy_from_slice(&f16_bits(0.5));
    b[2] = 0x1F;
    b[2 + 15] = 0x80;
    let v = deq(GgmlType::Q4_0, &b);
    assert_eq!(v[0], 3.5);
    assert_eq!(v[16], -3.5);
    assert_eq!(v[15], -4.0);
    assert_eq!(v[31], 0.0);
    assert_eq!(v[1], -4.0); // nibble 0
}

#[test]
fn hand_built_q4_1() {
    let mut b = vec![0u8; 20];
    b[0..2].copy_from_slice(&f16_bits(0.25));
    b[2..4].copy_from_slice(&f16_bits(-1.0));
    b[4 + 3] = 0xA5;
    let v = deq(GgmlType::Q4_1, &b);
    assert_eq!(v[3], 0.25);
    assert_eq!(v[19], 1.5);
    assert_eq!(v[0], -1.0);
}

#[test]
fn hand_built_q5_0() {
    let mut b = vec![0u8; 22];
    b[0..2].copy_from_slice(&f16_bits(1.0));
    b[2..6].copy_from_slice(&((1u32 << 0) | (1u32 << 17)).to_le_bytes());
    b[6] = 0x32;
    let v = deq(GgmlType::Q5_0, &b);
    assert_eq!(v[0], 2.0);
    assert_eq!(v[16], -13.0);
    assert_eq!(v[1], -16.0);
    assert_eq!(v[17], 0.0);
}

#[test]
fn hand_built_q5_1() {
    let mut b = vec![0u8; 24];
    b[0..2].copy_from_slice(&f16_bits(0.5));
    b[2..4].copy_from_slice(&f16_bits(1.0));
    b[4..8].copy_from_slice(&(1u32 << 31).to_le_bytes());
    b[8 + 15] = 0xF0;
    let v = deq(GgmlType::Q5_1, &b);
    assert_eq!(v[15], 1.0);
    assert_eq!(v[31], 16.5);
    assert_eq!(v[30], 1.0);
}

#[test]
fn hand_built_q8_0_q8_1() {
    let mut b = vec![0u8; 34];
    b[0..2].copy_from_slice(&f16_bits(2.0));
    b[2 + 5] = (-3i8) as u8;
    let v = deq(GgmlType::Q8_0, &b);
    assert_eq!(v[5], -6.0);
    let mut b = vec![0u8; 36];
    b[0..2].copy_from_slice(&f16_bits(0.5));
    b[2..4].copy_from_slice(&f16_bits(99.0));
    b[4 + 31] = 127;
    let v = deq(GgmlType::Q8_1, &b);
    assert_eq!(v[31], 63.5);
    assert_eq!(v[0], 0.0);
}

#[test]
fn hand_built_q2_k() {
    let mut b = vec![0u8; 84];
    b[0] = 0x21; // sub-block 0: scale 1, min 2
    b[2] = 0x15; // sub-block 2: scale 5, min 1
    b[6] = 0x0F; // sub-block 6: scale 15, min 0
    b[9] = 0x32; // sub-block 9: scale 2, min 3
    b[16] = 0xE4; // elements 0, 32, 64, 96 = 0, 1, 2, 3
    b[16 + 32 + 16] = 0x01; // element 144 = 1
    b[80..82].copy_from_slice(&f16_bits(1.0));
    b[82..84].copy_from_slice(&f16_bits(0.5));
    let v = deq(GgmlType::Q2_K, &b);
    assert_eq!(v[0], -1.0);
    assert_eq!(v[32], 4.5);
    assert_eq!(v[64], 0.0);
    assert_eq!(v[96], 45.0);
    assert_eq!(v[144], 0.5);
    assert_eq!(v[145], -1.5);
}

#[test]
fn hand_built_q3_k() {
    let mut b = vec![0u8; 110];
    // scales at 96..108: sub-block 0 stored 33 (=+1), 15 stored 63 (=+31), rest 0 (=-32)
    b[96] = 0x01;
    b[96 + 8] = 0x02;
    b[96 + 7] = 0xF0;
    b[96 + 11] = 0xC0;
    b[108..110].copy_from_slice(&f16_bits(0.5));
    b[32] = 0x03; // element 0: q2 = 3
    b[0] = 0x01; // element 0: high bit set
    b[32 + 32 + 16] = 0x01; // element 144: q2 = 1
    b[16] = 0x10; // element 144: high bit (bit 4 of hmask[16])
    b[32 + 63] = 0x80; // element 255: q2 = 2, high bit clear
    let v = deq(GgmlType::Q3_K, &b);
    assert_eq!(v[0], 1.5);
    assert_eq!(v[1], -2.0);
    assert_eq!(v[144], -16.0);
    assert_eq!(v[255], -31.0);
    assert_eq!(v[16], 64.0); // sub-block 1: scale -32, q = -4
}

fn q4k_scales(b: &mut [u8]) {
    b[0..2].copy_from_slice(&f16_bits(1.0));
    b[2..4].copy_from_slice(&f16_bits(0.5));
    b[4] = 10 | (1 << 6); // sc0 = 10, top bits of sc4 = 1
    b[4 + 4] = 3; // m0 = 3
    b[4 + 9] = 0x72; // sc5 low = 2, m5 low = 7
    b[4 + 1] = 0x80; // sc1 = 0, top bits of sc5 = 2
    b[4 + 5] = 0x40; // m1 = 0, top bits of m5 = 1
}

#[test]
fn hand_built_q4_k() {
    let mut b = vec![0u8; 144];
    q4k_scales(&mut b);
    b[16] = 0x0F; // element 0 = 15, element 32 = 0
    b[16 + 64] = 0x90; // element 160 = 9
    let v = deq(GgmlType::Q4_K, &b);
    assert_eq!(v[0], 148.5);
    assert_eq!(v[32], 0.0);
    assert_eq!(v[160], 294.5);
    assert_eq!(v[128], 0.0); // sub-block 4: scale 16, min 0, q 0
}

#[test]
fn hand_built_q5_k() {
    let mut b = vec![0u8; 176];
    q4k_scales(&mut b);
    b[48] = 0x0F;
    b[48 + 64] = 0x90;
    b[16] = 0x20; // element 160 gets +16
    b[16 + 1] = 0x01; // element 1 gets +16
    b[48 + 1] = 0x01;
    let v = deq(GgmlType::Q5_K, &b);
    assert_eq!(v[0], 148.5);
    assert_eq!(v[160], 838.5);
    assert_eq!(v[1], 168.5);
}

#[test]
fn hand_built_q6_k() {
    let mut b = vec![0u8; 210];
    b[192] = 2;
    b[192 + 5] = (-3i8) as u8;
    b[192 + 15] = 127;
    b[208..210].copy_from_slice(&f16_bits(0.25));
    b[0] = 0x0F;
    b[128] = 0x03;
    b[16] = 0x50;
    b[128 + 16] = 0x20;
    b[128 + 63] = 0x40;
    let v = deq(GgmlType::Q6_K, &b);
    assert_eq!(v[0], 15.5);
    assert_eq!(v[64], 0.0);
    assert_eq!(v[80], -3.75);
    assert_eq!(v[255], -508.0);
}

#[test]
fn hand_built_q8_k_and_floats() {
    let mut b = vec![0u8; 292];
    b[0..4].copy_from_slice(&0.5f32.to_le_bytes());
    b[4 + 7] = (-100i8) as u8;
    let v = deq(GgmlType::Q8_K, &b);
    assert_eq!(v[7], -50.0);
    assert_eq!(
        deq(GgmlType::F16, &[0x00, 0x3C, 0x00, 0xC0]),
        vec![1.0, -2.0]
    );
    assert_eq!(
        deq(GgmlType::BF16, &[0x80, 0x3F, 0x40, 0xC0]),
        vec![1.0, -3.0]
    );
    assert_eq!(deq(GgmlType::F32, &1.25f32.to_le_bytes()), vec![1.25]);
}

#[test]
fn q8_0_rounds_half_to_even_like_llama_cpp_x86() {
    let mut x = vec![0f32; 32];
    x[0] = 127.0; // d = 1 exactly
    x[1] = 2.5;
    x[2] = -2.5;
    x[3] = 0.5;
    x[4] = 3.5;
    let b = quantized(GgmlType::Q8_0, &x);
    assert_eq!(&b[0..2], &f16_bits(1.0));
    let q: Vec<i8> = b[2..].iter().map(|&v| v as i8).collect();
    assert_eq!(&q[..5], &[127, 2, -2, 0, 4]);
    let b = quantized(GgmlType::Q8_1, &x);
    assert_eq!(b[4 + 1] as i8, 2);
    let s: i32 = 127 + 2 - 2 + 4;
    assert_eq!(&b[2..4], &f16_bits(s as f32));
}

#[test]
fn q8_k_follows_the_signed_maximum() {
    let mut x = vec![0f32; 256];
    x[0] = -127.0;
    x[1] = 127.0;
    x[2] = 2.5;
    x[3] = 3.5;
    x[20] = -1.0;
    let b = quantized(GgmlType::Q8_K, &x);
    assert_eq!(f32::from_le_bytes(b[0..4].try_into().unwrap()), 1.0);
    let q: Vec<i8> = b[4..260].iter().map(|&v| v as i8).collect();
    assert_eq!(&q[..4], &[-127, 127, 2, 4]); // ties to even
    let bsum = |g: usize| i16::from_le_bytes([b[260 + 2 * g], b[261 + 2 * g]]);
    assert_eq!(bsum(0), 6);
    assert_eq!(bsum(1), -1);
    x[0] = 127.0;
    x[1] = -127.0;
    let b = quantized(GgmlType::Q8_K, &x);
    assert_eq!(f32::from_le_bytes(b[0..4].try_into().unwrap()), -1.0);
    assert_eq!(b[4 + 2] as i8, -2);
    let b = quantized(GgmlType::Q8_K, &[0.0; 256]);
    assert!(b.iter().all(|&v| v == 0));
}

#[test]
fn bf16_rounds_to_nearest_even() {
    // 1 + 2^-8 is halfway between two bf16 values: ties to the even one (1.0).
    let b = quantized(
        GgmlType::BF16,
        &[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, f32::NAN],
    );
    assert_eq!(&b[0..2], &[0x80, 0x3F]);
    assert_eq!(&b[2..4], &[0x82, 0x3F]);
    assert!(f32::from_bits((u16::from_le_bytes([b[4], b[5]]) as u32) << 16).is_nan());
}

/// Per-format bound on RMS(x - dequant(quant(x))) / RMS(x) for our data.
fn rt_bound(t: GgmlType) -> f64 {
    // Measured values on this data are about 70-90% of these bounds; the
    // occasional 8x outliers in `randn` inflate the block scales.
    match t {
        GgmlType::F32 => 0.0,
        GgmlType::F16 => 3e-4,
        GgmlType::BF16 => 3e-3,
        GgmlType::Q8_0 | GgmlType::Q8_1 => 0.012,
        GgmlType::Q8_K => 0.025,
        GgmlType::Q6_K => 0.035,
        GgmlType::Q5_1 | GgmlType::Q5_K => 0.065,
        GgmlType::Q5_0 => 0.1,
        GgmlType::Q4_1 | GgmlType::Q4_K => 0.13,
        GgmlType::Q4_0 => 0.18,
        GgmlType::Q3_K => 0.25,
        GgmlType::Q2_K => 0.5,
    }
}

#[test]
fn round_trip_error_is_bounded() {
    let mut r = rng(1);
    for t in GgmlType::ALL {
        let n = 256 * 4;
        let x = randn(&mut r, n, 1.0);
        let y = deq(t, &quantized(t, &x));
        let err: f64 = x
            .iter()
            .zip(&y)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum::<f64>();
        let norm: f64 = x.iter().map(|a| (*a as f64).powi(2)).sum::<f64>();
        let rel = (err / norm).sqrt();
        assert!(
            rel <= rt_bound(t),
            "{t}: relative RMS error {rel} > {}",
            rt_bound(t)
        );
        // and no element is wildly off
        let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = x
            .iter()
            .zip(&y)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= amax * (rt_bound(t) as f32 * 4.0 + 1e-6),
            "{t}: worst element error {worst}"
        );
    }
}

#[test]
fn round_trip_is_exact_on_representable_values() {
    // Values already on a format's grid must come back unchanged.
    let mut x = vec![0f32; 32];
    for (i, v) in x.iter_mut().enumerate() {
        *v = i as f32 - 16.0;
    }
    for t in [
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        assert_eq!(deq(t, &quantized(t, &x)), x, "{t}");
    }
    let z: Vec<f32> = (0..32).map(|i| 127.0 - 8.0 * i as f32).collect();
    assert_eq!(deq(GgmlType::Q8_0, &quantized(GgmlType::Q8_0, &z)), z);
    let y: Vec<f32> = (0..32).map(|i| (i % 16) as f32 - 8.0).collect();
    assert_eq!(deq(GgmlType::Q4_0, &quantized(GgmlType::Q4_0, &y)), y);
}

#[test]
fn zero_rows_stay_zero() {
    for t in GgmlType::ALL {
        let n = 512;
        let y = deq(t, &quantized(t, &vec![0.0; n]));
        assert!(y.iter().all(|&v| v == 0.0), "{t}");
    }
}

#[test]
fn reference_dot_matches_dequantised_dot() {
    let mut r = rng(2);
    for t in GgmlType::ALL {
        for k in 1..5 {
            let n = 256 * k;
            let w = quantized(t, &randn(&mut r, n, 0.7));
            let xt = vec_dot_type(t);
            let x = quantized(xt, &randn(&mut r, n, 3.0));
            let (wf, xf) = (deq(t, &w), deq(xt, &x));
            let mut exact: f64 = wf.iter().zip(&xf).map(|(a, b)| *a as f64 * *b as f64).sum();
            if matches!(t, GgmlType::Q4_1 | GgmlType::Q5_1) {
                // Q8_1 stores s = d * sum(q) rounded to f16, and the dot product
                // applies the weight minimum through it, so the reference value
                // must use the stored s too.
                let (wbs, xbs) = (t.type_size(), xt.type_size());
                for i in 0..n / 32 {
                    let m = f16_at(&w, i * wbs + 2) as f64;
                    let s = f16_at(&x, i * xbs + 2) as f64;
                    let sx: f64 = xf[32 * i..32 * i + 32].iter().map(|&v| v as f64).sum();
                    exact += m * (s - sx);
                }
            }
            let mag: f64 = wf
                .iter()
                .zip(&xf)
                .map(|(a, b)| (*a as f64 * *b as f64).abs())
                .sum();
            // Every float order (only Q4_K's and Q6_K's differ; see `Rows`).
            for form in Rows::ALL {
                let got = reference::vec_dot_rows(t, n, &w, &x, form) as f64;
                // The quantised dot differs from the float one only by f32
                // rounding of the scales' products and the accumulation.
                assert!(
                    (got - exact).abs() <= 1e-5 * mag + 1e-6,
                    "{t} n={n} {form:?}: {got} vs {exact} (mag {mag})"
                );
            }
        }
    }
}

#[test]
#[should_panic]
fn quantize_row_rejects_partial_blocks() {
    let mut b = vec![0u8; 18];
    reference::quantize_row(GgmlType::Q4_0, &[0.0; 31], &mut b);
}

#[test]
#[should_panic]
fn quantize_row_rejects_wrong_dst() {
    let mut b = vec![0u8; 17];
    reference::quantize_row(GgmlType::Q4_0, &[0.0; 32], &mut b);
}

#[test]
#[should_panic(expected = "output stride")]
fn gemm_strided_rejects_overlapping_columns() {
    let t = GgmlType::Q8_0;
    let w = vec![0u8; 4 * row_bytes(t, 32)];
    let x = vec![0u8; 2 * row_bytes(vec_dot_type(t), 32)];
    let mut y = vec![0f32; 8];
    // Two columns of four rows cannot sit three floats apart.
    // SAFETY: `y` is larger than any write the call could make.
    unsafe {
        hearth_kernels::gemm_strided(t, 32, &w, 0..4, &x, 2, y.as_mut_ptr(), 3, Rows::SINGLE)
    };
}
