//! hearth's compute kernels: ggml's block formats (byte-exact with GGUF files
//! written by llama.cpp), their dequantisation and quantisation, dot
//! products of weight rows with quantised activation rows, GEMV/GEMM over row
//! ranges, and the element-wise ops a llama-family forward pass needs.
//!
//! What this crate does not do: allocate on the hot path (no per-call heap
//! allocation anywhere in `vec_dot`, `gemm`, `quantize_row` or the ops) and
//! spawn threads. The engine owns threading: it splits a matmul by row ranges
//! and calls [`gemm`] once per range.
//!
//! # Numerics
//! Every function has a scalar reference in [`mod@reference`] and, where it
//! pays, a SIMD version picked at run time ([`isa`]). The SIMD versions are
//! bit-identical to the references, so `HEARTH_KERNELS=scalar` reproduces
//! the same logits, just slower. [`gemm`] is bit-identical to [`vec_dot`]
//! per (row, column) regardless of `ncols` or the row range (the engine's
//! batch invariance relies on this).
//!
//! The reference arithmetic is llama.cpp's, operation for operation, where
//! hearth has matched it: its AVX2 build (b11311, flash attention on) is
//! what `shared/golden/` was made with, and an engine whose float order
//! differs lands ~0.1 log-probability away from it (one 8-bit activation
//! rounding the other way is amplified layer by layer), so matching the
//! operations is the only way to meet the golden tolerance. For both
//! default models the logits are the reference's bit for bit
//! (`hearth-runtime`'s `bit_exact` test). The parts:
//! - 32-element formats accumulate per-block `d * partial_sum` into one
//!   bank of eight lanes with a fused multiply-add, blocks in order, and the
//!   minimum terms `m * s` (Q4_1, Q5_1) by fused multiply-adds into one
//!   scalar; folded as llama.cpp's `hsum_float_8`.
//! - Element-wise ops follow llama.cpp's compiled code, including where its
//!   compiler fused multiply-adds (see [`ops`]).
//! - Attention is its CPU flash attention with an F16 cache: the one-row
//!   form ([`attn_online_f16`]), its split-KV merge for one-row batches
//!   over 512 or more cache cells ([`attn_online_merge`]), and the tiled
//!   form it takes for 64 or more query rows ([`attn_tile_row`]).
//! - Which form a row takes depends on how llama.cpp batched it; the engine
//!   decides that by position (`hearth_engine::PromptPlan`).
//! - K-quants: each super-block's integer sums are exact; the float updates
//!   follow the kernel llama.cpp picks for the batch a row is in ([`Rows`]):
//!   Q4_K its repacked four-row and one-row kernels (two chains, scale
//!   terms and minimum terms, subtracted at the end), Q6_K its dot product
//!   (eight lanes) or, in batches of eight or more, its tiled matmul (one
//!   chain). Q2_K, Q3_K and Q5_K keep one float update per super-block
//!   (not matched: no default model uses them).
//! - GeGLU looks GELU up in llama.cpp's F16 table.
//! - F32 products (LoRA's) take llama.cpp's two F32 matmul orders:
//!   llamafile's tinyBLAS for batches of two rows or more
//!   ([`dot_f32_tiny`]), ggml's dot product for one ([`dot_f32_ggml`]).
//!
//! Float weight formats use 32 lanes. A future ISA port must follow the
//! same structure to stay bit-identical.
//!
//! Activations are quantised as llama.cpp does on x86 (see [`vec_dot_type`]
//! and [`quantize_row`]), so activation bytes match llama.cpp's byte for
//! byte.
//!
//! # Layout
//! - `formats/`: one module per block format (layout, scalar reference
//!   dequantise / quantise / dot product).
//! - `simd/`: per-ISA kernels (`avx2` today, taken on AVX-512 CPUs too;
//!   `neon`, `wasm` slot in beside it).
//! - `ops`: element-wise ops.

