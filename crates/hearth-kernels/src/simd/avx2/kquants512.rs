//! GEMM for the K-quant weights Q4_K, Q5_K and Q6_K (Q8_K activations) on
//! CPUs with AVX-512 F/BW and VNNI, chosen at run time over the per-row AVX2
//! kernels (`kquants`) past eight columns: prompt prefill of Gemma 3's
//! K-quant layers (batched decode stays per row, where decoding every row
//! into scratch costs more than it saves).
//!
//! The reference (`formats::q4_k`, `q5_k`, `q6_k`) takes each super-block
//! as one exact integer sum followed by one float update. Integers are
//! exact in any order, so only they are computed differently here; the
//! float update is the reference's own multiplies, subtraction and add, for
//! sixteen (row, column) pairs at once, lane by lane. Bit for bit.
//!
//! - Each weight row is decoded once per row tile into sixteen-bit products
//!   of quant and sub-block scale in element order, 32 per register (Q6_K:
//!   `(q - 32) * scale`, so its offset needs no `bsums` term); each
//!   activation column once per call into sixteen-bit quants. A super-block
//!   is then eight `vpdpwssd` per (row, column), where the AVX2 path spends
//!   `maddubs`, `madd` and an add on every 32 elements. Nothing overflows:
//!   `|q * scale|` is at most 15 * 63 (Q4_K), 31 * 63 (Q5_K) or 32 * 128
//!   (Q6_K), `|x|` at most 128, and 256 of their products stay far inside
//!   i32.
//! - Q4_K and Q5_K's minimum term `sum_g bsums[g] * m[g / 2]` is taken as
//!   `sum_j m[j] * (bsums[2j] + bsums[2j + 1])`, the same integer.
//! - The tile is four rows by four columns: sixteen accumulators, each
//!   decoded weight register used for four columns and each activation
//!   register for four rows. Per super-block the sixteen sums are reduced
//!   together into one register (lane `4 * row + column`), where the float
//!   update runs.
//!
//! It owns no format knowledge beyond the block layouts it decodes; the
//! arithmetic it must reproduce lives in `formats`.

use super::kquants::q6_k_half;
use super::{f16_at_end, f16x2_at, f32_at, load128, load256};
use crate::formats::{q4_k, q5_k, q6_k, q8_k};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

/// The formats, as the const parameter of [`gemm`].
pub(crate) const Q4_K: u8 = 0;
pub(crate) const Q5_K: u8 = 1;
pub(crate) const Q6_K: u8 = 2;

/// Sixteen-bit registers per super-block (256 elements, 32 per register).
const REGS: usize = 8;

static AVAILABLE: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU can run [`gemm`] (AVX-512 F, BW, VNNI) and
/// `HEARTH_KERNELS=avx2` did not ask for the AVX2 kernels only.
pub(crate) fn available() -> bool {
    match AVAILABLE.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let forced_avx2 =
                std::env::var("HEARTH_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("avx2"));
            let yes = !forced_avx2
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni");
            AVAILABLE.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
    }
}

/// Per-thread buffers, grown on first use and then reused.
struct Scratch {
    /// Decoded weights: [`REGS`] registers per (tile row, super-block).
    wq: Vec<__m512i>,
    /// Per (row quad, super-block): lane `4r + c` holds `d` of the quad's
    /// row `r` (for every `c`).
    wd: Vec<__m512>,
    /// The same for `dmin` (Q4_K, Q5_K).
    wm: Vec<__m512>,
    /// Per (row quad, super-block): the quad's four rows' eight 6-bit
    /// minimums as i16, row `r` in words `8r..8r + 8` (Q4_K, Q5_K).
    mins: Vec<__m512i>,
    /// Activation quants as i16: [`REGS`] registers per (column, super-block).
    xq: Vec<__m512i>,
    /// Per (column group, super-block): the group's four `d_x`.
    xd: Vec<__m128>,
    /// Per (column, super-block): `bsums[2j] + bsums[2j + 1]`, eight i16.
    xb: Vec<__m128i>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            wq: Vec::new(),
            wd: Vec::new(),
            wm: Vec::new(),
            mins: Vec::new(),
            xq: Vec::new(),
            xd: Vec::new(),
            xb: Vec::new(),
        })
    };
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) {
    if v.len() < len {
        v.resize(len, zero);
    }
}

