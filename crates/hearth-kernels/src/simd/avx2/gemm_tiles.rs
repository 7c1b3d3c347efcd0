//! Tiled prefill GEMM for the 32-element formats (Q4_0, Q4_1, Q5_0, Q5_1,
//! Q8_0, Q8_1 weights), used by `gemm` for groups of four activation columns
//! when there are more than `few_columns` takes (prefill).
//!
//! # What each output element computes
//! Exactly what `blocks::dot_*` (and the reference `Lanes8`) compute: per
//! block `i` in order, lane `k` gets `fma(d_w * d_x, p_k, lane)` where
//! `p_k` is the exact integer sum over elements `4k..4k+4`; the minimum
//! terms `m_w * s_x` are fused into one sum in block order; the result is
//! `hsum8(lanes) (+ min)`. Only *where* the operands come
//! from changes, never the float operations or their order, so the results
//! are the same bits as `vec_dot`'s.
//!
//! # Why the tiles look like this
//! The per-(row, column, block) work of the plain kernels was ~10 vector
//! ops for 32 multiply-accumulates: unpack the weight block (Q5_0: ~12 ops,
//! shared by only four columns), the sign trick, `maddubs`, `madd`, `cvt`,
//! `fma`, plus widening and multiplying the two f16 scales and broadcasting
//! the product. Here:
//! - A tile of rows is unpacked once into a thread-local scratch (32 bytes
//!   of quants per block, and `d_w` / `m_w` widened to f32 and replicated
//!   four times), then every group of four columns streams over it: the
//!   unpacking is amortised over all `ncols` columns instead of four.
//! - The scale products `d_w * d_x` for one row and four columns are
//!   computed eight at a time (two blocks x four columns per `mulps`) into a
//!   small table that the inner loop reads with `vbroadcastss` from memory
//!   (a load, no ALU op). Same single-rounding multiply as the reference.
//! - The minimum terms (Q4_1/Q5_1) do not depend on the quants at all, so
//!   they are summed in a pass of their own, the four columns at once, each
//!   lane a sequential fused sum in block order as in the reference.
//! - The inner loop is one row x four columns = four `ymm`
//!   accumulators, leaving room for the weight block, its absolute value and
//!   the per-column temporaries without spills. More rows per tile would not
//!   save ALU work (the sign trick and the per-block float update are per
//!   (row, column) anyway) and would need more accumulators than AVX2 has.
//!   What remains per (row, column, block) is `psignb` (signed formats),
//!   `maddubs`, `madd`, `cvt`, `fma`.
//!
//! Columns that do not fill a group of four go through the plain kernels.

use super::blocks::{fifth_bits, nibbles};
use super::{f16x2_at, hsum8, load256};
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::ops::Range;

pub(crate) const Q4_0: u8 = 0;
pub(crate) const Q4_1: u8 = 1;
pub(crate) const Q5_0: u8 = 2;
pub(crate) const Q5_1: u8 = 3;
pub(crate) const Q8_0: u8 = 4;
pub(crate) const Q8_1: u8 = 5;

/// Columns per group (the inner loop's width).
const C: usize = 4;

/// `(weight block bytes, activation block bytes, offset of the activation
/// quants, signed weights, has a minimum)`.
pub(super) const fn layout(f: u8) -> (usize, usize, usize, bool, bool) {
    match f {
        Q4_0 => (18, 34, 2, true, false),
        Q4_1 => (20, 36, 4, false, true),
        Q5_0 => (22, 34, 2, true, false),
        Q5_1 => (24, 36, 4, false, true),
        Q8_0 => (34, 34, 2, true, false),
        _ => (36, 36, 4, true, false),
    }
}

/// Formats whose signed quants are small enough (`|w| <= 16`) to be the
/// *signed* `maddubs` operand against unsigned activations `x + 128`:
/// `sum((x + 128) * w) - 128 * sum(w)` is the exact `sum(x * w)`, pairs stay
/// within `2 * 255 * 16`, and the correction depends only on the weight
/// block, so it is computed once per row and costs one `psubd` per column
/// instead of a `psignb` (which competes with `maddubs`/`madd` for the same
/// two pipes on Zen 3).
const fn offset(f: u8) -> bool {
    matches!(f, Q4_0 | Q5_0)
}

