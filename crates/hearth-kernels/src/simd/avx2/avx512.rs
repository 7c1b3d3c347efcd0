//! GEMM for the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1
//! weights) on CPUs with AVX-512 F/BW and VNNI, chosen at run time over the
//! AVX2 tiles (`gemm_tiles`) when those features are present: prefill, and
//! batched decode (two to eight columns go through `few_columns`, which
//! skips the tile scratch).
//!
//! It computes exactly the reference's `Lanes8` arithmetic, bit for bit:
//!
//! - Two consecutive blocks share one 512-bit register, interleaved by
//!   32-bit lane: lane `2k` is the even block's lane `k`, lane `2k + 1` the
//!   odd block's. The reference sends even blocks to float bank 0 and odd
//!   blocks to bank 1, so one `zmm` accumulator holds both banks and the
//!   final `bank0 + bank1` per lane, folded as `fold8`, is the reference's
//!   sum.
//! - `vpdpbusd` sums four `u8 x i8` products into each 32-bit lane: lane
//!   `k` of a block is the exact integer sum over elements `4k..4k+4`, the
//!   reference's partial sum, in one instruction instead of
//!   `maddubs` + `madd` (and without `maddubs`' 16-bit saturation).
//!   Signed weights meet the activations as `x + 128` (unsigned); the
//!   accumulator starts at `-128 * (w0 + w1 + w2 + w3)` per lane, computed
//!   once per weight block, so the lane ends at the exact `sum(w * x)`.
//!   Unsigned weights (Q4_1, Q5_1) meet the signed activations directly.
//! - Per block the lanes are converted, multiplied (fused) by
//!   `d_w * d_x` (one rounding, as in the reference) and added into the
//!   bank. Interleaving puts a pair's two products for one (row, column)
//!   side by side, so one multiply per row gives every column's products,
//!   and a 64-bit broadcast load hands each accumulator its own. A lone
//!   last block (odd block count) is paired with zero quants and a zero
//!   scale, which adds `+0` to bank 1: the reference's bank 1
//!   never holds `-0` (it starts at `+0` and round-to-nearest sums that
//!   cancel give `+0`), so the bits do not change.
//! - Formats with a minimum add `m_w * s_x` per block exactly as the AVX2
//!   tiles do (`gemm_tiles::min_sums`).
//!
//! Layout: per call, every activation column is rewritten once into
//! per-pair registers (quants, possibly offset, and its `d_x` pairs beside
//! those of its group's other columns); per row tile, every weight row is
//! decoded once into per-pair quants, correction start values and scales.
//! The inner tile is four rows by four columns: sixteen accumulators, each
//! weight register used for four columns and each activation register for
//! four rows. Batched decode (`few_columns`) decodes each row straight into
//! registers instead (`direct`).

use super::gemm_tiles::{decode, layout, Q4_1, Q8_0};
use super::{f16x2_at, load256, prefetch_row, FEW_COLUMNS_PREFETCH_BYTES};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU8, Ordering};

/// Columns per group and rows per inner tile.
const C: usize = 4;
const R: usize = 4;

static AVAILABLE: AtomicU8 = AtomicU8::new(0);

/// Whether this CPU has what these kernels need (AVX-512 F, BW, VNNI) and
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
    /// Weight quants of the row tile, one register per (row, pair).
    wq: Vec<__m512i>,
    /// `vpdpbusd` start values per (row, pair) (signed formats).
    wc: Vec<__m512i>,
    /// `[d_w, d_w'] x 8` per (row, pair).
    wd: Vec<__m512>,
    /// `[m_w; 4] ++ [m_w'; 4]` per (row, pair) (formats with a minimum).
    mw: Vec<__m256>,
    /// Activation quants per (group, pair, column), the pair's two blocks
    /// interleaved ([`interleave`]).
    xq: Vec<__m512i>,
    /// Per (group, pair): `d_x` of the group's column `c` for the even block
    /// in lane `2c`, for the odd block in lane `2c + 1`.
    xd: Vec<__m256>,
    /// `s_x` of the group's four columns for the pair's two blocks, per
    /// (group, pair) (formats with a minimum).
    sx: Vec<__m256>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            wq: Vec::new(),
            wc: Vec::new(),
            wd: Vec::new(),
            mw: Vec::new(),
            xq: Vec::new(),
            xd: Vec::new(),
            sx: Vec::new(),
        })
    };
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) {
    if v.len() < len {
        v.resize(len, zero);
    }
}

