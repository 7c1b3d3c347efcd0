//! The paged KV cache: logits do not depend on the block size (a block as
//! long as the context is the old contiguous layout), shared prefix blocks
//! save pool memory without changing an answer, blocks go back to the pool,
//! and a full pool is a clear error that leaves every cache as it was.

mod common;

use std::sync::{Arc, Mutex, Weak};

use common::{Arch, N_VOCAB};
use hearth_engine::{
    BatchItem, EngineError, Forms, KvCache, KvGeometry, KvPool, KvReclaim, Model, PromptPlan, Want,
};
use hearth_gguf::GgmlType;

const N_CTX: usize = 80;

fn prompt(n: usize, seed: u32) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + seed * 13 + 3) % N_VOCAB as u32)
        .collect()
}

fn model(arch: Arch, block_positions: usize, capacity: usize) -> Model {
    common::load(&common::tiny(arch, 9), GgmlType::Q8_0, 2)
        .with_kv_pool(block_positions, capacity)
        .unwrap()
}

/// One base-model sequence of a batch.
fn item<'a>(cache: &'a mut KvCache, tokens: &'a [u32], want: Want) -> BatchItem<'a> {
    BatchItem {
        cache,
        tokens,
        want,
        adapter: None,
    }
}

fn feed(model: &Model, cache: &mut KvCache, tokens: &[u32], want: Want) -> Vec<f32> {
    model
        .forward(&mut [item(cache, tokens, want)])
        .unwrap()
        .remove(0)
}

/// Every position's logits for `tokens`: a prefill in chunks of `chunk`,
/// then the rest one token at a time, so both the prefill and the decode
/// paths cross block boundaries.
fn run(model: &Model, tokens: &[u32], chunk: usize, decode_from: usize) -> Vec<f32> {
    run_planned(model, tokens, chunk, decode_from, 0)
}

/// [`run`] with the first `prompt` tokens planned as a prompt
/// ([`KvCache::plan_one_call`]).
fn run_planned(
    model: &Model,
    tokens: &[u32],
    chunk: usize,
    decode_from: usize,
    prompt: usize,
) -> Vec<f32> {
    let mut cache = model.new_cache(N_CTX);
    cache.plan_one_call(prompt);
    let mut out = Vec::new();
    for part in tokens[..decode_from].chunks(chunk) {
        out.extend(feed(model, &mut cache, part, Want::All));
    }
    for t in &tokens[decode_from..] {
        out.extend(feed(model, &mut cache, std::slice::from_ref(t), Want::Last));
    }
    assert_eq!(cache.len(), tokens.len());
    out
}

#[test]
fn logits_do_not_depend_on_the_block_size() {
    // Gemma 3's tiny model has sliding-window layers (window 3), so key
    // runs start inside blocks too.
    for arch in [Arch::Llama, Arch::Gemma3] {
        let tokens = prompt(61, 1);
        // One block holds the whole context: the contiguous layout.
        let contiguous = model(arch, N_CTX, usize::MAX);
        let reference = run(&contiguous, &tokens, 61, 61);
        let decoded = run(&contiguous, &tokens, 13, 40);
        assert!(
            reference == decoded,
            "{arch:?}: chunking changed the logits"
        );
        for bs in [1, 2, 3, 5, 16, 32] {
            let paged = model(arch, bs, usize::MAX);
            for (chunk, decode_from) in [(61, 61), (13, 40), (4, 9)] {
                let got = run(&paged, &tokens, chunk, decode_from);
                assert!(
                    got == reference,
                    "{arch:?} blocks of {bs}, chunks of {chunk}: logits differ from contiguous"
                );
            }
            assert_eq!(paged.kv_pool().in_use(), 0, "caches dropped, pool empty");
        }
    }
}

