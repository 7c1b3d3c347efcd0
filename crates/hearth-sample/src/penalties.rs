//! Repetition, presence and frequency penalties.
//!
//! This module owns: the arithmetic, which follows llama.cpp's penalties
//! sampler — for each token seen `count > 0` times among the recent tokens,
//! a logit `<= 0` is multiplied by the repetition penalty and a positive one
//! divided by it (so the penalty always lowers it), then
//! `count * frequency + presence` is subtracted (OpenAI's definitions).

use std::collections::HashMap;

/// Penalty strengths.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Penalties {
    pub repeat: f32,
    pub presence: f32,
    pub frequency: f32,
}

impl Penalties {
    pub fn is_noop(&self) -> bool {
        self.repeat == 1.0 && self.presence == 0.0 && self.frequency == 0.0
    }
}

/// Applies the penalties to `logits` for the tokens in `recent` (the caller
/// passes only the window it wants counted). Ids outside `logits` are ignored.
pub fn apply_penalties(logits: &mut [f32], recent: &[u32], p: Penalties) {
    if p.is_noop() || recent.is_empty() {
        return;
    }
    let mut counts: HashMap<u32, u32> = HashMap::new();
    for &id in recent {
        *counts.entry(id).or_insert(0) += 1;
    }
    for (id, count) in counts {
        let Some(l) = logits.get_mut(id as usize) else {
            continue;
        };
        if *l <= 0.0 {
            *l *= p.repeat;
        } else {
            *l /= p.repeat;
        }
        *l -= count as f32 * p.frequency + p.presence;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let mut l = vec![2.0, -1.0, 0.0, 3.0, 1.0];
        let p = Penalties {
            repeat: 2.0,
            presence: 0.5,
            frequency: 0.25,
        };
        apply_penalties(&mut l, &[0, 1, 1, 2, 9], p);
        // id 0: 2/2 - (1*0.25 + 0.5) = 0.25
        // id 1: -1*2 - (2*0.25 + 0.5) = -3
        // id 2: 0*2 - 0.75 = -0.75
        assert_eq!(l, vec![0.25, -3.0, -0.75, 3.0, 1.0]);
    }

    #[test]
    fn noop_leaves_logits() {
        let mut l = vec![1.0, 2.0];
        apply_penalties(
            &mut l,
            &[0, 1],
            Penalties {
                repeat: 1.0,
                presence: 0.0,
                frequency: 0.0,
            },
        );
        assert_eq!(l, vec![1.0, 2.0]);
    }
}