/// Rows decoded per tile: about 40 KiB of decoded weights (L1-resident
/// while the column groups stream over it), a multiple of four, 4..=64.
fn tile_rows(np: usize) -> usize {
    ((40 * 1024 / (192 * np.max(1))) & !(R - 1)).clamp(R, 64)
}

/// All `ncols` columns of `gemm` for format `F` (`nb` blocks per row).
///
/// # Safety
/// avx2, fma, f16c, avx512f, avx512bw and avx512vnni must be available
/// ([`available`]); `w` must hold rows up to `rows.end`, `x` `ncols`
/// activation rows, and `y` must be writable at `c * ldy + i` for every
/// column `c` and `i < rows.len()` (the caller checked).
pub(crate) unsafe fn gemm<const F: u8>(
    nb: usize,
    w: &[u8],
    rows: std::ops::Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
) {
    let (wbk, xbk, _, _, min) = layout(F);
    let (wb, xb) = (nb * wbk, nb * xbk);
    debug_assert!(w.len() >= rows.end * wb && x.len() >= ncols * xb);
    let nr = rows.len();
    if nr == 0 || ncols == 0 || nb == 0 {
        return;
    }
    let np = nb.div_ceil(2);
    let groups = ncols.div_ceil(C);
    let tr = tile_rows(np).min(nr.next_multiple_of(R));
    if ncols <= 2 * C {
        // The rows `few_columns` reaches before its own prefetches have
        // run ahead, asked for now so that they arrive while the columns
        // are prepared.
        let ahead = FEW_COLUMNS_PREFETCH_BYTES.div_ceil(wb.max(1));
        let first = rows.start * wb..(rows.start + ahead).min(rows.end) * wb;
        crate::prefetch(&w[first]);
    }
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        grow(&mut s.wq, tr * np, _mm512_setzero_si512());
        grow(&mut s.wc, tr * np, _mm512_setzero_si512());
        grow(&mut s.wd, tr * np, _mm512_setzero_ps());
        grow(&mut s.xq, groups * np * C, _mm512_setzero_si512());
        grow(&mut s.xd, groups * np, _mm256_setzero_ps());
        if min {
            grow(&mut s.mw, tr * np, _mm256_setzero_ps());
            grow(&mut s.sx, groups * np, _mm256_setzero_ps());
        }
        // SAFETY: every column `c < ncols` is inside `x` (caller); the
        // scratch holds `groups * C` columns of `np` pairs (grown above).
        unsafe {
            for c in 0..groups * C {
                let col = (c < ncols).then(|| x.as_ptr().add(c * xb));
                prepare_column::<F>(nb, col, c, s);
            }
        }
        // SAFETY: as documented for this function; the scratch was grown
        // for `tr` rows and `groups` column groups above.
        unsafe {
            if ncols <= 2 * C {
                few_columns::<F>(nb, w, rows, ncols, y, ldy, s)
            } else {
                rows_and_groups::<F>(nb, w, rows, ncols, y, ldy, tr, s)
            }
        };
    });
}