// Block-layout code walks several arrays by the same element or sub-block
// index; iterator chains would hide the layout the comments describe.
#![allow(clippy::needless_range_loop)]

pub mod formats;
pub mod ops;
pub mod reference;
mod simd;

pub use hearth_gguf::GgmlType;
pub use ops::scalar::{dot_f32_ggml_tail_products, rope_cache};
pub use ops::{KvRun, KvTile, ATTN_TILE};

use half::f16;
use simd::Isa;
use std::ops::Range;

/// What batch llama.cpp's AVX2 build would have multiplied an activation
/// row in, which picks the float order of two K-quant formats:
/// - Q4_K (it repacks those matrices): a batch's first `n - n % 4` rows go
///   through a four-row kernel, the rest (and decoding) through a one-row
///   kernel, with different orders ([`formats::q4_k`]);
/// - Q6_K: batches of eight rows or more go through a tiled kernel, smaller
///   ones (and decoding) through the dot product ([`formats::q6_k`]).
///
/// Every other format ignores it. The engine sets it from a row's position
/// in its prompt, never from what else shares the pass.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Rows {
    /// One of a batch's first `n - n % 4` rows (`n >= 4`).
    pub quad: bool,
    /// A row of a batch of at least eight.
    pub wide: bool,
}

impl Rows {
    /// A row multiplied alone: decoding.
    pub const SINGLE: Rows = Rows {
        quad: false,
        wide: false,
    };
    /// Every combination, for tests.
    pub const ALL: [Rows; 4] = [
        Rows::SINGLE,
        Rows {
            quad: true,
            wide: false,
        },
        Rows {
            quad: false,
            wide: true,
        },
        Rows {
            quad: true,
            wide: true,
        },
    ];

    /// Whether `t`'s float order depends on the batch at all.
    pub fn matters_for(t: GgmlType) -> bool {
        matches!(t, GgmlType::Q4_K | GgmlType::Q6_K)
    }
}

/// Bytes in a row of `n` elements of type `t`. Panics if `n` is not a whole
/// number of blocks (the engine guarantees shapes).
#[inline]
pub fn row_bytes(t: GgmlType, n: usize) -> usize {
    t.row_bytes(n)
        .unwrap_or_else(|| panic!("{n} elements is not a whole number of {t} blocks"))
}

/// The format activations are quantised to before a dot product with weights
/// of type `t`, as llama.cpp does: Q4_0, Q5_0, Q8_0 -> Q8_0; Q4_1, Q5_1 ->
/// Q8_1; Q2_K..Q6_K -> Q8_K; F16, BF16, F32 -> themselves. Q8_1 and Q8_K
/// (not weight formats in practice) pair with themselves.
pub fn vec_dot_type(t: GgmlType) -> GgmlType {
    match t {
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 => GgmlType::Q8_0,
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q8_1 => GgmlType::Q8_1,
        GgmlType::Q2_K
        | GgmlType::Q3_K
        | GgmlType::Q4_K
        | GgmlType::Q5_K
        | GgmlType::Q6_K
        | GgmlType::Q8_K => GgmlType::Q8_K,
        GgmlType::F32 => GgmlType::F32,
        GgmlType::F16 => GgmlType::F16,
        GgmlType::BF16 => GgmlType::BF16,
    }
}

/// Which implementation the dispatcher picked: `"avx2"` or `"scalar"`.
/// `HEARTH_KERNELS=scalar` forces the scalar reference.
pub fn isa() -> &'static str {
    simd::isa().name()
}

