//! Batched decode on AVX2 for the 32-element formats: three to eight
//! activation columns (concurrent streams) against a whole weight matrix.
//!
//! # What each output element computes
//! Exactly what `blocks::dot_*` and the reference `Lanes8` compute (see
//! `gemm_tiles`): per block `i` in order, lane `k` gets
//! `fma(d_w * d_x, p_k, lane)`; the minimum terms `m_w * s_x` are fused
//! into one sum in block order; the result is `fold8(lanes) (+ min)`. The
//! results are the same bits as `vec_dot`'s.
//!
//! # Why it looks like this
//! With only a few columns to share each decoded weight block, the tiles'
//! scratch (store every decoded row, reload it per group of four columns)
//! and their per-(row, group) tables cost about as much as the arithmetic:
//! SmolLM2's eight streams spent 20 % of their time decoding rows into it.
//! Here each weight block is decoded into registers once and used at once
//! for every column; eight columns' accumulators fit in the registers
//! beside the block being decoded. What remains per (row, column, block) is the
//! `maddubs`, `madd`, `cvt`, `fma` of the reference (plus `psignb` for
//! signed formats); per (row, block) one decode, one multiply for all the
//! columns' scale products (stored and broadcast back from memory, a load
//! instead of an ALU op), and for Q4_1/Q5_1 one multiply and add for all
//! the columns' minimum terms.
//!
//! Measured on Zen 3 (one thread, interleaved with the tiles): Q4_1 eight
//! columns of 32768 x 576 4.3 against 5.4 ms, Q8_0 four columns 2.9
//! against 3.3 ms; SmolLM2's eight streams 28-31 against 33-35 ms a step.

use super::gemm_tiles::{decode, layout};
use super::{f16x2_at, fold8_eight, load256, prefetch_row, FEW_COLUMNS_PREFETCH_BYTES};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

/// The fewest columns `gemm` sends here: two columns are faster through
/// the per-row dot kernels, which hold both columns' accumulators in
/// registers and need no tables (Q4_1, 32768 x 576: 2.5 against 3.0 ms).
pub(crate) const MIN_COLS: usize = 3;

/// The most columns one call takes (past eight, the tiles' scratch pays
/// for itself).
pub(crate) const MAX_COLS: usize = 8;

/// One call's column tables and one row's scale products, per thread;
/// grown on first use and reused.
struct Tables {
    /// The columns' quants interleaved: block `i` of column `c` at
    /// `C * i + c`, so that one pointer and constant offsets reach every
    /// column (eight column pointers would not fit in the registers beside
    /// everything else).
    xq: Vec<__m256i>,
    /// Per block, the columns' `d_x` in lanes `0..C`.
    dx: Vec<__m256>,
    /// Per block, the columns' `s_x` in lanes `0..C` (formats with a minimum).
    sx: Vec<__m256>,
    /// The current row's `d_w * d_x` per block, column `c` in lane `c`.
    d: Vec<__m256>,
}

thread_local! {
    static TABLES: RefCell<Tables> = const {
        RefCell::new(Tables { xq: Vec::new(), dx: Vec::new(), sx: Vec::new(), d: Vec::new() })
    };
}

/// Computes all `ncols` columns (`MIN_COLS..=MAX_COLS`) of `gemm` for format `F`
/// (`nb` blocks per row).
///
/// # Safety
/// avx2, fma and f16c must be available; `w` must hold rows up to
/// `rows.end`, `x` `ncols` activation rows, and `y` must be writable at
/// `c * ldy + i` for every column `c` and `i < rows.len()` (the caller
/// checked this).
pub(crate) unsafe fn gemm<const F: u8>(
    nb: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
) {
    debug_assert!((MIN_COLS..=MAX_COLS).contains(&ncols));
    match ncols {
        3 => run::<F, 3>(nb, w, rows, x, y, ldy),
        4 => run::<F, 4>(nb, w, rows, x, y, ldy),
        5 => run::<F, 5>(nb, w, rows, x, y, ldy),
        6 => run::<F, 6>(nb, w, rows, x, y, ldy),
        7 => run::<F, 7>(nb, w, rows, x, y, ldy),
        _ => run::<F, 8>(nb, w, rows, x, y, ldy),
    }
}

/// [`gemm`] for exactly `C` columns.
unsafe fn run<const F: u8, const C: usize>(
    nb: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    y: *mut f32,
    ldy: usize,
) {
    let (wbk, xbk, _, _, _) = layout(F);
    let (wb, xb) = (nb * wbk, nb * xbk);
    debug_assert!(w.len() >= rows.end * wb && x.len() >= C * xb);
    let (w, x) = (w.as_ptr(), x.as_ptr());
    // SAFETY: column `c < C` is inside `x` (caller).
    let xs: [*const u8; C] = std::array::from_fn(|c| unsafe { x.add(c * xb) });
    TABLES.with(|t| {
        let t = &mut *t.borrow_mut();
        for v in [&mut t.dx, &mut t.sx, &mut t.d] {
            if v.len() < nb {
                v.resize(nb, _mm256_setzero_ps());
            }
        }
        if t.xq.len() < C * nb {
            t.xq.resize(C * nb, _mm256_setzero_si256());
        }
        // SAFETY: avx2/fma/f16c (caller); the tables hold `nb` blocks (of
        // `C` columns), the columns and rows are inside `x`, `w` and `y`
        // (caller).
        unsafe {
            column_tables::<F, C>(
                nb,
                &xs,
                t.xq.as_mut_ptr(),
                t.dx.as_mut_ptr(),
                t.sx.as_mut_ptr(),
            );
            for r in rows.clone() {
                prefetch_row(w, wb, r, rows.end, FEW_COLUMNS_PREFETCH_BYTES);
                row::<F, C>(nb, w.add(r * wb), t, y.add(r - rows.start), ldy);
            }
        }
    });
}