/// The row tiles of [`gemm`]: decode a tile, then run every column group
/// over it four rows at a time (one row at a time for the last few).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn rows_and_groups<const F: u8>(
    nb: usize,
    w: &[u8],
    rows: std::ops::Range<usize>,
    ncols: usize,
    y: *mut f32,
    ldy: usize,
    tr: usize,
    s: &mut Scratch,
) {
    let (wbk, _, _, _, _) = layout(F);
    let wb = nb * wbk;
    let np = nb.div_ceil(2);
    let groups = ncols.div_ceil(C);
    let w = w.as_ptr();
    let mut r0 = rows.start;
    while r0 < rows.end {
        let r1 = (r0 + tr).min(rows.end);
        for r in r0..r1 {
            decode_row::<F>(nb, w.add(r * wb), r - r0, s);
        }
        for g in 0..groups {
            let cn = C.min(ncols - g * C);
            let (xq, xd) = (s.xq.as_ptr().add(g * np * C), s.xd.as_ptr().add(g * np));
            let sx = s.sx.as_ptr().add(if layout(F).4 { g * np } else { 0 });
            let mut r = r0;
            while r < r1 {
                let k = r - r0;
                let a = Rows {
                    wq: s.wq.as_ptr().add(k * np),
                    wc: s.wc.as_ptr().add(k * np),
                    wd: s.wd.as_ptr().add(k * np),
                    mw: s.mw.as_ptr().add(if layout(F).4 { k * np } else { 0 }),
                };
                let out = y.add(g * C * ldy + (r - rows.start));
                if r + R <= r1 {
                    let v = tile::<F, R>(np, &a, xq, xd, sx);
                    store::<R>(out, ldy, cn, &v);
                    r += R;
                } else {
                    let v = tile::<F, 1>(np, &a, xq, xd, sx);
                    store::<1>(out, ldy, cn, &v);
                    r += 1;
                }
            }
        }
        r0 = r1;
    }
}

/// Decoded rows in the tile scratch (stride `np` pairs per row).
struct Rows {
    wq: *const __m512i,
    wc: *const __m512i,
    wd: *const __m512,
    mw: *const __m256,
}

/// Writes `N` rows by `cn` columns of results (`y` stride `ldy` per column).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn store<const N: usize>(y: *mut f32, ldy: usize, cn: usize, v: &[[f32; C]; N]) {
    for (i, row) in v.iter().enumerate() {
        for (c, &x) in row.iter().enumerate().take(cn) {
            *y.add(c * ldy + i) = x;
        }
    }
}

/// Rewrites activation column `c` (`None`: a padding column, all zeros)
/// into the scratch: per pair its quants (plus 128 for signed-weight
/// formats) with the two blocks interleaved, its two `d_x` in lanes `2c'`
/// and `2c' + 1` of its group's scale register (`c'` its place in the
/// group), and its two `s_x` in lanes `c'` and `4 + c'` of the group's.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn prepare_column<const F: u8>(
    nb: usize,
    col: Option<*const u8>,
    c: usize,
    s: &mut Scratch,
) {
    let (_, xbk, xq, signed, min) = layout(F);
    let np = nb.div_ceil(2);
    let (g, cc) = (c / C, c % C);
    let bias = _mm256_set1_epi8(-128);
    for j in 0..np {
        let mut q = [_mm256_setzero_si256(); 2];
        let mut d = [0f32; 2];
        let mut m = [0f32; 2];
        if let Some(p) = col {
            for h in 0..2 {
                let i = 2 * j + h;
                if i >= nb {
                    continue;
                }
                let b = p.add(i * xbk);
                let v = load256(b.add(xq));
                q[h] = if signed { _mm256_xor_si256(v, bias) } else { v };
                let ds = f16x2_at(b);
                d[h] = _mm_cvtss_f32(ds);
                m[h] = _mm_cvtss_f32(_mm_movehdup_ps(ds));
            }
        }
        s.xq[(g * np + j) * C + cc] = interleave(q[0], q[1]);
        let xd = &mut *(s.xd.as_mut_ptr().add(g * np + j) as *mut [f32; 8]);
        xd[2 * cc] = d[0];
        xd[2 * cc + 1] = d[1];
        if min {
            let v = &mut *(s.sx.as_mut_ptr().add(g * np + j) as *mut [f32; 8]);
            v[cc] = m[0];
            v[C + cc] = m[1];
        }
    }
}

/// `[a0, b0, a1, b1, ..., a7, b7]` in 32-bit lanes: two blocks' 4-byte
/// groups interleaved, so that lane `2k` carries lane `k` of the even
/// block's bank and lane `2k + 1` that of the odd block's.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn interleave(a: __m256i, b: __m256i) -> __m512i {
    _mm512_permutex2var_epi32(
        _mm512_castsi256_si512(a),
        _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23),
        _mm512_castsi256_si512(b),
    )
}

