//! Reusing a prompt prefix's keys and values never changes an answer: a
//! prompt started from a kept prefix gives bit-identical log-probabilities
//! and tokens to the same prompt computed whole, on both default models.

use hearth_runtime::{Message, PrefixCache, Runtime, SeqParams, Sequence};
use hearth_sample::SamplerConfig;

fn runtime(model: &str) -> Runtime {
    let path = hearth_store::Store::open_default()
        .and_then(|s| s.ensure(model, hearth_store::Progress::Quiet))
        .unwrap_or_else(|e| panic!("this test needs the default model {model}: {e}"));
    Runtime::load(&path, 2).expect("load")
}

fn params() -> SeqParams {
    SeqParams {
        max_tokens: 12,
        sampler: SamplerConfig::greedy(),
        logprobs: true,
        top_logprobs: 3,
        ..SeqParams::default()
    }
}

fn run(rt: &Runtime, seq: &mut Sequence) {
    while seq.finished().is_none() {
        rt.step_batch(&mut [seq], 7).expect("step");
    }
}

#[test]
fn a_reused_prefix_gives_the_same_answer() {
    for model in ["smollm2", "gemma3"] {
        let rt = runtime(model);
        let system = Message::new("system", "You are a careful assistant who answers briefly.");
        let a = rt
            .chat_prompt(&[system.clone(), Message::new("user", "Name a planet.")])
            .unwrap();
        let b = rt
            .chat_prompt(&[system, Message::new("user", "Name a river.")])
            .unwrap();

        let mut cache = PrefixCache::new(4, 64 << 20, 4);
        let mut first = rt.start(a, params(), Some(512)).unwrap();
        assert_eq!(cache.seed(&mut first, 0).unwrap(), 0, "nothing kept yet");
        rt.step_batch(&mut [&mut first], usize::MAX).unwrap();
        cache.remember(&first, 0);
        assert_eq!(cache.len(), 1);

        let mut reused = rt.start(b.clone(), params(), Some(512)).unwrap();
        let n = cache.seed(&mut reused, 0).unwrap();
        assert!(n > 8 && n < b.len(), "{model}: reused {n} of {}", b.len());
        // Another key (another adapter) must not match.
        let mut other = rt.start(b.clone(), params(), Some(512)).unwrap();
        assert_eq!(cache.seed(&mut other, 1).unwrap(), 0);

        let mut whole = rt.start(b, params(), Some(512)).unwrap();
        run(&rt, &mut reused);
        run(&rt, &mut whole);
        // Shortest round-trip forms: equal text is equal bits.
        let lp = |s: &Sequence| serde_json::to_string(s.steps()).unwrap();
        assert_eq!(lp(&reused), lp(&whole), "{model}: reuse changed the answer");
    }
}