/// Block bytes of format `F`.
const fn block_bytes(f: u8) -> usize {
    match f {
        Q4_K => q4_k::BYTES,
        Q5_K => q5_k::BYTES,
        _ => q6_k::BYTES,
    }
}

/// Rows decoded per tile: about 128 KiB of decoded weights (L2-resident
/// while every column group sweeps over it), a multiple of four, 4..=64.
fn tile_rows(nb: usize) -> usize {
    ((128 * 1024 / (REGS * 64 * nb.max(1))) & !3).clamp(4, 64)
}

/// All `ncols` columns of `gemm` for format `F` (`nb` super-blocks per row).
///
/// # Safety
/// avx2, fma, f16c, avx512f, avx512bw and avx512vnni must be available
/// ([`available`]); `w` must hold rows up to `rows.end`, `x` `ncols`
/// activation rows, and `y` must be writable at `c * ldy + i` for every
/// column `c` and `i < rows.len()` (the caller checked).
pub(crate) unsafe fn gemm<const F: u8>(
    nb: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
) {
    let wb = nb * block_bytes(F);
    let xb = nb * q8_k::BYTES;
    debug_assert!(w.len() >= rows.end * wb && x.len() >= ncols * xb);
    let nr = rows.len();
    if nr == 0 || ncols == 0 || nb == 0 {
        return;
    }
    let groups = ncols.div_ceil(4);
    let tr = tile_rows(nb).min(nr.next_multiple_of(4));
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        grow(&mut s.wq, tr * nb * REGS, _mm512_setzero_si512());
        grow(&mut s.wd, tr / 4 * nb, _mm512_setzero_ps());
        grow(&mut s.wm, tr / 4 * nb, _mm512_setzero_ps());
        grow(&mut s.mins, tr / 4 * nb, _mm512_setzero_si512());
        grow(&mut s.xq, groups * 4 * nb * REGS, _mm512_setzero_si512());
        grow(&mut s.xd, groups * nb, _mm_setzero_ps());
        grow(&mut s.xb, groups * 4 * nb, _mm_setzero_si128());
        // SAFETY: columns `c < ncols` are inside `x` (caller); the scratch
        // was grown for `groups * 4` columns and `tr` rows above.
        unsafe {
            for c in 0..groups * 4 {
                let col = (c < ncols).then(|| x.as_ptr().add(c * xb));
                prepare_column(nb, col, c, s);
            }
            let w = w.as_ptr();
            let mut r0 = rows.start;
            while r0 < rows.end {
                let r1 = (r0 + tr).min(rows.end);
                let quads = (r1 - r0).div_ceil(4);
                for k in 0..quads * 4 {
                    let row = (r0 + k < r1).then(|| w.add((r0 + k) * wb));
                    decode_row::<F>(nb, row, k, s);
                }
                for g in 0..groups {
                    for q in 0..quads {
                        let v = tile::<F>(nb, s, q, g);
                        let mut out = [0f32; 16];
                        _mm512_storeu_ps(out.as_mut_ptr(), v);
                        for r in 0..4.min(r1 - r0 - 4 * q) {
                            let row = r0 + 4 * q + r - rows.start;
                            for c in 0..4.min(ncols - 4 * g) {
                                *y.add((4 * g + c) * ldy + row) = out[4 * r + c];
                            }
                        }
                    }
                }
                r0 = r1;
            }
        }
    });
}

/// Rewrites activation column `c` (`None`: a padding column, all zeros)
/// into the scratch.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn prepare_column(nb: usize, col: Option<*const u8>, c: usize, s: &mut Scratch) {
    let (g, cc) = (c / 4, c % 4);
    for i in 0..nb {
        let q = s.xq.as_mut_ptr().add((c * nb + i) * REGS);
        let d = (s.xd.as_mut_ptr().add(g * nb + i) as *mut f32).add(cc);
        let b = s.xb.as_mut_ptr().add(c * nb + i);
        let Some(p) = col else {
            for j in 0..REGS {
                *q.add(j) = _mm512_setzero_si512();
            }
            *d = 0.0;
            *b = _mm_setzero_si128();
            continue;
        };
        let p = p.add(i * q8_k::BYTES);
        for j in 0..REGS {
            *q.add(j) = _mm512_cvtepi8_epi16(load256(p.add(q8_k::QS + 32 * j)));
        }
        *d = f32_at(p);
        // Pairwise sums of the sixteen bsums (each |bsum| <= 2048: exact).
        let bs = p.add(q8_k::BSUMS);
        *b = _mm_hadd_epi16(load128(bs), load128(bs.add(16)));
    }
}