/// One pair of a weight row, decoded: the two blocks' quants in one
/// register, the `vpdpbusd` start value (signed formats; zero otherwise),
/// the scales, and `[m_w; 4] ++ [m_w'; 4]` (formats with a minimum; zero
/// otherwise). The two blocks are interleaved as [`interleave`] lays out
/// the activations: quants and start values by 32-bit lane, scales as
/// `[d_w, d_w'] x 8`.
#[derive(Clone, Copy)]
struct Pair {
    q: __m512i,
    c: __m512i,
    d: __m512,
    m: __m256,
}

/// Decodes pair `j` of the weight row at `w`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn decode_pair<const F: u8>(nb: usize, w: *const u8, j: usize) -> Pair {
    let (wbk, _, _, signed, min) = layout(F);
    if 2 * j + 1 < nb {
        match F {
            Q4_1 => return q4_1_pair(w.add(2 * j * wbk)),
            Q8_0 => return q8_0_pair(w.add(2 * j * wbk)),
            _ => {}
        }
    }
    let mut q = [_mm256_setzero_si256(); 2];
    let mut d = [0f32; 2];
    let mut m = [0f32; 2];
    for h in 0..2 {
        let i = 2 * j + h;
        if i >= nb {
            continue;
        }
        let p = w.add(i * wbk);
        q[h] = decode::<F>(p);
        let dm = f16x2_at(p);
        d[h] = _mm_cvtss_f32(dm);
        m[h] = _mm_cvtss_f32(_mm_movehdup_ps(dm));
    }
    let q = interleave(q[0], q[1]);
    let c = if signed {
        // -128 * (w0 + w1 + w2 + w3) per lane: exact in i32.
        let c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), q);
        _mm512_sub_epi32(_mm512_setzero_si512(), c)
    } else {
        _mm512_setzero_si512()
    };
    let m = if min {
        _mm256_setr_ps(m[0], m[0], m[0], m[0], m[1], m[1], m[1], m[1])
    } else {
        _mm256_setzero_ps()
    };
    // `[d, d']` as one 64-bit lane, in every 64-bit lane.
    let dd = (d[1].to_bits() as u64) << 32 | d[0].to_bits() as u64;
    Pair {
        q,
        c,
        d: _mm512_castsi512_ps(_mm512_set1_epi64(dd as i64)),
        m,
    }
}

/// A table of 32 words for `vpermw` / `vpsrlvw`: runs of `(start, step,
/// count)` (`start, start + step, ...`), one after another, zero after.
const fn word_table(runs: &[(u16, u16, usize)]) -> [u16; 32] {
    let mut t = [0u16; 32];
    let (mut i, mut r) = (0, 0);
    while r < runs.len() {
        let (start, step, count) = runs[r];
        let mut k = 0;
        while k < count {
            t[i] = start + step * k as u16;
            i += 1;
            k += 1;
        }
        r += 1;
    }
    t
}

/// Words 0..16 alternate `a, b`; then `tail`'s runs as [`word_table`]
/// lays them out, from word 16 on.
const fn alternating(a: u16, b: u16, tail: &[(u16, u16, usize)]) -> [u16; 32] {
    let runs = word_table(tail);
    let mut t = [0u16; 32];
    let mut i = 0;
    while i < 32 {
        t[i] = if i >= 16 {
            runs[i - 16]
        } else if i % 2 == 0 {
            a
        } else {
            b
        };
        i += 1;
    }
    t
}

/// Words of two 16-byte runs of quants, at word `a` and word `b`, read by
/// 32-bit lane as [`interleave`] lays out two blocks: lane `2k` takes words
/// `a + 2(k % 4)` and the next, lane `2k + 1` the same from `b`.
const fn interleaved_words(a: u16, b: u16) -> [u16; 32] {
    let mut t = [0u16; 32];
    let mut lane = 0;
    while lane < 16 {
        let base = if lane % 2 == 0 { a } else { b };
        let w = base + 2 * ((lane / 2) % 4) as u16;
        t[2 * lane] = w;
        t[2 * lane + 1] = w + 1;
        lane += 1;
    }
    t
}

/// A [`word_table`] in a register.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn words(t: &[u16; 32]) -> __m512i {
    _mm512_loadu_si512(t.as_ptr() as *const _)
}