/// Quantise one row of f32 into `dst_type` (any type). Activation types
/// match the quantisers llama.cpp runs on x86 byte for byte (Q8_0/Q8_1: its
/// AVX2 versions, round-half-even with `127 / amax`; Q8_K: its reference);
/// Q4_0..Q5_1 follow ggml's reference quantisers; the K-quant weight formats
/// use plain round-to-nearest.
/// Panics if `src.len()` is not a multiple of the block size or `dst` is not
/// exactly `row_bytes(dst_type, src.len())` long.
pub fn quantize_row(dst_type: GgmlType, src: &[f32], dst: &mut [u8]) {
    match simd::isa() {
        Isa::Avx2 => {
            assert_eq!(
                dst.len(),
                row_bytes(dst_type, src.len()),
                "quantize_row: wrong dst length"
            );
            // SAFETY: `simd::isa()` returns Avx2 only after detecting avx2, fma and f16c.
            if unsafe { simd::avx2::quantize_row(dst_type, src, dst) } {
                return;
            }
            reference::quantize_row(dst_type, src, dst)
        }
        Isa::Scalar => reference::quantize_row(dst_type, src, dst),
    }
}

/// Dequantise the first `row_bytes(t, dst.len())` bytes of `src` into `dst`.
pub fn dequantize_row(t: GgmlType, src: &[u8], dst: &mut [f32]) {
    reference::dequantize_row(t, src, dst)
}

/// Dot product of one weight row (type `t`, `n` elements: the first
/// `row_bytes(t, n)` bytes of `w`) with one activation row already in
/// `vec_dot_type(t)` (the first `row_bytes(vec_dot_type(t), n)` bytes of `x`).
pub fn vec_dot(t: GgmlType, n: usize, w: &[u8], x: &[u8]) -> f32 {
    match simd::isa() {
        Isa::Avx2 => {
            reference::check_dot(t, n, w, x);
            // SAFETY: Avx2 is only selected when the CPU has avx2, fma and f16c;
            // the operand sizes were checked just above.
            unsafe { simd::avx2::vec_dot(t, n, w, x) }
                .unwrap_or_else(|| reference::vec_dot(t, n, w, x))
        }
        Isa::Scalar => reference::vec_dot(t, n, w, x),
    }
}

/// [`vec_dot`] in the float order of `form` (see [`Rows`]).
pub fn vec_dot_rows(t: GgmlType, n: usize, w: &[u8], x: &[u8], form: Rows) -> f32 {
    if !Rows::matters_for(t) || form == Rows::SINGLE {
        return vec_dot(t, n, w, x);
    }
    match simd::isa() {
        Isa::Avx2 => {
            reference::check_dot(t, n, w, x);
            // SAFETY: Avx2 is only selected when the CPU has avx2, fma and f16c;
            // the operand sizes were checked just above.
            unsafe { simd::avx2::vec_dot_rows(t, n, w, x, form) }
                .unwrap_or_else(|| reference::vec_dot_rows(t, n, w, x, form))
        }
        Isa::Scalar => reference::vec_dot_rows(t, n, w, x, form),
    }
}

/// `y[c * rows.len() + (r - rows.start)] = vec_dot(t, n, row r of w, column c of x)`
/// for `r` in `rows`, `c` in `0..ncols`. `w` is the whole matrix (rows of
/// `row_bytes(t, n)` bytes); `x` holds `ncols` activation rows of
/// `row_bytes(vec_dot_type(t), n)` bytes. Bit-identical to calling
/// [`vec_dot`] per (row, column); several columns share each unpacked weight
/// block.
pub fn gemm(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: &mut [f32],
) {
    gemm_rows(t, n, w, rows, x, ncols, y, Rows::SINGLE)
}

/// [`gemm_rows`] writing column `c` to `y[c * ldy..][..rows.len()]`, so that
/// callers splitting a matrix by rows can write every column's part
/// straight into a token-major output (`ldy` = the matrix's row count)
/// instead of through a scratch block. The same results, bit for bit.
///
/// # Safety
/// `y` must be valid for writes at `c * ldy + i` for every `c < ncols`
/// and `i < rows.len()`, and nothing else may read or write those floats
/// during the call (other threads may use the floats in between).
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_strided(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
    form: Rows,
) {
    reference::check_inputs(t, n, w, &rows, x, ncols);
    assert!(
        ncols <= 1 || ldy >= rows.len(),
        "gemm: output stride {ldy} is shorter than the {} rows of a column",
        rows.len()
    );
    // SAFETY: the caller's promise about `y`; the inputs were checked.
    unsafe { gemm_with(t, n, w, rows, x, ncols, y, ldy, form) }
}