/// Positions planned for the tiled attention give the same bits however
/// they are fed: the whole prompt in one pass, in chunks that cut its
/// 64-key tiles anywhere, a few tokens and then one at a time, in blocks
/// of any size, and beside another sequence that takes the one-row form.
/// Positions past the plan take the one-row form, so a 70-token plan
/// followed by decoding gives the whole-prompt numbers for the first 70
/// positions only.
#[test]
fn tiled_positions_do_not_depend_on_chunks_blocks_or_neighbours() {
    for arch in [Arch::Llama, Arch::Gemma3] {
        let tokens = prompt(75, 4);
        let contiguous = model(arch, N_CTX, usize::MAX);
        let reference = run_planned(&contiguous, &tokens, 75, 75, 75);
        for bs in [1, 3, 16, 32] {
            let paged = model(arch, bs, usize::MAX);
            for (chunk, decode_from) in [(75, 75), (13, 75), (50, 66), (4, 9)] {
                let got = run_planned(&paged, &tokens, chunk, decode_from, 75);
                assert!(
                    got == reference,
                    "{arch:?} blocks of {bs}, chunks of {chunk} from {decode_from}: tiled logits differ"
                );
            }
        }
        let short = run_planned(&contiguous, &tokens, 75, 75, 70);
        let v = N_VOCAB;
        assert!(
            short[..70 * v] == reference[..70 * v],
            "{arch:?}: planned positions changed"
        );
        assert!(
            short[70 * v..] != reference[70 * v..],
            "{arch:?}: unplanned positions tiled"
        );
        // Beside a sequence that takes the one-row form.
        let other = prompt(20, 9);
        let mut a = contiguous.new_cache(N_CTX);
        a.plan_one_call(75);
        let mut b = contiguous.new_cache(N_CTX);
        let out = contiguous
            .forward(&mut [
                item(&mut a, &tokens, Want::All),
                item(&mut b, &other, Want::All),
            ])
            .unwrap();
        assert!(
            out[0] == reference,
            "{arch:?}: a neighbour changed the tiled logits"
        );
        assert!(
            out[1] == run(&contiguous, &other, 20, 20),
            "{arch:?}: a tiled neighbour changed the one-row logits"
        );
    }
}

#[test]
fn small_blocks_still_match_the_f32_reference() {
    let m = common::tiny(Arch::Gemma3, 7);
    let tokens = prompt(9, 2);
    let reference = common::reference_logits(&m, &tokens);
    let model = common::load(&m, GgmlType::F32, 2)
        .with_kv_pool(2, usize::MAX)
        .unwrap();
    let all = run(&model, &tokens, 9, 9);
    for (p, want) in reference.iter().enumerate() {
        let got = &all[p * N_VOCAB..(p + 1) * N_VOCAB];
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        let err = got
            .iter()
            .zip(want)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        // F16 attention arithmetic, as in `forward.rs`.
        assert!(err < 3e-3, "pos {p}: relative error {err}");
    }
}

/// Two sequences continuing one 10-token prefix in blocks of 4: the second
/// holds the prefix's two full blocks by reference, copies only the partial
/// third, and both give the logits they give computed alone.
#[test]
fn shared_prefix_blocks_save_memory_and_change_nothing() {
    for arch in [Arch::Llama, Arch::Gemma3] {
        let model = model(arch, 4, usize::MAX);
        let pool = model.kv_pool().clone();
        let bb = pool.block_bytes();
        let prefix = prompt(10, 3);
        let (sa, sb): (Vec<u32>, Vec<u32>) = (prompt(7, 4), prompt(9, 5));
        let whole = |suffix: &[u32]| {
            let mut c = model.new_cache(N_CTX);
            let mut t = prefix.clone();
            t.extend_from_slice(suffix);
            feed(&model, &mut c, &t, Want::From(prefix.len()))
        };
        let (alone_a, alone_b) = (whole(&sa), whole(&sb));
        assert_eq!(pool.in_use(), 0);

        let mut a = model.new_cache(N_CTX);
        feed(&model, &mut a, &prefix, Want::None);
        assert_eq!(pool.in_use(), 3 * bb);
        let mut b = KvCache::like(&a, N_CTX);
        b.copy_prefix(&a, prefix.len()).unwrap();
        assert_eq!(pool.in_use(), 3 * bb, "sharing takes no block");
        assert_eq!(b.shared_blocks(), 3);

        let mut items = [item(&mut a, &sa, Want::All), item(&mut b, &sb, Want::All)];
        let out = model.forward(&mut items).unwrap();
        assert!(out[0] == alone_a, "{arch:?}: the first sequence changed");
        assert!(
            out[1] == alone_b,
            "{arch:?}: the shared-prefix sequence changed"
        );
        // a: 17 positions = 5 blocks; b: 19 = 5 blocks, of which the two
        // full prefix blocks are a's.
        assert!(a.same_block(&b, 0) && a.same_block(&b, 1));
        assert!(
            !a.same_block(&b, 2),
            "the partial block was copied on write"
        );
        let shared = pool.in_use();
        assert_eq!(shared, 8 * bb);
        assert_eq!(a.bytes() + b.bytes(), 10 * bb, "without sharing");
        drop((a, b));
        assert_eq!(pool.in_use(), 0, "every block went back to the pool");
    }
}

