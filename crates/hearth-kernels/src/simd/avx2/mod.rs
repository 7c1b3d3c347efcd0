//! x86_64 kernels using AVX2, FMA and F16C.
pub(crate) mod ops;

use crate::GgmlType;
use std::ops::Range;

pub(crate) unsafe fn quantize_row(_t: GgmlType, _src: &[f32], _dst: &mut [u8]) -> bool {
    false
}

pub(crate) unsafe fn vec_dot(_t: GgmlType, _n: usize, _w: &[u8], _x: &[u8]) -> Option<f32> {
    None
}

pub(crate) unsafe fn gemm(
    _t: GgmlType,
    _n: usize,
    _w: &[u8],
    _rows: Range<usize>,
    _x: &[u8],
    _ncols: usize,
    _y: &mut [f32],
) -> bool {
    false
}
