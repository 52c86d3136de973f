//! Benchmark: validating a generated 1,000-model config (target: under
//! 50 ms median). Run with `cargo bench --bench validate`.

use std::time::Instant;

use swapcfg::validate::Validator;

fn config(models: usize) -> String {
    let mut s = String::from("healthCheckTimeout: 120\nstartPort: 10000\nmacros:\n  llama: /opt/llama/llama-server\n  ctx: 8192\n");
    s.push_str("x-defaults: &defaults\n  ttl: 300\n  checkEndpoint: /health\n  env: [\"CUDA_VISIBLE_DEVICES=0\"]\n");
    s.push_str("models:\n");
    for i in 0..models {
        s.push_str(&format!(
            "  model-{i:04}:\n    <<: *defaults\n    cmd: |\n      # model {i}\n      ${{llama}} --port ${{PORT}} -c ${{ctx}} -m /models/m{i}.gguf\n    aliases: [\"alias-{i}\"]\n    name: \"Model {i}\"\n"
        ));
    }
    s.push_str("groups:\n  all:\n    swap: true\n    members:\n");
    for i in 0..models {
        s.push_str(&format!("      - model-{i:04}\n"));
    }
    s
}

fn main() {
    let src = config(1000);
    let v = Validator::embedded();
    let out = v.validate(src.as_bytes());
    assert!(
        out.is_valid(),
        "generated config must be valid: {:?}",
        &out.findings[..out.findings.len().min(3)]
    );
    assert_eq!(out.listed_models.len(), 1000);
    for _ in 0..3 {
        v.validate(src.as_bytes());
    }
    let mut times: Vec<f64> = (0..31)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(v.validate(std::hint::black_box(src.as_bytes())));
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "validate 1000-model config ({} KiB): median {:.2} ms, min {:.2} ms, max {:.2} ms (31 runs; target < 50 ms)",
        src.len() / 1024,
        times[times.len() / 2],
        times[0],
        times[times.len() - 1]
    );
}
