//! AVX2 element-wise ops.
pub(crate) use crate::ops::scalar::*;