#[test]
fn blocks_return_to_the_pool_and_are_reused() {
    let model = model(Arch::Llama, 4, usize::MAX);
    let pool = model.kv_pool().clone();
    let bb = pool.block_bytes();
    let tokens = prompt(30, 6);
    let first = run(&model, &tokens, 7, 20);
    let stats = pool.stats();
    assert_eq!(stats.in_use, 0);
    assert_eq!(stats.reserved, 8 * bb, "freed blocks are kept for reuse");
    // A second run takes the kept blocks: nothing new is reserved, and the
    // stale contents of reused blocks never show.
    let second = run(&model, &tokens, 5, 11);
    assert!(first == second);
    assert_eq!(pool.reserved(), 8 * bb);
    assert_eq!(pool.trim(), 8 * bb);
    assert_eq!(pool.reserved(), 0);

    // Truncation gives back the blocks past the new end.
    let mut c = model.new_cache(N_CTX);
    feed(&model, &mut c, &tokens, Want::None);
    assert_eq!(pool.in_use(), 8 * bb);
    c.truncate(9);
    assert_eq!(pool.in_use(), 3 * bb);
    c.clear();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn a_full_pool_is_an_error_that_changes_no_cache() {
    let unbounded = model(Arch::Llama, 4, usize::MAX);
    let bb = unbounded.kv_pool().block_bytes();
    let (p, q) = (prompt(6, 7), prompt(8, 8));
    let expect = {
        let (mut c1, mut c2) = (unbounded.new_cache(N_CTX), unbounded.new_cache(N_CTX));
        let mut items = [item(&mut c1, &p, Want::Last), item(&mut c2, &q, Want::Last)];
        unbounded.forward(&mut items).unwrap()
    };

    // The two prompts need 2 blocks each; the pool holds 3.
    let small = model(Arch::Llama, 4, 3 * bb + bb / 2);
    let pool = small.kv_pool().clone();
    let (mut c1, mut c2) = (small.new_cache(N_CTX), small.new_cache(N_CTX));
    let mut items = [item(&mut c1, &p, Want::Last), item(&mut c2, &q, Want::Last)];
    match small.forward(&mut items) {
        Err(EngineError::KvPoolFull {
            needed,
            free,
            capacity,
        }) => {
            assert_eq!(needed, 2 * bb);
            assert_eq!(free, bb + bb / 2);
            assert_eq!(capacity, 3 * bb + bb / 2);
        }
        other => panic!("expected KvPoolFull, got {:?}", other.map(|_| ())),
    }
    assert!(items.iter().all(|it| it.cache.is_empty()));
    assert_eq!(
        pool.in_use(),
        0,
        "blocks taken for the failed pass went back"
    );

    // Room made by the owner of the budget: the same pass now runs.
    assert_eq!(pool.set_capacity(4 * bb), 0);
    let out = small.forward(&mut items).unwrap();
    assert!(out == expect);
    assert_eq!(pool.in_use(), 4 * bb);
    // Shrinking below what is held takes nothing away but refuses more.
    assert_eq!(pool.set_capacity(2 * bb), 4 * bb);
    let mut items = [item(&mut c1, &[1, 2, 3], Want::Last)];
    assert!(matches!(
        small.forward(&mut items),
        Err(EngineError::KvPoolFull { free: 0, .. })
    ));
    assert_eq!(c1.len(), 6);
    drop((c1, c2));
    assert_eq!(pool.in_use(), 0);
    assert!(
        pool.reserved() <= 2 * bb,
        "kept blocks fit the new capacity"
    );
}

/// A holder of blocks it does not need (a prefix cache) is asked for them
/// before the pool refuses anyone.
#[test]
fn holders_release_blocks_before_the_pool_refuses() {
    struct Keeper(Mutex<Vec<KvCache>>);
    impl KvReclaim for Keeper {
        fn reclaim(&self, _bytes: usize) -> usize {
            let mut kept = self.0.lock().unwrap();
            let n: usize = kept.iter().map(|c| c.bytes()).sum();
            kept.clear();
            n
        }
    }
    let model = model(Arch::Llama, 4, usize::MAX);
    let pool = model.kv_pool().clone();
    let bb = pool.block_bytes();
    pool.set_capacity(4 * bb);
    let mut held = model.new_cache(N_CTX);
    feed(&model, &mut held, &prompt(12, 9), Want::None);
    let keeper = Arc::new(Keeper(Mutex::new(vec![held])));
    pool.register_reclaim(Arc::downgrade(&keeper) as Weak<dyn KvReclaim>);
    assert_eq!(pool.in_use(), 3 * bb);
    let mut c = model.new_cache(N_CTX);
    feed(&model, &mut c, &prompt(8, 10), Want::Last);
    assert!(keeper.0.lock().unwrap().is_empty(), "the keeper was asked");
    assert_eq!(pool.in_use(), 2 * bb);
}

#[test]
fn a_cache_of_another_shape_is_refused() {
    let llama = model(Arch::Llama, 4, usize::MAX);
    let gemma = model(Arch::Gemma3, 4, usize::MAX);
    let mut cache = gemma.new_cache(N_CTX);
    let mut items = [item(&mut cache, &[1, 2], Want::Last)];
    assert!(matches!(
        llama.forward(&mut items),
        Err(EngineError::CacheShape { .. })
    ));
}

/// Keys and values are stored head by head, so a geometry whose head
/// count does not divide its key and value sizes is refused, by name.
#[test]
fn a_geometry_whose_heads_do_not_divide_is_refused() {
    let good = KvGeometry {
        n_layer: 2,
        n_head_kv: 3,
        k_dim: 48,
        v_dim: 48,
        block_positions: 4,
    };
    assert!(KvPool::new(good, usize::MAX).is_ok());
    assert_eq!(good.head_dims(), (16, 16));
    for bad in [
        KvGeometry {
            n_head_kv: 0,
            ..good
        },
        KvGeometry { k_dim: 47, ..good },
        KvGeometry { v_dim: 50, ..good },
    ] {
        let Err(err) = KvPool::new(bad, usize::MAX) else {
            panic!("{bad:?} was accepted");
        };
        assert!(err.to_string().contains("kv block"), "{err}");
    }
}

/// The batches a prompt is cut into: llama.cpp's batches of 512 rows from
/// the start when it decodes a prompt in one call (and llama-server does
/// the same for a model without sliding-window layers); llama-server holds
/// back a windowed model's last 4 tokens, and the 512 before them, as
/// batches of their own.
#[test]
fn a_prompt_plan_cuts_as_llama_cpp_does() {
    let batches = |p: PromptPlan| -> Vec<(usize, usize)> {
        p.batches().iter().map(|b| (b.start, b.end)).collect()
    };
    for (len, want) in [
        (0, vec![]),
        (6, vec![(0, 6)]),
        (512, vec![(0, 512)]),
        (530, vec![(0, 512), (512, 530)]),
        (1024, vec![(0, 512), (512, 1024)]),
    ] {
        assert_eq!(batches(PromptPlan::one_call(len)), want, "one call, {len}");
        assert_eq!(
            batches(PromptPlan::server(len, false)),
            want,
            "server, {len}"
        );
    }
    for (len, want) in [
        (0, vec![]),
        (4, vec![(0, 4)]),
        (5, vec![(0, 1), (1, 5)]),
        (6, vec![(0, 2), (2, 6)]),
        (516, vec![(0, 512), (512, 516)]),
        (517, vec![(0, 1), (1, 513), (513, 517)]),
        (589, vec![(0, 73), (73, 585), (585, 589)]),
        (1038, vec![(0, 512), (512, 522), (522, 1034), (1034, 1038)]),
    ] {
        assert_eq!(
            batches(PromptPlan::server(len, true)),
            want,
            "windowed, {len}"
        );
    }
    // A cache takes the server's cut when its model has windowed layers.
    for (arch, windowed) in [(Arch::Llama, false), (Arch::Gemma3, true)] {
        let m = common::tiny(arch, 2);
        let model = common::load(&m, GgmlType::F32, 1);
        let mut cache = model.new_cache(64);
        cache.plan_prompt(6);
        assert_eq!(cache.plan(), &PromptPlan::server(6, windowed), "{arch:?}");
        cache.plan_one_call(6);
        assert_eq!(cache.plan(), &PromptPlan::one_call(6), "{arch:?}");
    }
}

/// The forms a position takes follow its batch's rows: tiled attention
/// from 64, Q6_K's batched order from eight, Q4_K's four-row order for all
/// but a batch's last `rows % 4`; past the prompt, a decoding step's.
#[test]
fn a_position_takes_its_batchs_forms() {
    let plan = PromptPlan::server(1038, true);
    let forms = |pos: usize| {
        let f = plan.forms_at(pos);
        (f.tiled, f.rows.quad, f.rows.wide)
    };
    assert_eq!(forms(0), (true, true, true));
    assert_eq!(forms(511), (true, true, true));
    // 512..522: ten rows, the last two alone.
    assert_eq!(forms(512), (false, true, true));
    assert_eq!(forms(519), (false, true, true));
    assert_eq!(forms(520), (false, false, true));
    assert_eq!(forms(521), (false, false, true));
    assert_eq!(forms(522), (true, true, true));
    assert_eq!(forms(1033), (true, true, true));
    // The held-back four.
    assert_eq!(forms(1034), (false, true, false));
    assert_eq!(forms(1037), (false, true, false));
    assert_eq!(plan.forms_at(1038), Forms::one_row(1038));
    let short = PromptPlan::one_call(3);
    assert_eq!(short.forms_at(2).rows, hearth_kernels::Rows::SINGLE);
    assert!(!short.forms_at(2).tiled);
    assert_eq!(PromptPlan::none().forms_at(0), Forms::one_row(0));
    // One row at a time: keys split between two threads once the view of
    // the cache (cells used, padded to 256) reaches 512.
    for (pos, chunk) in [
        (0, 0),
        (255, 0),
        (256, 256),
        (511, 256),
        (512, 384),
        (1038, 640),
    ] {
        let f = Forms::one_row(pos);
        assert_eq!(f.kv_chunk, chunk, "decoding at {pos}");
        assert!(!f.tiled && f.rows == hearth_kernels::Rows::SINGLE);
    }
    // A prompt's batch of one row is a decoding step too.
    assert_eq!(PromptPlan::one_call(513).forms_at(512), Forms::one_row(512));
    assert_eq!(PromptPlan::one_call(514).forms_at(512).kv_chunk, 0);
}

/// A kept prefix serves a new prompt only as far as their positions took
/// the same forms.
#[test]
fn plans_agree_up_to_the_first_different_form() {
    let a = PromptPlan::one_call(600);
    assert_eq!(a.agrees_for(&PromptPlan::one_call(600), 600), 600);
    // 0..512 is a whole batch in both; 512.. is 88 rows against 18.
    assert_eq!(a.agrees_for(&PromptPlan::one_call(530), 530), 512);
    // Q4_K's four-row order stops two rows earlier in a batch of 530 % 512.
    assert_eq!(
        PromptPlan::one_call(530).agrees_for(&PromptPlan::one_call(528), 528),
        528
    );
    assert_eq!(
        PromptPlan::one_call(533).agrees_for(&PromptPlan::one_call(530), 530),
        528
    );
    // Short prompts: tiled against one-row attention from the start.
    assert_eq!(a.agrees_for(&PromptPlan::one_call(20), 20), 0);
    assert_eq!(
        PromptPlan::server(6, true).agrees_for(&PromptPlan::server(7, true), 6),
        2
    );
}
