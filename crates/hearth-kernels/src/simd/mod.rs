//! Run-time ISA selection and the per-ISA kernels.
//!
//! Each ISA module mirrors the scalar reference bit for bit; a kernel that
//! has no SIMD version for some type reports that (returns `None`/`false`)
//! and the dispatcher falls back to the reference. `neon.rs` and `wasm.rs`
//! will sit beside `avx2`.

use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
/// Stand-in on other targets so the dispatcher compiles: `Isa::Avx2` is
/// never selected there, so none of this runs.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod avx2 {
    use crate::GgmlType;
    use std::ops::Range;

    pub(crate) unsafe fn quantize_row(_: GgmlType, _: &[f32], _: &mut [u8]) -> bool {
        false
    }
    pub(crate) unsafe fn vec_dot(_: GgmlType, _: usize, _: &[u8], _: &[u8]) -> Option<f32> {
        None
    }
    pub(crate) unsafe fn gemm(
        _: GgmlType,
        _: usize,
        _: &[u8],
        _: Range<usize>,
        _: &[u8],
        _: usize,
        _: *mut f32,
        _: usize,
        _: bool,
    ) -> bool {
        false
    }
    pub(crate) mod ops {
        //! The scalar ops under the AVX2 names.
        pub(crate) use crate::ops::scalar::{
            add_inplace, attn_online_f16, attn_online_finish, attn_tile_finish, attn_tile_row,
            axpy_f16, dot_f32_f16, f32_to_f16_row, gelu_tanh_mul_inplace, mul_inplace, rms_norm,
            rms_norm_inplace, rope_apply, scale_inplace, silu_mul_inplace, softmax_inplace,
        };
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Isa {
    Scalar,
    Avx2,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
        }
    }
}

static SELECTED: AtomicU8 = AtomicU8::new(0);

fn detect() -> Isa {
    if std::env::var("HEARTH_KERNELS").is_ok_and(|v| v.eq_ignore_ascii_case("scalar")) {
        return Isa::Scalar;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
    }
    Isa::Scalar
}

/// The selected ISA; detected once, then a relaxed load per call.
#[inline(always)]
pub(crate) fn isa() -> Isa {
    match SELECTED.load(Ordering::Relaxed) {
        1 => Isa::Scalar,
        2 => Isa::Avx2,
        _ => {
            let isa = detect();
            SELECTED.store(if isa == Isa::Avx2 { 2 } else { 1 }, Ordering::Relaxed);
            isa
        }
    }
}
