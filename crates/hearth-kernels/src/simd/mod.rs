//! Run-time ISA selection and the per-ISA kernels.
//!
//! Each ISA module mirrors the scalar reference bit for bit; a kernel that
//! has no SIMD version for some type reports that (returns `None`/`false`)
//! and the dispatcher falls back to the reference. `neon.rs` and `wasm.rs`
//! will sit beside `avx2`.

use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(not(target_arch = "x86_64"))]
pub(crate) mod avx2 {
    //! Stand-in on non-x86 targets: never selected.
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
