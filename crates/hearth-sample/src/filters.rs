//! Candidate filters: top-k, top-p, min-p, and temperature.
//!
//! This module owns: each filter's rule, as llama.cpp's samplers define it.
//! All filters keep at least `min_keep` candidates (and never empty a
//! non-empty set), so a draw always has something to pick.

use crate::candidates::Candidates;

/// Keeps the `k` highest logits (ties to lower ids). `k == 0` disables.
pub fn top_k(c: &mut Candidates, k: usize, min_keep: usize) {
    if k == 0 || c.items.is_empty() {
        return;
    }
    let k = k.max(min_keep).min(c.items.len());
    c.sort();
    c.items.truncate(k);
}

/// Keeps the most likely candidates until their probabilities add up to at
/// least `p`. `p >= 1` disables.
pub fn top_p(c: &mut Candidates, p: f32, min_keep: usize) {
    if p >= 1.0 || c.items.is_empty() {
        return;
    }
    c.sort();
    let probs = c.probs();
    let mut cum = 0.0f64;
    let mut keep = c.items.len();
    for (i, pr) in probs.iter().enumerate() {
        cum += pr;
        if cum >= p as f64 && i + 1 >= min_keep {
            keep = i + 1;
            break;
        }
    }
    c.items.truncate(keep.max(1));
}

/// Drops candidates whose probability is below `p` times the largest one
/// (compared on logits: `logit >= max + ln p`). `p <= 0` disables.
pub fn min_p(c: &mut Candidates, p: f32, min_keep: usize) {
    if p <= 0.0 || c.items.is_empty() {
        return;
    }
    c.sort();
    let max = c.items[0].logit;
    let threshold = max + p.ln();
    let passing = c.items.iter().take_while(|x| x.logit >= threshold).count();
    c.items
        .truncate(passing.max(min_keep).max(1).min(c.items.len()));
}

/// Divides logits by `t` (callers treat `t <= 0` as greedy before this).
pub fn temperature(c: &mut Candidates, t: f32) {
    if t <= 0.0 || t == 1.0 {
        return;
    }
    for x in &mut c.items {
        x.logit /= t;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(l: &[f32]) -> Candidates {
        Candidates::from_logits(l)
    }

    #[test]
    fn top_k_keeps_highest_with_lower_id_on_ties() {
        let mut c = cands(&[1.0, 3.0, 2.0, 3.0, 0.0]);
        top_k(&mut c, 3, 1);
        assert_eq!(c.ids(), vec![1, 3, 2]);
        let mut c = cands(&[1.0, 3.0]);
        top_k(&mut c, 0, 1);
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn top_p_cuts_at_cumulative_mass() {
        // probabilities 0.5, 0.25, 0.125, 0.125
        let l = [2f32.ln() + 1.0, 1.0, 0.5f32.ln() + 1.0, 0.5f32.ln() + 1.0];
        let mut c = cands(&l);
        top_p(&mut c, 0.7, 1);
        assert_eq!(c.ids(), vec![0, 1]);
        let mut c = cands(&l);
        top_p(&mut c, 0.5, 1);
        assert_eq!(c.ids(), vec![0]);
        let mut c = cands(&l);
        top_p(&mut c, 1.0, 1);
        assert_eq!(c.len(), 4);
    }

    #[test]
    fn min_p_relative_threshold() {
        // relative probabilities 1, 0.5, 0.1, 0.01
        let l = [0.0, 0.5f32.ln(), 0.1f32.ln(), 0.01f32.ln()];
        let mut c = cands(&l);
        min_p(&mut c, 0.2, 1);
        assert_eq!(c.ids(), vec![0, 1]);
        let mut c = cands(&l);
        min_p(&mut c, 0.05, 1);
        assert_eq!(c.ids(), vec![0, 1, 2]);
        let mut c = cands(&l);
        min_p(&mut c, 0.9, 3);
        assert_eq!(c.len(), 3, "min_keep wins");
    }

    #[test]
    fn temperature_scales() {
        let mut c = cands(&[2.0, -4.0]);
        temperature(&mut c, 0.5);
        assert_eq!(c.items()[0].logit, 4.0);
        assert_eq!(c.items()[1].logit, -8.0);
    }
}