/// # Safety
/// The inputs were checked (`reference::check_inputs`) and `y` is writable
/// as [`gemm_strided`] requires.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_with(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: *mut f32,
    ldy: usize,
    form: Rows,
) {
    match simd::isa() {
        Isa::Avx2 => {
            // SAFETY: Avx2 is only selected when the CPU has avx2, fma and
            // f16c; the operand sizes were checked by our caller.
            if !unsafe { simd::avx2::gemm(t, n, w, rows.clone(), x, ncols, y, ldy, form) } {
                // SAFETY: as above.
                unsafe { reference::gemm_into(t, n, w, rows, x, ncols, y, ldy, form) }
            }
        }
        // SAFETY: as above.
        Isa::Scalar => unsafe { reference::gemm_into(t, n, w, rows, x, ncols, y, ldy, form) },
    }
}

/// [`gemm`] in the float order of `form` (see [`Rows`]): bit-identical to
/// [`vec_dot_rows`] per (row, column).
#[allow(clippy::too_many_arguments)]
pub fn gemm_rows(
    t: GgmlType,
    n: usize,
    w: &[u8],
    rows: Range<usize>,
    x: &[u8],
    ncols: usize,
    y: &mut [f32],
    form: Rows,
) {
    reference::check_gemm(t, n, w, &rows, x, ncols, y);
    let nr = rows.len();
    // SAFETY: `y` holds `ncols * nr` floats (checked just above).
    unsafe { gemm_with(t, n, w, rows, x, ncols, y.as_mut_ptr(), nr, form) }
}

macro_rules! dispatch_op {
    ($(#[$m:meta])* fn $name:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            match simd::isa() {
                // SAFETY: Avx2 is only selected when the CPU has avx2, fma and
                // f16c; the kernel checks its own slice lengths.
                Isa::Avx2 => unsafe { simd::avx2::ops::$name($($arg),*) },
                Isa::Scalar => ops::scalar::$name($($arg),*),
            }
        }
    };
}

dispatch_op!(
    /// `out = x / sqrt(mean(x^2) + eps) * w` (see [`ops`] for the exact order).
    fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32])
);
dispatch_op!(
    /// In-place [`rms_norm`].
    fn rms_norm_inplace(x: &mut [f32], w: &[f32], eps: f32)
);
dispatch_op!(
    /// Softmax over the row; `-inf` entries become 0; an all `-inf` row becomes all 0.
    fn softmax_inplace(x: &mut [f32])
);
dispatch_op!(
    /// `gate = silu(gate) * up`.
    fn silu_mul_inplace(gate: &mut [f32], up: &[f32])
);
dispatch_op!(
    /// `gate = gelu_tanh(gate) * up` (Gemma's GeGLU).
    fn gelu_tanh_mul_inplace(gate: &mut [f32], up: &[f32])
);
dispatch_op!(
    /// `y += x`.
    fn add_inplace(y: &mut [f32], x: &[f32])
);
dispatch_op!(
    /// `y *= x` element-wise.
    fn mul_inplace(y: &mut [f32], x: &[f32])
);
dispatch_op!(
    /// `y *= s`.
    fn scale_inplace(y: &mut [f32], s: f32)
);
dispatch_op!(
    /// Dot product of an f32 query with an f16 key row.
    fn dot_f32_f16(a: &[f32], b: &[f16]) -> f32
);
dispatch_op!(
    /// `y += a * x` with an f16 value row.
    fn axpy_f16(y: &mut [f32], a: f32, x: &[f16])
);
dispatch_op!(
    /// f32 -> f16 (round to nearest even) into the first `src.len()` elements of `dst`.
    fn f32_to_f16_row(src: &[f32], dst: &mut [f16])
);
dispatch_op!(
    /// Rotates the first `cos_sin.len()` dims of `x` by a [`rope_cache`] table
    /// (pairs as in [`rope_inplace`]).
    fn rope_apply(x: &mut [f32], cos_sin: &[f32], neox: bool)
);

