//! `supervisor bench stages`: what a user stage costs beside a built-in one. For each
//! payload size, a chain `bench.blob → MIDDLE → bench.sink` (request-guarantee) runs
//! with MIDDLE = the built-in `core.forward`, the Rust user stage `stage-forward` and the
//! Python user stage `forward.py`, in the same run: items/s as fast as it goes, and the
//! per-hop p50 paced at 100 items/s (so it is a hop's cost, not a queue's).

use crate::plan::app::LoadedApp;
use crate::run::run_app;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

const PACED_RATE: f64 = 100.0;
const PACED_ITEMS: u64 = 100;

/// One measured chain: items/s, and the (p50, p99) µs of each hop.
struct Measured {
    items_per_s: f64,
    hops: Vec<(f64, f64)>,
}

/// The middle tasks compared, by label.
fn middles(python_stage: &Path) -> Vec<(&'static str, Value)> {
    vec![
        (
            "built-in core.forward",
            json!({"name": "mid", "kind": "cpu", "function": "core.forward", "inputs": ["head"]}),
        ),
        (
            "Rust user stage (stage-forward)",
            json!({"name": "mid", "kind": "cpu", "program": "stage-forward", "inputs": ["head"]}),
        ),
        (
            "Python user stage (forward.py)",
            json!({"name": "mid", "kind": "cpu", "program": python_stage.display().to_string(), "inputs": ["head"]}),
        ),
    ]
}

fn chain(
    middle: &Value,
    bytes: usize,
    items: u64,
    fps: f64,
    dir: &Path,
) -> anyhow::Result<Measured> {
    let spec = json!({
        "name": "bench-stages",
        "service_type": "request-guarantee",
        "tasks": [
            {"name": "head", "kind": "head", "function": "bench.blob", "params": {"bytes": bytes, "count": items, "fps": fps}},
            middle,
            {"name": "tail", "kind": "tail", "function": "bench.sink", "inputs": ["mid"]}
        ]
    });
    let mut spec =
        protocol::validate::load_app(&spec.to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let file = dir.join("bench.json");
    crate::plan::user_stage::prepare(&mut spec, Path::new("."), &file)?;
    let loaded = LoadedApp { spec, file };
    let opts = crate::cli::bench::bench_run_options(dir);
    let outcome = run_app(&loaded, &opts, Arc::new(AtomicBool::new(false)), None)?;
    if let Some(e) = outcome.error {
        bail!("stage chain failed: {e}");
    }
    let tail = outcome
        .summary
        .tails
        .first()
        .context("no tail in the summary")?;
    if outcome.summary.lost_total > 0 || tail.missing > 0 {
        bail!(
            "the chain lost items ({} lost, {} missing)",
            outcome.summary.lost_total,
            tail.missing
        );
    }
    Ok(Measured {
        items_per_s: tail.steady_items_per_s,
        hops: tail.hop_us.clone(),
    })
}

/// Run the comparison and print it as a Markdown table.
pub fn run(sizes: &[usize], items: u64, python_stage: &Path) -> anyhow::Result<()> {
    let python_stage: PathBuf = python_stage
        .canonicalize()
        .with_context(|| format!("the Python stage {}", python_stage.display()))?;
    let base = std::env::temp_dir().join("bench-stages");
    println!("Request-guarantee chain bench.blob → MIDDLE → bench.sink. Throughput: {items} items as fast as it goes. Latency: paced at {PACED_RATE} items/s, {PACED_ITEMS} items; hops: into MIDDLE / MIDDLE to the tail.");
    println!("| payload | middle stage | items/s | per-hop p50 µs | per-hop p99 µs |");
    println!("|---|---|---|---|---|");
    for &bytes in sizes {
        for (k, (label, middle)) in middles(&python_stage).iter().enumerate() {
            let dir = base.join(format!("{bytes}-{k}"));
            let saturated = chain(middle, bytes, items, 0.0, &dir.join("max"))?;
            let paced = chain(middle, bytes, PACED_ITEMS, PACED_RATE, &dir.join("paced"))?;
            let fmt = |pick: fn(&(f64, f64)) -> f64| {
                paced
                    .hops
                    .iter()
                    .map(|h| format!("{:.0}", pick(h)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            };
            println!(
                "| {} | {label} | {:.0} | {} | {} |",
                crate::cli::bench::human(bytes),
                saturated.items_per_s,
                fmt(|h| h.0),
                fmt(|h| h.1)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