/// The 32 quants of the weight block at `p` in element order (signed bytes
/// for signed formats), as `blocks::dot_*` decode them.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode<const F: u8>(p: *const u8) -> __m256i {
    match F {
        Q4_0 => _mm256_sub_epi8(nibbles(p.add(2)), _mm256_set1_epi8(8)),
        Q4_1 => nibbles(p.add(4)),
        Q5_0 => _mm256_sub_epi8(
            _mm256_or_si256(nibbles(p.add(6)), fifth_bits(p.add(2))),
            _mm256_set1_epi8(16),
        ),
        Q5_1 => _mm256_or_si256(nibbles(p.add(8)), fifth_bits(p.add(4))),
        Q8_0 => load256(p.add(2)),
        _ => load256(p.add(4)),
    }
}

/// Per-thread buffers, grown on first use and then reused (no allocation
/// per call once they are big enough).
struct Scratch {
    /// Decoded quants of the row tile: `rows x nb` blocks.
    q: Vec<__m256i>,
    /// `128 * (sum of w over elements 4k..4k+4)` in lane `k`, per block of
    /// the row tile (`offset` formats).
    corr: Vec<__m256i>,
    /// The current column group's quants as `x + 128` (unsigned), block `i`
    /// of column `c` at `C * i + c` (`offset` formats).
    xu: Vec<__m256i>,
    /// `[d_w; 4]` per block of the row tile.
    dw: Vec<f32>,
    /// `[m_w; 4]` per block of the row tile (formats with a minimum).
    mw: Vec<f32>,
    /// `[d_x of column 0..4]` per block of the current column group.
    dx: Vec<f32>,
    /// `[s_x of column 0..4]` per block (formats with a minimum).
    sx: Vec<f32>,
    /// `d_w * d_x` for the current row and column group, per block.
    d: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = const {
        RefCell::new(Scratch {
            q: Vec::new(),
            corr: Vec::new(),
            xu: Vec::new(),
            dw: Vec::new(),
            mw: Vec::new(),
            dx: Vec::new(),
            sx: Vec::new(),
            d: Vec::new(),
        })
    };
}

fn grow<T: Copy>(v: &mut Vec<T>, len: usize, zero: T) {
    if v.len() < len {
        v.resize(len, zero);
    }
}

/// Rows decoded per tile: about 64 KiB of quants (L2-resident while the
/// column groups stream over it), at least 4 and at most 64 rows.
fn tile_rows(nb: usize) -> usize {
    (64 * 1024 / (32 * nb.max(1))).clamp(4, 64)
}

/// Computes columns `0..4 * (ncols / 4)` of `gemm` for format `F` (`nb`
/// blocks per row). Leaves the remaining `ncols % 4` columns untouched.
///
/// # Safety
/// avx2, fma and f16c must be available; `w` must hold rows up to
/// `rows.end`, `x` `ncols` activation rows, and `y` must be writable at
/// `c * ldy + i` for every column `c` and `i < rows.len()` (the caller
/// checked this).
pub(crate) unsafe fn gemm<const F: u8>(
    nb: usize,
    w: &[u8],
    rows: std::ops::Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
) {
    let (wbk, xbk, _, _, _) = layout(F);
    let (wb, xb) = (nb * wbk, nb * xbk);
    debug_assert!(w.len() >= rows.end * wb && x.len() >= ncols * xb);
    let (w, x) = (w.as_ptr(), x.as_ptr());
    let (_, _, _, _, min) = layout(F);
    let nr = rows.len();
    let groups = ncols / C;
    if nr == 0 || groups == 0 || nb == 0 {
        return;
    }
    let tr = tile_rows(nb).min(nr);
    SCRATCH.with(|s| {
        let s = &mut *s.borrow_mut();
        grow(&mut s.q, tr * nb, _mm256_setzero_si256());
        grow(&mut s.dw, tr * nb * C, 0.0);
        grow(&mut s.dx, nb * C, 0.0);
        grow(&mut s.d, nb * C, 0.0);
        if offset(F) {
            grow(&mut s.corr, tr * nb, _mm256_setzero_si256());
            grow(&mut s.xu, nb * C, _mm256_setzero_si256());
        }
        if min {
            grow(&mut s.mw, tr * nb * C, 0.0);
            grow(&mut s.sx, nb * C, 0.0);
        }
        let mut r0 = rows.start;
        while r0 < rows.end {
            let r1 = (r0 + tr).min(rows.end);
            for r in r0..r1 {
                let k = (r - r0) * nb;
                // SAFETY: row `r` is inside `w` (caller), and the scratch
                // vectors hold `tr * nb` blocks (grown above).
                unsafe {
                    decode_row::<F>(
                        nb,
                        w.add(r * wb),
                        s.q.as_mut_ptr().add(k),
                        s.corr.as_mut_ptr().add(if offset(F) { k } else { 0 }),
                        s.dw.as_mut_ptr().add(k * C),
                        s.mw.as_mut_ptr().add(if min { k * C } else { 0 }),
                    )
                };
            }
            for g in 0..groups {
                let xg: [*const u8; C] = std::array::from_fn(|c| {
                    // SAFETY: column `C * g + c < ncols` is inside `x` (caller).
                    unsafe { x.add((C * g + c) * xb) }
                });
                // SAFETY: as above; `dx` / `sx` hold `nb * C` floats.
                unsafe {
                    column_scales::<F>(nb, &xg, s.dx.as_mut_ptr(), s.sx.as_mut_ptr());
                    if offset(F) {
                        unsigned_columns::<F>(nb, &xg, s.xu.as_mut_ptr());
                    }
                };
                // SAFETY: the scratch holds the tile's rows and this
                // group's columns (grown and filled above); the group's
                // columns and the tile's rows are inside what the caller
                // made writable in `y`.
                unsafe {
                    rows4::<F>(
                        nb,
                        r0 - rows.start..r1 - rows.start,
                        s,
                        &xg,
                        y.add(C * g * ldy),
                        ldy,
                    )
                };
            }
            r0 = r1;
        }
    });
}

