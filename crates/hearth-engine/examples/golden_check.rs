use hearth_engine::{BatchItem, Model, Want};
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let m = Model::load(std::path::Path::new(&args[1]), 2).unwrap();
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&args[2]).unwrap()).unwrap();
    let cases = g[args.get(3).map(|s| s.as_str()).unwrap_or("greedy")]
        .as_array()
        .unwrap();
    let (mut worst, mut bad, mut total) = (0f64, 0, 0);
    for case in cases {
        let ids: Vec<u32> = case["prompt_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let mut cache = m.new_cache(1024);
        let mut feed = ids.clone();
        let mut line = String::new();
        for (i, step) in case["steps"]
            .as_array()
            .unwrap()
            .iter()
            .take(16)
            .enumerate()
        {
            let mut items = [BatchItem {
                cache: &mut cache,
                tokens: &feed,
                want: Want::Last,
            }];
            let logits = m.forward(&mut items).unwrap().remove(0);
            let mx = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max) as f64;
            let z: f64 = logits
                .iter()
                .map(|&v| (v as f64 - mx).exp())
                .sum::<f64>()
                .ln();
            let mut e = 0f64;
            for t in step["top"].as_array().unwrap() {
                let id = t["id"].as_u64().unwrap() as usize;
                let lp = logits[id] as f64 - mx - z;
                e = e.max((lp - t["logprob"].as_f64().unwrap()).abs());
            }
            worst = worst.max(e);
            total += 1;
            if e > 0.05 {
                bad += 1;
                line.push_str(&format!(" s{i}:{e:.3}"));
            }
            let tok = step["token"].as_u64().unwrap() as u32;
            feed = vec![tok];
        }
        println!(
            "{:?}: {}",
            &case["prompt"]
                .as_str()
                .unwrap()
                .chars()
                .take(30)
                .collect::<String>(),
            line
        );
    }
    println!("worst {worst:.3}; {bad}/{total} steps over 0.05");
}