/// Two whole Q4_1 blocks at `p` (40 bytes: `d, m, qs[16]` twice), decoded
/// with a handful of 512-bit shuffles instead of per-block scalar work, and
/// interleaved as [`decode_pair`] lays them out (the shuffles
/// can put them anywhere, so that costs nothing): batched decode
/// re-decodes every pair for each row, so this is most of the kernel's
/// cost beside the arithmetic. The results are the same bits as that
/// function's general path gives (f16 to f32 is exact either way).
///
/// The pair is read as 20 words: block 0 is words 0..10 (`d` word 0, `m`
/// word 1, quants words 2..10), block 1 words 10..20.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn q4_1_pair(p: *const u8) -> Pair {
    // Quants: 32-bit lane 2k is block 0's group k, 2k + 1 block 1's;
    // groups 0..4 are the low nibbles of quant bytes 4k.., groups 4..8
    // the high nibbles of bytes 4(k - 4).. (elements 16..32).
    const QUANTS: [u16; 32] = interleaved_words(2, 12);
    const SHIFTS: [u16; 32] = word_table(&[(0, 0, 16), (4, 0, 16)]);
    // Scales: `[d, d'] x 8` in words 0..16, `[m; 4] ++ [m'; 4]` in 16..24.
    const SCALES: [u16; 32] = alternating(0, 10, &[(1, 0, 4), (11, 0, 4)]);
    // SAFETY: the caller's pair holds both blocks, so the 20 words read are
    // inside the row; the masked-off rest of the register is not read.
    let v = _mm512_maskz_loadu_epi16(0xF_FFFF, p as *const i16);
    let q = _mm512_permutexvar_epi16(words(&QUANTS), v);
    let q = _mm512_and_si512(_mm512_srlv_epi16(q, words(&SHIFTS)), _mm512_set1_epi8(0x0F));
    let sc = _mm512_permutexvar_epi16(words(&SCALES), v);
    Pair {
        q,
        c: _mm512_setzero_si512(),
        d: _mm512_cvtph_ps(_mm512_castsi512_si256(sc)),
        m: _mm256_cvtph_ps(_mm512_extracti32x4_epi32::<2>(sc)),
    }
}

/// Two whole Q8_0 blocks at `p` (68 bytes: `d, qs[32]` twice): the quants
/// are two plain loads, interleaved; the two scales are widened to
/// `[d, d'] x 8` with one shuffle and one conversion. Same bits as
/// [`decode_pair`]'s general path.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn q8_0_pair(p: *const u8) -> Pair {
    const SCALES: [u16; 32] = alternating(0, 1, &[]);
    let q = interleave(load256(p.add(2)), load256(p.add(36)));
    // -128 * (w0 + w1 + w2 + w3) per lane, as in `decode_pair`.
    let c = _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8(-128), q);
    let c = _mm512_sub_epi32(_mm512_setzero_si512(), c);
    let bits = (p as *const u16).read_unaligned() as u32
        | ((p.add(34) as *const u16).read_unaligned() as u32) << 16;
    let ds = _mm512_permutexvar_epi16(
        words(&SCALES),
        _mm512_castsi128_si512(_mm_cvtsi32_si128(bits as i32)),
    );
    Pair {
        q,
        c,
        d: _mm512_cvtph_ps(_mm512_castsi512_si256(ds)),
        m: _mm256_setzero_ps(),
    }
}

/// Decodes one weight row into slot `k` of the tile scratch.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn decode_row<const F: u8>(nb: usize, w: *const u8, k: usize, s: &mut Scratch) {
    let (_, _, _, signed, min) = layout(F);
    let np = nb.div_ceil(2);
    for j in 0..np {
        let p = decode_pair::<F>(nb, w, j);
        if min {
            s.mw[k * np + j] = p.m;
        }
        s.wq[k * np + j] = p.q;
        if signed {
            s.wc[k * np + j] = p.c;
        }
        s.wd[k * np + j] = p.d;
    }
}

