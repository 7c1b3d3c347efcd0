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

/// Prompts of 64 tokens or more take the tiled attention arithmetic, so a
/// kept prefix serves a new prompt only where both took the same form: two
/// long prompts share it (and the reused, chunked answer equals the whole
/// one's), but a short prompt's prefix does not serve a long one.
#[test]
fn reuse_follows_the_attention_form() {
    let rt = runtime("smollm2");
    let system = Message::new(
        "system",
        "You are a careful assistant. You answer in one short sentence, you never \
         invent facts, and when a question is about geography you name the \
         continent as well as the place itself. If you are unsure, you say so \
         plainly and suggest where the user could look the answer up.",
    );
    let ask = |q: &str| {
        rt.chat_prompt(&[system.clone(), Message::new("user", q)])
            .unwrap()
    };
    let long_a = ask("Name a planet.");
    let long_b = ask("Name a river.");
    let short = rt
        .chat_prompt(&[Message::new("system", "You are a careful assistant.")])
        .unwrap();
    assert!(
        long_a.len() >= 64 && short.len() < 64,
        "{} {}",
        long_a.len(),
        short.len()
    );
    for (kept, asked, reusable) in [(&long_a, &long_b, true), (&short, &long_b, false)] {
        let mut cache = PrefixCache::new(4, 64 << 20, 4);
        let mut first = rt.start(kept.clone(), params(), Some(512)).unwrap();
        rt.step_batch(&mut [&mut first], usize::MAX).unwrap();
        cache.remember(&first, 0);
        let mut reused = rt.start(asked.clone(), params(), Some(512)).unwrap();
        let n = cache.seed(&mut reused, 0).unwrap();
        if reusable {
            assert!(n >= 64 && n < asked.len(), "reused {n} of {}", asked.len());
        } else {
            assert_eq!(n, 0, "a one-row prefix served a tiled prompt");
        }
        let mut whole = rt.start(asked.clone(), params(), Some(512)).unwrap();
        rt.step_batch(&mut [&mut whole], usize::MAX).unwrap();
        run(&rt, &mut reused);
        run(&rt, &mut whole);
        let lp = |s: &Sequence| serde_json::to_string(s.steps()).unwrap();
        assert_eq!(lp(&reused), lp(&whole), "reuse changed the answer");
    }
}

/// A system prompt of about 200 tokens and eight questions after it.
fn eight_chats(rt: &Runtime) -> Vec<Vec<u32>> {
    let rules = "Answer in one short sentence. Use plain words. Never invent facts; \
        say you do not know when unsure. Prefer metric units. Spell numbers under ten. \
        Do not use lists or headings. Keep a friendly, calm tone. ";
    let system = Message::new(
        "system",
        format!(
            "You are the help desk of a small public library. {}",
            rules.repeat(4)
        ),
    );
    [
        "When do you open?",
        "Can I renew a book?",
        "Do you have maps?",
        "Is there wifi?",
        "Where is the toilet?",
        "Can kids get a card?",
        "Do you sell coffee?",
        "How late is the desk staffed?",
    ]
    .iter()
    .map(|q| {
        rt.chat_prompt(&[system.clone(), Message::new("user", *q)])
            .unwrap()
    })
    .collect()
}