/// `xq[C * i + c]` = the quants of block `i` of column `c`; `dx[i]` lane
/// `c` = its `d_x` (and `sx` likewise `s_x` for formats with a minimum);
/// lanes `C..8` zero.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn column_tables<const F: u8, const C: usize>(
    nb: usize,
    x: &[*const u8; C],
    xq: *mut __m256i,
    dx: *mut __m256,
    sx: *mut __m256,
) {
    let (_, xbk, xqo, _, min) = layout(F);
    for i in 0..nb {
        let (mut d, mut s) = ([0f32; 8], [0f32; 8]);
        for c in 0..C {
            xq.add(C * i + c).write(load256(x[c].add(i * xbk + xqo)));
            let v = f16x2_at(x[c].add(i * xbk));
            d[c] = _mm_cvtss_f32(v);
            s[c] = _mm_cvtss_f32(_mm_movehdup_ps(v));
        }
        dx.add(i).write(_mm256_loadu_ps(d.as_ptr()));
        if min {
            sx.add(i).write(_mm256_loadu_ps(s.as_ptr()));
        }
    }
}

/// One weight row against the `C` columns of the tables `t` (filled by
/// [`column_tables`]); column `c`'s result goes to `y[c * ldy]`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row<const F: u8, const C: usize>(
    nb: usize,
    w: *const u8,
    t: &mut Tables,
    y: *mut f32,
    ldy: usize,
) {
    let (wbk, _, _, _, min) = layout(F);
    let (x, dx, sx, d) = (
        t.xq.as_ptr(),
        t.dx.as_ptr(),
        t.sx.as_ptr(),
        t.d.as_mut_ptr(),
    );
    // The scale products first, for all the row's blocks, so that the
    // passes below load them from stores long done (a load right after
    // the store it reads from waits for it), and the minimum terms with
    // them.
    let mut m = _mm256_setzero_ps();
    for i in 0..nb {
        // [d_w, m_w] (lane 1 is quant bits for formats without a minimum).
        let dm = f16x2_at(w.add(i * wbk));
        d.add(i)
            .write(_mm256_mul_ps(_mm256_broadcastss_ps(dm), dx.add(i).read()));
        if min {
            let mw = _mm256_broadcastss_ps(_mm_movehdup_ps(dm));
            m = _mm256_fmadd_ps(mw, sx.add(i).read(), m);
        }
    }
    let mut acc = [_mm256_setzero_ps(); C];
    for i in 0..nb {
        block::<F, C>(w, x, d, i, &mut acc);
    }
    let z: [__m256; 8] = std::array::from_fn(|c| if c < C { acc[c] } else { _mm256_setzero_ps() });
    let mut v = fold8_eight(&z);
    if min {
        v = _mm256_add_ps(v, m);
    }
    let mut out = [0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), v);
    for (c, &o) in out.iter().enumerate().take(C) {
        *y.add(c * ldy) = o;
    }
}

/// Block `i` of one row into `acc` for every column.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn block<const F: u8, const C: usize>(
    w: *const u8,
    x: *const __m256i,
    d: *const __m256,
    i: usize,
    acc: &mut [__m256; C],
) {
    let (wbk, _, _, signed, _) = layout(F);
    let ones = _mm256_set1_epi16(1);
    let wq = decode::<F>(w.add(i * wbk));
    let aw = if signed { _mm256_sign_epi8(wq, wq) } else { wq };
    let di = d.add(i) as *const f32;
    let xi = x.add(C * i);
    for c in 0..C {
        let xv = _mm256_load_si256(xi.add(c));
        let xs = if signed { _mm256_sign_epi8(xv, wq) } else { xv };
        let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones);
        let p = _mm256_cvtepi32_ps(p32);
        acc[c] = _mm256_fmadd_ps(broadcast_from_memory(di.add(c)), p, acc[c]);
    }
}

/// `[*p; 8]` by a load that the compiler cannot turn back into shuffles of
/// the register the value was stored from (it does, when it can see the
/// store, and the shuffles compete with the dot products for the vector
/// units while the load ports are idle).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn broadcast_from_memory(p: *const f32) -> __m256 {
    let v: __m256;
    // SAFETY: the caller guarantees four readable bytes at `p`; the asm only
    // loads them (no stores, no stack, flags untouched).
    unsafe {
        std::arch::asm!(
            "vbroadcastss {0}, dword ptr [{1}]",
            out(ymm_reg) v,
            in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    v
}