/// Decodes tile row `k` (`None`: a padding row, all zeros) into the scratch.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn decode_row<const F: u8>(nb: usize, row: Option<*const u8>, k: usize, s: &mut Scratch) {
    let (quad, r) = (k / 4, k % 4);
    for i in 0..nb {
        let q = s.wq.as_mut_ptr().add((k * nb + i) * REGS);
        let wd = (s.wd.as_mut_ptr().add(quad * nb + i) as *mut f32).add(4 * r);
        let wm = (s.wm.as_mut_ptr().add(quad * nb + i) as *mut f32).add(4 * r);
        let mins = (s.mins.as_mut_ptr().add(quad * nb + i) as *mut i16).add(8 * r);
        let Some(p) = row else {
            for j in 0..REGS {
                *q.add(j) = _mm512_setzero_si512();
            }
            for l in 0..4 {
                *wd.add(l) = 0.0;
                *wm.add(l) = 0.0;
            }
            for l in 0..8 {
                *mins.add(l) = 0;
            }
            continue;
        };
        let p = p.add(i * block_bytes(F));
        let (d, dmin, m) = match F {
            Q6_K => (decode_q6_k(p, q), 0.0, [0u8; 8]),
            _ => decode_q45_k::<F>(p, q),
        };
        for l in 0..4 {
            *wd.add(l) = d;
            *wm.add(l) = dmin;
        }
        for (l, &m) in m.iter().enumerate() {
            *mins.add(l) = m as i16;
        }
    }
}

/// One Q4_K / Q5_K super-block at `p` into eight registers at `q`
/// (`q * sc[j]`, sub-block `j` in register `j`); returns `d`, `dmin` and
/// the eight minimums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn decode_q45_k<const F: u8>(p: *const u8, q: *mut __m512i) -> (f32, f32, [u8; 8]) {
    let (sc, m) = q4_k::scales_mins(std::slice::from_raw_parts(p.add(4), 12));
    let qs = if F == Q5_K { q5_k::QS } else { q4_k::QS };
    let m4 = _mm256_set1_epi8(0x0F);
    let m1 = _mm256_set1_epi8(1);
    let qh = if F == Q5_K {
        load256(p.add(q5_k::QH))
    } else {
        _mm256_setzero_si256()
    };
    for c in 0..4 {
        let b = load256(p.add(qs + 32 * c));
        let mut lo = _mm256_and_si256(b, m4);
        let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(b), m4);
        if F == Q5_K {
            // Sub-block j's fifth bits are bit j of `qh`.
            let bit = |j: i32| _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(j)), m1);
            lo = _mm256_or_si256(lo, _mm256_slli_epi16::<4>(bit(2 * c as i32)));
            hi = _mm256_or_si256(hi, _mm256_slli_epi16::<4>(bit(2 * c as i32 + 1)));
        }
        let scaled = |v: __m256i, s: u8| {
            _mm512_mullo_epi16(_mm512_cvtepu8_epi16(v), _mm512_set1_epi16(s as i16))
        };
        *q.add(2 * c) = scaled(lo, sc[2 * c]);
        *q.add(2 * c + 1) = scaled(hi, sc[2 * c + 1]);
    }
    let dm = f16x2_at(p);
    (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_movehdup_ps(dm)), m)
}