/// Eight sequences sharing a system prompt hold its full blocks once: the
/// pool holds fewer bytes than for eight separate copies, every answer is
/// the same bits, and the pool is empty once they and the cache are gone.
#[test]
fn a_shared_system_prompt_is_held_once() {
    let rt = runtime("smollm2");
    let prompts = eight_chats(&rt);
    let shared_len = prompts
        .iter()
        .map(|p| {
            p.iter()
                .zip(&prompts[0])
                .take_while(|(a, b)| a == b)
                .count()
        })
        .min()
        .unwrap();
    assert!(shared_len > 150, "the system prompt is {shared_len} tokens");

    let prefill_all = |seqs: &mut Vec<Sequence>| {
        while seqs.iter().any(|s| s.prefilling()) {
            let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
            rt.step_batch(&mut refs, 512).unwrap();
        }
    };
    let finish_all = |seqs: &mut Vec<Sequence>| {
        while seqs.iter().any(|s| s.finished().is_none()) {
            let mut refs: Vec<&mut Sequence> = seqs.iter_mut().collect();
            rt.step_batch(&mut refs, 512).unwrap();
        }
    };
    let lp = |s: &Sequence| serde_json::to_string(s.steps()).unwrap();

    // Without sharing.
    let mut alone: Vec<Sequence> = prompts
        .iter()
        .map(|p| rt.start(p.clone(), params(), Some(512)).unwrap())
        .collect();
    prefill_all(&mut alone);
    let unshared = rt.kv_in_use();
    finish_all(&mut alone);
    let alone_steps: Vec<String> = alone.iter().map(lp).collect();
    drop(alone);
    assert_eq!(rt.kv_in_use(), 0);

    // With sharing: the first prompt is kept, the other seven seed from it.
    let mut cache = PrefixCache::new(4, 64 << 20, 16);
    let mut seqs: Vec<Sequence> = Vec::new();
    let mut first = rt.start(prompts[0].clone(), params(), Some(512)).unwrap();
    rt.step_batch(&mut [&mut first], usize::MAX).unwrap();
    cache.remember(&first, 0);
    seqs.push(first);
    for p in &prompts[1..] {
        let mut s = rt.start(p.clone(), params(), Some(512)).unwrap();
        assert!(cache.seed(&mut s, 0).unwrap() >= shared_len);
        seqs.push(s);
    }
    prefill_all(&mut seqs);
    let shared = rt.kv_in_use();
    let block = rt.kv_stats().block_bytes;
    eprintln!(
        "8 prompts of {}..{} tokens sharing {shared_len}: pool {} KiB unshared, {} KiB shared \
         (blocks of {} KiB)",
        prompts.iter().map(Vec::len).min().unwrap(),
        prompts.iter().map(Vec::len).max().unwrap(),
        unshared / 1024,
        shared / 1024,
        block / 1024
    );
    // Seven sequences hold the prefix's full blocks instead of their own.
    let full_blocks = shared_len / rt.kv_stats().block_positions;
    // (Less one block: the kept prompt's partial block is copied once more
    // when the first sequence writes past it.)
    assert!(
        unshared.saturating_sub(shared) >= (7 * full_blocks - 1) * block,
        "sharing saved {} of {} bytes",
        unshared - shared,
        unshared
    );
    finish_all(&mut seqs);
    let got: Vec<String> = seqs.iter().map(lp).collect();
    assert_eq!(got, alone_steps, "sharing changed an answer");
    drop(seqs);
    assert!(rt.kv_in_use() > 0, "the kept prefix still holds its blocks");
    assert_eq!(rt.kv_in_use(), cache.bytes());
    drop(cache);
    assert_eq!(rt.kv_in_use(), 0, "every block went back to the pool");
}

/// When the pool runs short, kept prefixes are released before a request
/// is refused; a request that cannot fit even then is a clear error.
#[test]
fn pool_pressure_releases_kept_prefixes_first() {
    let rt = runtime("smollm2");
    let prompts = eight_chats(&rt);
    let mut cache = PrefixCache::new(4, 64 << 20, 16);
    let mut first = rt.start(prompts[0].clone(), params(), Some(512)).unwrap();
    rt.step_batch(&mut [&mut first], usize::MAX).unwrap();
    cache.remember(&first, 0);
    drop(first);
    let kept = rt.kv_in_use();
    assert!(kept > 0 && cache.len() == 1);

    // Room for one whole request, not for it and the kept prefix.
    let need = rt.kv_bytes_for_request(prompts[1].len(), params().max_tokens, Some(512));
    rt.set_kv_capacity(need);
    let mut other = rt.start(prompts[1].clone(), params(), Some(512)).unwrap();
    // Another key: nothing is reused, every block is new.
    assert_eq!(cache.seed(&mut other, 7).unwrap(), 0);
    run(&rt, &mut other);
    assert!(cache.is_empty(), "the kept prefix was released");
    drop(other);

    rt.set_kv_capacity(rt.kv_bytes_for(prompts[1].len()) / 2);
    let mut too_big = rt.start(prompts[1].clone(), params(), Some(512)).unwrap();
    let err = rt.step_batch(&mut [&mut too_big], usize::MAX).unwrap_err();
    assert!(err.is_kv_pool_full(), "{err}");
    assert!(too_big.prefilling(), "the refused step changed nothing");
    rt.set_kv_capacity(usize::MAX);
    run(&rt, &mut too_big);
}