/// Few columns (concurrent decodes, at most two groups): each row's pairs
/// are decoded into registers and used at once for every column, instead
/// of going through the tile scratch, whose stores and reloads cost as
/// much as the arithmetic when there are only a few columns to share them.
/// The arithmetic per (row, column) is [`tile`]'s, in the same order
/// ([`direct`]).
///
/// Two rows at a time, for up to eight columns: since [`direct`] takes its
/// scale products from memory instead of multiplying per (row, column),
/// sixteen accumulators and two rows' decoded pairs fit in the 32
/// registers (measured, 1536 x 576, eight columns: Q4_1 4.4 -> 5.1 GB/s,
/// Q8_0 8.3 -> 9.9 GB/s over one row at a time with per-column
/// multiplies). Q4_1 and Q8_0 pairs, the formats of SmolLM2, are decoded
/// with whole-register shuffles ([`q4_1_pair`], [`q8_0_pair`]), and the
/// eight columns are folded together ([`fold_banks`]).
///
/// # Safety
/// As [`gemm`], with the columns prepared in `s` and `ncols <= 2 * C`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn few_columns<const F: u8>(
    nb: usize,
    w: &[u8],
    rows: std::ops::Range<usize>,
    ncols: usize,
    y: *mut f32,
    ldy: usize,
    s: &Scratch,
) {
    let wb = nb * layout(F).0;
    let w = w.as_ptr();
    let mut r = rows.start;
    while r < rows.end {
        let out = y.add(r - rows.start);
        let left = rows.end - r;
        let pair = left >= 2;
        for k in 0..1 + pair as usize {
            prefetch_row(w, wb, r + k, rows.end, FEW_COLUMNS_PREFETCH_BYTES);
        }
        let row = w.add(r * wb);
        r += match (ncols <= C, pair) {
            (true, true) => direct::<F, 2, 1>(nb, row, wb, s, out, ldy, ncols),
            (true, false) => direct::<F, 1, 1>(nb, row, wb, s, out, ldy, ncols),
            (false, true) => direct::<F, 2, 2>(nb, row, wb, s, out, ldy, ncols),
            (false, false) => direct::<F, 1, 2>(nb, row, wb, s, out, ldy, ncols),
        };
    }
}

/// `N` rows from `w` (stride `wb` bytes) against `G` groups of four
/// columns prepared by [`prepare_column`]; writes the first `ncols` columns
/// (`y` stride `ldy` per column) and returns `N`.
///
/// The arithmetic per (row, column) is [`tile`]'s, in the same order, with
/// the blocks interleaved: 32-bit lane `2k` of an accumulator is lane `k`
/// of bank 0, lane `2k + 1` lane `k` of bank 1. Then both of a pair's scale
/// products for column `c`, `d_w * d_x` of the even block and of the odd,
/// sit side by side, and one 64-bit broadcast from memory (a load, no
/// shuffle) gives the register that [`tile`] builds with a multiply per
/// (row, column): here one multiply per row gives all eight columns'
/// products, stored once and broadcast from there.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn direct<const F: u8, const N: usize, const G: usize>(
    nb: usize,
    w: *const u8,
    wb: usize,
    s: &Scratch,
    y: *mut f32,
    ldy: usize,
    ncols: usize,
) -> usize {
    let (_, _, _, signed, min) = layout(F);
    let np = nb.div_ceil(2);
    let (xq, xd, sx) = (s.xq.as_ptr(), s.xd.as_ptr(), s.sx.as_ptr());
    let mut acc = [[_mm512_setzero_ps(); 2 * C]; N];
    let mut macc = [[_mm256_setzero_ps(); G]; N];
    let mut products = [[_mm256_setzero_ps(); G]; N];
    let zero = Pair {
        q: _mm512_setzero_si512(),
        c: _mm512_setzero_si512(),
        d: _mm512_setzero_ps(),
        m: _mm256_setzero_ps(),
    };
    for j in 0..np {
        // A plain loop: `array::from_fn` here left a closure call per pair.
        let mut p = [zero; N];
        for (r, p) in p.iter_mut().enumerate() {
            *p = decode_pair::<F>(nb, w.add(r * wb), j);
        }
        for g in 0..G {
            let dx = _mm256_load_ps(xd.add(g * np + j) as *const f32);
            for r in 0..N {
                products[r][g] = _mm256_mul_ps(_mm512_castps512_ps256(p[r].d), dx);
            }
        }
        for c in 0..G * C {
            let (g, cc) = (c / C, c % C);
            let xv = _mm512_load_si512(xq.add((g * np + j) * C + cc) as *const _);
            for r in 0..N {
                let v = if signed {
                    _mm512_dpbusd_epi32(p[r].c, xv, p[r].q)
                } else {
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), p[r].q, xv)
                };
                let d = broadcast_pair((products[r].as_ptr().add(g) as *const f64).add(cc));
                acc[r][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(v), acc[r][c]);
            }
        }
        if min {
            for g in 0..G {
                let sv = _mm256_load_ps(sx.add(g * np + j) as *const f32);
                for r in 0..N {
                    macc[r][g] = _mm256_add_ps(macc[r][g], _mm256_mul_ps(p[r].m, sv));
                }
            }
        }
    }
    for r in 0..N {
        let mut mins = [_mm256_setzero_ps(); 2];
        mins[..G].copy_from_slice(&macc[r]);
        let v = fold_interleaved::<F>(&acc[r], mins);
        for (c, &v) in v.iter().enumerate().take(ncols) {
            *y.add(c * ldy + r) = v;
        }
    }
    N
}

