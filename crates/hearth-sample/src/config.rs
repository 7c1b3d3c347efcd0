//! Sampler settings.
//!
//! This module owns: [`SamplerConfig`], its defaults (llama.cpp's) and its
//! serde form (every field optional on input; absent fields take defaults).

use serde::{Deserialize, Serialize};

/// How to pick tokens. Defaults match llama.cpp's command-line defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplerConfig {
    /// Logits are divided by this before drawing; `<= 0` means greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 disables.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches `top_p`; `>= 1` disables.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely; `<= 0` disables.
    pub min_p: f32,
    /// llama.cpp-style repetition penalty over the last `repeat_last_n`
    /// tokens: positive logits are divided by it, others multiplied. 1 disables.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalties look at; 0 disables them.
    pub repeat_last_n: usize,
    /// OpenAI presence penalty: subtracted once from every token seen.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty: subtracted once per occurrence.
    pub frequency_penalty: f32,
    /// Seed of the random generator; `None` seeds from the clock and process.
    pub seed: Option<u64>,
    /// Filters keep at least this many candidates.
    pub min_keep: usize,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            min_keep: 1,
        }
    }
}

impl SamplerConfig {
    /// Greedy decoding: always the most likely token.
    pub fn greedy() -> Self {
        SamplerConfig {
            temperature: 0.0,
            ..Default::default()
        }
    }

    /// Whether this configuration always picks the arg-max.
    pub fn is_greedy(&self) -> bool {
        self.temperature <= 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_partial_json() {
        let c: SamplerConfig = serde_json::from_str(r#"{"temperature": 0.2, "seed": 7}"#).unwrap();
        assert_eq!(c.temperature, 0.2);
        assert_eq!(c.seed, Some(7));
        assert_eq!(c.top_k, 40);
        assert_eq!(c.top_p, 0.95);
        assert_eq!(c.min_p, 0.05);
        assert_eq!(c.repeat_penalty, 1.0);
        let back: SamplerConfig =
            serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
