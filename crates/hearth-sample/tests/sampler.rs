//! Behaviour of the whole sampler chain.

use hearth_sample::{argmax, ban, top_logprobs, Sampler, SamplerConfig};

fn cfg(seed: u64) -> SamplerConfig {
    SamplerConfig {
        seed: Some(seed),
        top_k: 0,
        top_p: 1.0,
        min_p: 0.0,
        temperature: 1.0,
        ..Default::default()
    }
}

#[test]
fn greedy_is_argmax_with_lowest_id_on_ties() {
    let mut s = Sampler::new(SamplerConfig::greedy());
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), Some(0));
    assert_eq!(argmax(&[]), None);
}

#[test]
fn same_seed_same_tokens_different_seed_differs() {
    let logits: Vec<f32> = (0..50).map(|i| ((i * 7919) % 13) as f32 * 0.3).collect();
    let run = |seed| {
        let mut s = Sampler::new(cfg(seed));
        (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
    };
    assert_eq!(run(1234), run(1234));
    assert_ne!(run(1234), run(4321));
}

#[test]
fn draws_follow_the_softmax_distribution() {
    // probabilities 0.5, 0.3, 0.2
    let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
    let mut s = Sampler::new(cfg(7));
    let n = 20_000;
    let mut counts = [0usize; 3];
    for _ in 0..n {
        counts[s.sample(&logits) as usize] += 1;
    }
    for (c, p) in counts.iter().zip([0.5, 0.3, 0.2]) {
        let freq = *c as f64 / n as f64;
        // ~6 standard deviations at n = 20 000.
        assert!((freq - p).abs() < 0.02, "counts {counts:?}");
    }
}

#[test]
fn temperature_sharpens_and_flattens() {
    let logits = [1.0f32, 0.0];
    let freq_of_0 = |t: f32| {
        let mut s = Sampler::new(SamplerConfig {
            temperature: t,
            ..cfg(3)
        });
        (0..10_000).filter(|_| s.sample(&logits) == 0).count() as f64 / 10_000.0
    };
    let p1 = 1.0 / (1.0 + (-1.0f64).exp()); // 0.731
    let p_half = 1.0 / (1.0 + (-2.0f64).exp()); // 0.881
    let p_two = 1.0 / (1.0 + (-0.5f64).exp()); // 0.622
    assert!((freq_of_0(1.0) - p1).abs() < 0.03);
    assert!((freq_of_0(0.5) - p_half).abs() < 0.03);
    assert!((freq_of_0(2.0) - p_two).abs() < 0.03);
}

#[test]
fn top_k_one_is_greedy_even_when_hot() {
    let mut s = Sampler::new(SamplerConfig {
        top_k: 1,
        temperature: 5.0,
        ..cfg(9)
    });
    for _ in 0..100 {
        assert_eq!(s.sample(&[0.0, 0.1, 0.05]), 1);
    }
}

#[test]
fn min_p_removes_unlikely_tokens() {
    // token 2 has relative probability e^-5 ≈ 0.0067 < 0.05
    let logits = [0.0f32, 0.0, -5.0];
    let mut s = Sampler::new(SamplerConfig {
        min_p: 0.05,
        ..cfg(11)
    });
    for _ in 0..2000 {
        assert_ne!(s.sample(&logits), 2);
    }
}

#[test]
fn top_p_removes_the_tail() {
    // probabilities 0.6, 0.3, 0.1: top_p 0.8 keeps {0, 1}
    let logits = [0.6f32.ln(), 0.3f32.ln(), 0.1f32.ln()];
    let mut s = Sampler::new(SamplerConfig {
        top_p: 0.8,
        ..cfg(5)
    });
    let mut seen = [0usize; 3];
    for _ in 0..3000 {
        seen[s.sample(&logits) as usize] += 1;
    }
    assert_eq!(seen[2], 0);
    assert!(seen[1] > 500, "{seen:?}");
}

#[test]
fn banned_tokens_are_never_drawn() {
    let logits = [5.0f32, 0.0, 0.0];
    let mut s = Sampler::new(cfg(1));
    s.set_banned(vec![0]);
    for _ in 0..500 {
        assert_ne!(s.sample(&logits), 0);
    }
    let mut g = Sampler::new(SamplerConfig::greedy());
    g.set_banned(vec![0]);
    assert_eq!(g.sample(&logits), 1);
    let mut l = logits;
    ban(&mut l, &[2, 99]);
    assert_eq!(l[2], f32::NEG_INFINITY);
}

#[test]
fn repetition_penalty_steers_greedy_away_from_recent_tokens() {
    let logits = [2.0f32, 1.5, 0.0];
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 1.5,
        ..SamplerConfig::greedy()
    });
    assert_eq!(s.sample(&logits), 0);
    s.accept(0); // 2.0 / 1.5 = 1.33 < 1.5
    assert_eq!(s.sample(&logits), 1);
}