dispatch_op!(
    /// One query head's attention with a running softmax over `n` F16
    /// key/value rows (see [`ops::scalar::attn_online_f16`]); resumable
    /// across runs of keys through `state` and `acc`.
    fn attn_online_f16(q: &[f16], run: KvRun, scale: f32, state: &mut (f32, f32), acc: &mut [f16])
);
dispatch_op!(
    /// The output of an [`attn_online_f16`] run: `acc / sum`.
    fn attn_online_finish(state: (f32, f32), acc: &[f16], out: &mut [f32])
);
dispatch_op!(
    /// One F32 query row's attention over one tile of keys, llama.cpp's
    /// tiled flash attention (see [`ops::scalar::attn_tile_row`]); resumable
    /// across tiles through `state` and `acc`.
    fn attn_tile_row(
        q: &[f32],
        tile: KvTile,
        valid: Range<usize>,
        scale: f32,
        state: &mut (f32, f32),
        acc: &mut [f32]
    )
);
dispatch_op!(
    /// The output of [`attn_tile_row`] calls: `acc / sum`.
    fn attn_tile_finish(state: (f32, f32), acc: &[f32], out: &mut [f32])
);

dispatch_op!(
    /// An F32 dot product in the order of ggml's `ggml_vec_dot_f32` (see
    /// [`ops::scalar::dot_f32_ggml`]).
    fn dot_f32_ggml(a: &[f32], b: &[f32]) -> f32
);
dispatch_op!(
    /// An F32 dot product in the order of llamafile's tinyBLAS (see
    /// [`ops::scalar::dot_f32_tiny`]); lengths are multiples of 8.
    fn dot_f32_tiny(a: &[f32], b: &[f32]) -> f32
);

/// The output of [`attn_online_f16`] runs over consecutive key ranges, each
/// started afresh, merged as llama.cpp's split-KV decode merges them (see
/// [`ops::scalar::attn_online_merge`]; scalar on every CPU, since it runs
/// once per head).
pub fn attn_online_merge(states: &[(f32, f32)], accs: &[f16], out: &mut [f32]) {
    ops::scalar::attn_online_merge(states, accs, out)
}

/// Rotary embedding on one head vector, rotating the first `n_rot` dims.
/// `neox = false` pairs `(x[2i], x[2i+1])` (llama's "normal" mode);
/// `neox = true` pairs `(x[i], x[i + n_rot/2])` (Qwen, Gemma).
/// `theta_i = pos * freq_base^(-2i/n_rot)`, computed as ggml does.
/// For many heads at one position, [`rope_cache`] + [`rope_apply`] is cheaper.
pub fn rope_inplace(x: &mut [f32], pos: usize, n_rot: usize, freq_base: f32, neox: bool) {
    ops::scalar::rope_inplace(x, pos, n_rot, freq_base, neox)
}

/// Asks the CPU to bring `data` into its L1 cache ahead of use: a hint,
/// which never faults and never changes a result (a no-op off x86-64).
pub fn prefetch<T>(data: &[T]) {
    #[cfg(target_arch = "x86_64")]
    {
        let p = data.as_ptr() as *const u8;
        let bytes = std::mem::size_of_val(data);
        let mut o = 0;
        while o < bytes {
            // SAFETY: a prefetch never faults; the address is inside `data`.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    p.add(o) as *const i8
                )
            };
            o += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = data;
}