/// One Q6_K super-block at `p` into eight registers at `q`
/// (`(q - 32) * sc`, elements `32j..32j + 32` in register `j`, whose two
/// sixteen-element sub-blocks have scales `2j` and `2j + 1`); returns `d`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn decode_q6_k(p: *const u8, q: *mut __m512i) -> f32 {
    let sc16 = _mm512_castsi256_si512(_mm256_cvtepi8_epi16(load128(p.add(q6_k::SCALES))));
    let offset = _mm512_set1_epi16(32);
    for h in 0..2 {
        let u = q6_k_half(p, h);
        for (s, &u) in u.iter().enumerate() {
            let j = 4 * h + s;
            // Words 0..16 take scale 2j, words 16..32 scale 2j + 1.
            let idx = _mm512_or_si512(
                _mm512_set1_epi16(2 * j as i16),
                _mm512_srli_epi16::<4>(_mm512_set_epi16(
                    31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17, 16, 15, 14, 13, 12,
                    11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
                )),
            );
            let sc = _mm512_permutexvar_epi16(idx, sc16);
            let v = _mm512_sub_epi16(_mm512_cvtepu8_epi16(u), offset);
            *q.add(j) = _mm512_mullo_epi16(v, sc);
        }
    }
    f16_at_end(p.add(q6_k::D))
}

/// Lane `i` = the (wrapping) sum of the sixteen lanes of `v[i]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn hsum16(v: &[__m512i; 16]) -> __m512i {
    // Per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3].
    let t: [__m512i; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[2 * k], v[2 * k + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    });
    // Per 128-bit lane: that lane's sums of v[4k..4k + 4].
    let u: [__m512i; 4] = std::array::from_fn(|k| {
        let (a, b) = (t[2 * k], t[2 * k + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    let halves = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(a, b),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(a, b),
        )
    };
    halves(halves(u[0], u[1]), halves(u[2], u[3]))
}

/// Lane `4r + c` = `sum_j m[r][j] * b[c][j]` for the quad's minimums and
/// the group's pair-summed bsums (super-block `i`).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn min_sums(s: &Scratch, nb: usize, quad: usize, g: usize, i: usize) -> __m512i {
    let m = *s.mins.as_ptr().add(quad * nb + i);
    let v: [__m512i; 4] = std::array::from_fn(|c| {
        let b = *s.xb.as_ptr().add((4 * g + c) * nb + i);
        _mm512_madd_epi16(m, _mm512_broadcast_i32x4(b))
    });
    let pair = |a: __m512i, b: __m512i| {
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    };
    let (a, b) = (pair(v[0], v[1]), pair(v[2], v[3]));
    _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
}

/// The four rows of `quad` against column group `g`: lane `4r + c` is the
/// reference's `sumf` for row `r`, column `c`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const F: u8>(nb: usize, s: &Scratch, quad: usize, g: usize) -> __m512 {
    let mut sumf = _mm512_setzero_ps();
    let wq = s.wq.as_ptr();
    let xq = s.xq.as_ptr();
    for i in 0..nb {
        let mut acc = [_mm512_setzero_si512(); 16];
        for j in 0..REGS {
            let w: [__m512i; 4] =
                std::array::from_fn(|r| *wq.add(((4 * quad + r) * nb + i) * REGS + j));
            for c in 0..4 {
                let x = *xq.add(((4 * g + c) * nb + i) * REGS + j);
                for r in 0..4 {
                    acc[4 * r + c] = _mm512_dpwssd_epi32(acc[4 * r + c], w[r], x);
                }
            }
        }
        let isum = _mm512_cvtepi32_ps(hsum16(&acc));
        let xd = _mm512_broadcast_f32x4(*s.xd.as_ptr().add(g * nb + i));
        let d = _mm512_mul_ps(*s.wd.as_ptr().add(quad * nb + i), xd);
        let t = if F == Q6_K {
            // q3_k::accumulate: sumf + (wd * xd) * isum.
            _mm512_mul_ps(d, isum)
        } else {
            // q4_k::accumulate: sumf + (d * isum - dmin * summs).
            let dmin = _mm512_mul_ps(*s.wm.as_ptr().add(quad * nb + i), xd);
            let summs = _mm512_cvtepi32_ps(min_sums(s, nb, quad, g, i));
            _mm512_sub_ps(_mm512_mul_ps(d, isum), _mm512_mul_ps(dmin, summs))
        };
        sumf = _mm512_add_ps(sumf, t);
    }
    sumf
}