#[test]
fn penalty_window_forgets_old_tokens() {
    let logits = [2.0f32, 1.9];
    let mut s = Sampler::new(SamplerConfig {
        repeat_penalty: 2.0,
        repeat_last_n: 2,
        ..SamplerConfig::greedy()
    });
    s.accept(0);
    assert_eq!(s.sample(&logits), 1);
    s.accept(1);
    s.accept(1); // token 0 left the window
    assert_eq!(s.recent().collect::<Vec<_>>(), vec![1, 1]);
    assert_eq!(s.sample(&logits), 0);
}

#[test]
fn presence_and_frequency_penalties() {
    // token 0 seen 3 times: 3.0 - (3*0.5 + 1.0) = 0.5 < 1.0
    let logits = [3.0f32, 1.0];
    let mut s = Sampler::new(SamplerConfig {
        presence_penalty: 1.0,
        frequency_penalty: 0.5,
        ..SamplerConfig::greedy()
    });
    for _ in 0..3 {
        s.accept(0);
    }
    assert_eq!(s.sample(&logits), 1);
    let mut one = Sampler::new(SamplerConfig {
        presence_penalty: 1.0,
        frequency_penalty: 0.5,
        ..SamplerConfig::greedy()
    });
    one.accept(0); // 3.0 - 1.5 = 1.5 > 1.0
    assert_eq!(one.sample(&logits), 0);
}

#[test]
fn top_logprobs_over_a_large_vocabulary() {
    let mut logits = vec![0.0f32; 262_144];
    logits[77] = 10.0;
    logits[5] = 9.0;
    logits[6] = 9.0;
    let top = top_logprobs(&logits, 3);
    assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![77, 5, 6]);
    let lse = (10f64.exp() + 2.0 * 9f64.exp() + 262_141.0).ln();
    assert!((top[0].1 as f64 - (10.0 - lse)).abs() < 1e-5);
}

#[test]
fn sampler_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Sampler>();
}

/// The one-pass definition `argmax` must agree with: first index of the
/// largest non-NaN logit, 0 when there is none.
fn argmax_by_definition(v: &[f32]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    let mut best: Option<usize> = None;
    for (i, &l) in v.iter().enumerate() {
        if !l.is_nan() && best.is_none_or(|b| l > v[b]) {
            best = Some(i);
        }
    }
    Some(best.unwrap_or(0) as u32)
}

#[test]
fn argmax_matches_its_definition_on_odd_lengths_ties_and_nans() {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for len in [1usize, 2, 15, 16, 17, 31, 33, 100, 1000, 49_153] {
        for trial in 0..20 {
            let v: Vec<f32> = (0..len)
                .map(|_| match next() % 16 {
                    // Few distinct values, so ties across lanes are common.
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 if trial % 5 == 0 => f32::INFINITY,
                    k => (k % 5) as f32 - 2.0,
                })
                .collect();
            assert_eq!(
                argmax(&v),
                argmax_by_definition(&v),
                "len {len} trial {trial}"
            );
        }
        let nans = vec![f32::NAN; len];
        assert_eq!(argmax(&nans), Some(0));
        let mut late = vec![f32::NEG_INFINITY; len];
        late[len - 1] = -1.0;
        assert_eq!(argmax(&late), Some(len as u32 - 1));
    }
}