/// The tile's rows against one column group: row `t` of the tile (scratch
/// index `t`) goes to `y[c * ldy + out_rows.start + t]` for column `c`. One
/// function with the per-row kernels inlined, so one row's scale products,
/// minimum terms and folds overlap the next row's products.
///
/// # Safety
/// avx2, fma and f16c must be available; the scratch must hold the tile's
/// decoded rows and the group's column tables; `x` the group's columns;
/// `y` writable as above.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn rows4<const F: u8>(
    nb: usize,
    out_rows: Range<usize>,
    s: &mut Scratch,
    x: &[*const u8; C],
    y: *mut f32,
    ldy: usize,
) {
    let (_, _, _, _, min) = layout(F);
    let d = s.d.as_mut_ptr();
    for (t, o) in out_rows.enumerate() {
        let k = t * nb;
        scale_products(nb, s.dw.as_ptr().add(k * C), s.dx.as_ptr(), d);
        let mut v = if offset(F) {
            row4_offset::<F>(
                nb,
                s.q.as_ptr().add(k),
                s.corr.as_ptr().add(k),
                d,
                s.xu.as_ptr(),
            )
        } else {
            row4::<F>(nb, s.q.as_ptr().add(k), d, x)
        };
        if min {
            let m = min_sums(nb, s.mw.as_ptr().add(k * C), s.sx.as_ptr());
            for c in 0..C {
                v[c] += m[c];
            }
        }
        for (c, &v) in v.iter().enumerate() {
            *y.add(c * ldy + o) = v;
        }
    }
}

/// Decodes one weight row into the scratch: quants to `q`, `[d_w; 4]` to
/// `dw`, and `[m_w; 4]` to `mw` for formats with a minimum.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn decode_row<const F: u8>(
    nb: usize,
    w: *const u8,
    q: *mut __m256i,
    corr: *mut __m256i,
    dw: *mut f32,
    mw: *mut f32,
) {
    let (wbk, _, _, _, min) = layout(F);
    for i in 0..nb {
        let p = w.add(i * wbk);
        let wq = decode::<F>(p);
        _mm256_store_si256(q.add(i), wq);
        if offset(F) {
            let c = _mm256_maddubs_epi16(_mm256_set1_epi8(-128), wq);
            _mm256_store_si256(corr.add(i), _mm256_madd_epi16(c, _mm256_set1_epi16(1)));
        }
        // [d_w, m_w] (lane 1 is quant bits for formats without a min: unused)
        let dm = f16x2_at(p);
        _mm_storeu_ps(dw.add(C * i), _mm_shuffle_ps::<0x00>(dm, dm));
        if min {
            _mm_storeu_ps(mw.add(C * i), _mm_shuffle_ps::<0x55>(dm, dm));
        }
    }
}

/// `dx[C * i + c] = d_x`, `sx[C * i + c] = s_x` of block `i` of column `c`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn column_scales<const F: u8>(nb: usize, x: &[*const u8; C], dx: *mut f32, sx: *mut f32) {
    let (_, xbk, _, _, min) = layout(F);
    for i in 0..nb {
        for c in 0..C {
            let v = f16x2_at(x[c].add(i * xbk));
            *dx.add(C * i + c) = _mm_cvtss_f32(v);
            if min {
                *sx.add(C * i + c) = _mm_cvtss_f32(_mm_movehdup_ps(v));
            }
        }
    }
}

