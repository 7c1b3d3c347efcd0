//! The router on `shared/routing/`: the three experts of `experts.json`,
//! each with its description and the first requests of its adapter's
//! training data as examples, scored on `visible.jsonl` (40 labelled
//! requests, 10 of which no expert should take). Needs the `minilm` model
//! from hearth's store; fails loudly without it.

use std::path::PathBuf;

use hearth_runtime::Embedder;
use hearth_serve::router::{Router, DEFAULT_THRESHOLD};
use hearth_store::{Expert, ExpertSpec, Progress, Store};
use serde_json::Value;

fn shared() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared");
    assert!(
        p.is_dir(),
        "shared/ is missing beside the checkout: {}",
        p.display()
    );
    p
}

fn lines(path: PathBuf) -> Vec<Value> {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// The experts, with `examples` requests each from their training data.
fn experts(examples: usize) -> Vec<Expert> {
    let text =
        std::fs::read_to_string(shared().join("routing/experts.json")).expect("experts.json");
    let list: Vec<Value> = serde_json::from_str(&text).expect("JSON");
    list.iter()
        .map(|e| {
            let name = e["name"].as_str().expect("name").to_string();
            let train = lines(shared().join(format!("adapters/data/{name}-train.jsonl")));
            Expert {
                spec: ExpertSpec {
                    base: "smollm2".into(),
                    description: e["description"].as_str().expect("description").into(),
                    examples: train
                        .iter()
                        .take(examples)
                        .map(|l| {
                            l["messages"][0]["content"]
                                .as_str()
                                .expect("user turn")
                                .into()
                        })
                        .collect(),
                    ..ExpertSpec::default()
                },
                name,
                adapter_path: None,
                adapter_bytes: 0,
                created: String::new(),
            }
        })
        .collect()
}

fn embedder() -> Embedder {
    let dir = Store::open_default()
        .and_then(|s| s.ensure("minilm", Progress::Quiet))
        .unwrap_or_else(|e| panic!("the router needs the minilm model: {e}"));
    Embedder::load(&dir, 2).expect("minilm loads")
}

/// Accuracy on the visible set, and the lowest in-task and highest
/// out-of-task winning similarity.
fn score(router: &Router, emb: &Embedder) -> (f64, f32, f32) {
    let rows = lines(shared().join("routing/visible.jsonl"));
    let (mut right, mut low_in, mut high_out) = (0, f32::MAX, f32::MIN);
    for r in &rows {
        let want = r["expert"].as_str();
        let d = router
            .route(emb, r["request"].as_str().expect("request"))
            .expect("route");
        let best = d.scores.iter().map(|s| s.1).fold(f32::MIN, f32::max);
        match want {
            Some(w) => {
                let mine = d.scores.iter().find(|s| s.0 == w).expect("scored").1;
                low_in = low_in.min(mine);
            }
            None => high_out = high_out.max(best),
        }
        if d.expert.as_deref() == want {
            right += 1;
        } else {
            eprintln!(
                "missed: {:?} -> {:?} {:?}",
                r["request"], d.expert, d.scores
            );
        }
    }
    (right as f64 / rows.len() as f64, low_in, high_out)
}

#[test]
fn routes_the_visible_set() {
    let emb = embedder();
    let router = Router::build(&emb, &experts(32), DEFAULT_THRESHOLD).expect("router");
    let (acc, low_in, high_out) = score(&router, &emb);
    eprintln!("with 32 examples each: accuracy {acc:.3}; in-task lowest {low_in:.3}, others highest {high_out:.3}");
    assert!(acc >= 0.9, "routing accuracy {acc}");

    // Descriptions alone: reported, and held to what they reach today.
    let bare = Router::build(&emb, &experts(0), DEFAULT_THRESHOLD).expect("router");
    let (acc, low_in, high_out) = score(&bare, &emb);
    eprintln!("descriptions only: accuracy {acc:.3}; in-task lowest {low_in:.3}, others highest {high_out:.3}");
    assert!(acc >= 0.5, "routing accuracy from descriptions alone {acc}");
}

#[test]
fn an_expert_with_nothing_to_match_is_never_chosen() {
    let emb = embedder();
    let mut list = experts(0);
    for e in &mut list {
        e.spec.description.clear();
    }
    let router = Router::build(&emb, &list, 0.0).expect("router");
    assert!(router.is_empty());
    let d = router
        .route(&emb, "Is this review positive?")
        .expect("route");
    assert_eq!(d.expert, None);
}