/// The 64 bits at `p` in every 64-bit lane, loaded by the load port.
/// Written as `asm` because the compiler otherwise keeps [`direct`]'s
/// stored products in registers and builds each broadcast with a shuffle,
/// which competes with the arithmetic for the vector ports (measured: the
/// kernel ran at two thirds of the speed).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn broadcast_pair(p: *const f64) -> __m512 {
    let v: __m512;
    // SAFETY: the caller guarantees eight readable bytes at `p`; the asm
    // only loads them (no stores, no stack, flags untouched).
    unsafe {
        std::arch::asm!(
            "vbroadcastsd {0}, qword ptr [{1}]",
            out(zmm_reg) v,
            in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    v
}

/// [`fold`] for eight columns at once (two groups; unused columns zero),
/// given each column's `bank0 + bank1` as `z[k] = [v_2k | v_2k+1]`: the
/// same additions per column, in the same pairs, but done across columns
/// with shuffles of whole registers instead of one horizontal sum per
/// column, which in batched decode cost as much as a third of the
/// products. Plus `min0 + min1` per column for formats with a minimum.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn fold_banks<const F: u8>(z: &[__m512; 4], macc: [__m256; 2]) -> [f32; 2 * C] {
    let mut sum = fold8_eight(z);
    if layout(F).4 {
        // Per group: lanes 0..4 the even blocks' minimum sums, 4..8 the odd's.
        let banks =
            |m: __m256| _mm_add_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
        let m = _mm256_insertf128_ps::<1>(_mm256_castps128_ps256(banks(macc[0])), banks(macc[1]));
        sum = _mm256_add_ps(sum, m);
    }
    let mut out = [0f32; 2 * C];
    _mm256_storeu_ps(out.as_mut_ptr(), sum);
    out
}

/// `[lo(a) + hi(a) | lo(b) + hi(b)]`: each register's two 256-bit halves
/// added lane by lane, for two registers at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn bank_pairs(a: __m512, b: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
        _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
    )
}

/// `fold8` ([`super::hsum8`]'s pairing: `((v0 + v4) + (v2 + v6)) +
/// ((v1 + v5) + (v3 + v7))`) of eight 8-lane vectors at once, given as
/// `z[k] = [v_2k | v_2k+1]`; result lane `i` is the sum of `v_i`. IEEE
/// addition commutes, so only the pairing has to match, and it does.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f")]
pub(super) unsafe fn fold8_eight(z: &[__m512; 4]) -> __m256 {
    // 128-bit lane k of `a[h]` holds `v[0..4] + v[4..8]` of vector 4h + k.
    let a: [__m512; 2] = std::array::from_fn(|h| {
        let (p, q) = (z[2 * h], z[2 * h + 1]);
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(p, q),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(p, q),
        )
    });
    // Lane k: `[a0 + a2, a1 + a3]` of vector k, then of vector 4 + k.
    let b = _mm512_add_ps(
        _mm512_shuffle_ps::<0b01_00_01_00>(a[0], a[1]),
        _mm512_shuffle_ps::<0b11_10_11_10>(a[0], a[1]),
    );
    // Elements 0 and 2 of lane k: the sums of vectors k and 4 + k.
    let c = _mm512_add_ps(b, _mm512_permute_ps::<0b10_11_00_01>(b));
    let order = _mm512_setr_epi32(0, 4, 8, 12, 2, 6, 10, 14, 0, 0, 0, 0, 0, 0, 0, 0);
    _mm512_castps512_ps256(_mm512_permutexvar_ps(order, c))
}