/// `xu[C * i + c]` = the quants of block `i` of column `c` plus 128, as
/// unsigned bytes.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn unsigned_columns<const F: u8>(nb: usize, x: &[*const u8; C], xu: *mut __m256i) {
    let (_, xbk, xq, _, _) = layout(F);
    let bias = _mm256_set1_epi8(-128);
    for i in 0..nb {
        for c in 0..C {
            let v = load256(x[c].add(i * xbk + xq));
            _mm256_store_si256(xu.add(C * i + c), _mm256_xor_si256(v, bias));
        }
    }
}

/// `d[j] = dw[j] * dx[j]` for `j < C * nb`: each block's `d_w * d_x` for
/// the four columns (one rounding, as in the reference).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scale_products(nb: usize, dw: *const f32, dx: *const f32, d: *mut f32) {
    let len = C * nb;
    let mut j = 0;
    while j + 8 <= len {
        let v = _mm256_mul_ps(_mm256_loadu_ps(dw.add(j)), _mm256_loadu_ps(dx.add(j)));
        _mm256_storeu_ps(d.add(j), v);
        j += 8;
    }
    if j < len {
        let v = _mm_mul_ps(_mm_loadu_ps(dw.add(j)), _mm_loadu_ps(dx.add(j)));
        _mm_storeu_ps(d.add(j), v);
    }
}

/// Per column, `m_w * s_x` fused into one sum in block order.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn min_sums(nb: usize, mw: *const f32, sx: *const f32) -> [f32; C] {
    let mut acc = _mm_setzero_ps();
    for i in 0..nb {
        acc = _mm_fmadd_ps(
            _mm_loadu_ps(mw.add(C * i)),
            _mm_loadu_ps(sx.add(C * i)),
            acc,
        );
    }
    let mut out = [0f32; C];
    _mm_storeu_ps(out.as_mut_ptr(), acc);
    out
}

/// One decoded row against four columns: `hsum8(lanes)` per column
/// (without the minimum terms). `d` holds the per-block scale products.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row4<const F: u8>(
    nb: usize,
    q: *const __m256i,
    d: *const f32,
    x: &[*const u8; C],
) -> [f32; C] {
    let (_, xbk, xq, signed, _) = layout(F);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); C];
    // One block (a macro rather than a closure so it is
    // compiled with this function's target features).
    macro_rules! step {
        ($i:expr) => {{
            let i = $i;
            let wq = _mm256_load_si256(q.add(i));
            let aw = if signed { _mm256_sign_epi8(wq, wq) } else { wq };
            for c in 0..C {
                let xv = load256(x[c].add(i * xbk + xq));
                let xs = if signed { _mm256_sign_epi8(xv, wq) } else { xv };
                let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, xs), ones);
                let dv = _mm256_broadcast_ss(&*d.add(C * i + c));
                acc[c] = _mm256_fmadd_ps(dv, _mm256_cvtepi32_ps(p32), acc[c]);
            }
        }};
    }
    for i in 0..nb {
        step!(i);
    }
    let mut out = [0f32; C];
    for c in 0..C {
        out[c] = hsum8(acc[c]);
    }
    out
}

/// [`row4`] for the `offset` formats: `maddubs(x + 128, w)`, `madd`, minus
/// the row's correction gives the same exact lane sums as the sign trick.
/// Generic over the format only so that each instance has one caller and
/// is inlined into it.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn row4_offset<const F: u8>(
    nb: usize,
    q: *const __m256i,
    corr: *const __m256i,
    d: *const f32,
    xu: *const __m256i,
) -> [f32; C] {
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_ps(); C];
    macro_rules! step {
        ($i:expr) => {{
            let i = $i;
            let wq = _mm256_load_si256(q.add(i));
            let cr = _mm256_load_si256(corr.add(i));
            for c in 0..C {
                let xv = _mm256_load_si256(xu.add(C * i + c));
                let p32 = _mm256_madd_epi16(_mm256_maddubs_epi16(xv, wq), ones);
                let p32 = _mm256_sub_epi32(p32, cr);
                let dv = _mm256_broadcast_ss(&*d.add(C * i + c));
                acc[c] = _mm256_fmadd_ps(dv, _mm256_cvtepi32_ps(p32), acc[c]);
            }
        }};
    }
    for i in 0..nb {
        step!(i);
    }
    let mut out = [0f32; C];
    for c in 0..C {
        out[c] = hsum8(acc[c]);
    }
    out
}
