//! Log-probabilities from raw logits.
//!
//! This module owns: `log_softmax` and the top-K (id, ln p) helper used for
//! `logprobs` in responses and for comparing with reference outputs. Sums
//! run in f64 so a 262k-entry vocabulary loses no precision.

/// Natural-log softmax of `logits`. Entries of `-inf` stay `-inf`; if every
/// entry is `-inf` the result is all `-inf`.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = log_sum_exp(logits);
    logits.iter().map(|&l| (l as f64 - lse) as f32).collect()
}

fn log_sum_exp(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    if max == f64::NEG_INFINITY {
        return f64::INFINITY;
    }
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    max + sum.ln()
}

/// The `k` most likely tokens with their natural-log probabilities over the
/// full vocabulary, most likely first; equal logits order by lower id.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 || logits.is_empty() {
        return Vec::new();
    }
    // Keep a small sorted list instead of sorting the whole vocabulary.
    let better = |a: (u32, f32), b: (u32, f32)| a.1 > b.1 || (a.1 == b.1 && a.0 < b.0);
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        let cand = (i as u32, l);
        if l.is_nan() {
            continue;
        }
        if best.len() == k && !better(cand, best[k - 1]) {
            continue;
        }
        let pos = best
            .iter()
            .position(|&b| better(cand, b))
            .unwrap_or(best.len());
        best.insert(pos, cand);
        best.truncate(k);
    }
    let lse = log_sum_exp(logits);
    best.into_iter()
        .map(|(id, l)| (id, (l as f64 - lse) as f32))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_normalises() {
        let lp = log_softmax(&[1.0, 2.0, 3.0]);
        let total: f64 = lp.iter().map(|&x| (x as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((lp[2] - lp[1] - 1.0).abs() < 1e-6);
        let lp = log_softmax(&[0.0, f32::NEG_INFINITY]);
        assert_eq!(lp[0], 0.0);
        assert_eq!(lp[1], f32::NEG_INFINITY);
    }

    #[test]
    fn top_k_with_ties_by_lower_id() {
        let logits = [0.5, 2.0, 1.0, 2.0, -1.0];
        let top = top_logprobs(&logits, 3);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 3, 2]);
        let lse = (logits.iter().map(|&l: &f32| (l as f64).exp()).sum::<f64>()).ln();
        assert!((top[0].1 as f64 - (2.0 - lse)).abs() < 1e-6);
        assert_eq!(top_logprobs(&logits, 10).len(), 5);
    }
}