/// `N` decoded rows (stride `np` pairs in the scratch) against one group of
/// four prepared columns: per (row, column) `fold8(bank0 + bank1)`, plus,
/// for formats with a minimum, `min0 + min1` where bank `b`'s minimum is
/// the block-order sum of `m_w * s_x` over its blocks (one register per
/// row: lanes 0..4 the even block's four columns, 4..8 the odd block's).
///
/// Per pair, each row's eight scale products (`d_w * d_x` for four columns
/// and two blocks) come from one multiply, are stored, and reach the
/// (row, column) accumulators by broadcast loads ([`broadcast_pair`]), as
/// in [`direct`]: sixteen multiplies per pair become four.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn tile<const F: u8, const N: usize>(
    np: usize,
    a: &Rows,
    xq: *const __m512i,
    xd: *const __m256,
    sx: *const __m256,
) -> [[f32; C]; N] {
    let (_, _, _, signed, min) = layout(F);
    let mut acc = [[_mm512_setzero_ps(); C]; N];
    let mut macc = [_mm256_setzero_ps(); N];
    let mut products = [_mm256_setzero_ps(); N];
    for j in 0..np {
        let mut w = [_mm512_setzero_si512(); N];
        let dx = _mm256_load_ps(xd.add(j) as *const f32);
        for r in 0..N {
            w[r] = _mm512_load_si512(a.wq.add(r * np + j) as *const _);
            let dw = _mm256_load_ps(a.wd.add(r * np + j) as *const f32);
            products[r] = _mm256_mul_ps(dw, dx);
        }
        for c in 0..C {
            let xv = _mm512_load_si512(xq.add(j * C + c) as *const _);
            for r in 0..N {
                let p = if signed {
                    let start = _mm512_load_si512(a.wc.add(r * np + j) as *const _);
                    _mm512_dpbusd_epi32(start, xv, w[r])
                } else {
                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[r], xv)
                };
                let d = broadcast_pair((&products[r] as *const __m256 as *const f64).add(c));
                acc[r][c] = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(p), acc[r][c]);
            }
        }
        if min {
            let sv = _mm256_load_ps(sx.add(j) as *const f32);
            for r in 0..N {
                let mv = _mm256_load_ps(a.mw.add(r * np + j) as *const f32);
                macc[r] = _mm256_add_ps(macc[r], _mm256_mul_ps(mv, sv));
            }
        }
    }
    let mut out = [[0f32; C]; N];
    for r in 0..N {
        let mut cols = [_mm512_setzero_ps(); 2 * C];
        cols[..C].copy_from_slice(&acc[r]);
        let v = fold_interleaved::<F>(&cols, [macc[r], _mm256_setzero_ps()]);
        out[r].copy_from_slice(&v[..C]);
    }
    out
}

/// One row's eight interleaved column accumulators (two groups; unused
/// columns zero) folded to its eight results: per column `bank0 + bank1`
/// (lanes `2k` and `2k + 1`), then [`fold_banks`].
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vnni")]
unsafe fn fold_interleaved<const F: u8>(acc: &[__m512; 2 * C], macc: [__m256; 2]) -> [f32; 2 * C] {
    // Lanes 2k of `even_odd(a)`: bank 0 + bank 1 of lane k.
    let even_odd = |a: __m512| _mm512_add_ps(a, _mm512_permute_ps::<0b10_11_00_01>(a));
    let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    // `[v_2k | v_2k+1]`, v_c = bank 0 + bank 1 of column c.
    let z: [__m512; 4] = std::array::from_fn(|k| {
        _mm512_permutex2var_ps(even_odd(acc[2 * k]), evens, even_odd(acc[2 * k + 1]))
    });
    fold_banks::<F>(&z, macc)
}
