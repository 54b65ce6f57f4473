//! `supervisor bench transport`: how fast items cross SmartPipe's data plane.
//!
//! A chain head → 3 pass-through bodies (`core.forward`) → tail runs through the real
//! supervisor and processes for each payload size; the tail checks every byte. The chain
//! runs as a request-guarantee app (acknowledgements, replay holds) and, in the same run,
//! as a best-effort one, to show what the guarantee costs. Beside it two references: the
//! same payload sent as bytes over a plain ipc-channel (its fastest API, `IpcBytesSender`,
//! receiver checking every byte) and a plain memcpy of it.

use crate::plan::app::LoadedApp;
use crate::run::{run_app, RunOptions};
use anyhow::{bail, Context};
use protocol::blob::blob_byte;
use protocol::clock::now_ns;
use protocol::spec::ServiceType;
use serde::Serialize;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(clap::Subcommand)]
pub enum BenchCmd {
    /// Items/s and per-hop latency of the shared-memory chain vs ipc-channel bytes and memcpy.
    Transport {
        /// Payload sizes in bytes.
        /// 12,288 bytes is a 64×64 RGB frame.
        #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 64 * 64 * 3, 1 << 20, 6 << 20])]
        sizes: Vec<usize>,
        /// Items per size (small payloads get 10× more).
        #[arg(long, default_value_t = 300)]
        items: u64,
        /// Runs of the request-guarantee chain and of the best-effort one per size,
        /// alternated: the table gives their medians and the spread of the ratio between
        /// them (one short run moves by ±15 % on a busy 2-core machine).
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
        /// Write the results as JSON here too.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Items/s and per-hop latency of a Rust and a Python user stage beside `core.forward`.
    Stages {
        /// Payload sizes in bytes.
        #[arg(long, value_delimiter = ',', default_values_t = [1024usize, 1 << 20, 6 << 20])]
        sizes: Vec<usize>,
        /// Items per chain (as fast as it goes).
        #[arg(long, default_value_t = 300)]
        items: u64,
        /// The Python pass-through stage.
        #[arg(long, default_value = "examples/stages/python/forward.py")]
        python_stage: PathBuf,
    },
}

#[derive(Serialize)]
struct Row {
    bytes: usize,
    items: u64,
    /// Medians over the rounds, and each round's figures in the order they ran.
    chain_items_per_s: f64,
    chain_items_per_s_rounds: Vec<f64>,
    best_effort_items_per_s_rounds: Vec<f64>,
    /// Each round's guaranteed ÷ best-effort items/s (the two ran one after the other).
    guaranteed_over_best_effort_rounds: Vec<f64>,
    chain_hop_p50_us: Vec<f64>,
    chain_hop_p99_us: Vec<f64>,
    chain_corrupt_or_lost: u64,
    /// The same chain as a best-effort app (as fast as it goes), and what it lost.
    best_effort_items_per_s: f64,
    best_effort_lost: u64,
    ipc_items_per_s: f64,
    ipc_p50_us: f64,
    ipc_p99_us: f64,
    memcpy_items_per_s: f64,
    memcpy_p50_us: f64,
}

pub fn run(which: BenchCmd) -> anyhow::Result<ExitCode> {
    let (sizes, items, rounds, json) = match which {
        BenchCmd::Transport {
            sizes,
            items,
            rounds,
            json,
        } => (sizes, items, rounds, json),
        BenchCmd::Stages {
            sizes,
            items,
            python_stage,
        } => {
            let runtime_dir = crate::env::runtime::prepare()?;
            let result = crate::cli::bench_stages::run(&sizes, items, &python_stage);
            crate::env::runtime::cleanup(&runtime_dir);
            result?;
            return Ok(ExitCode::SUCCESS);
        }
    };
    let runtime_dir = crate::env::runtime::prepare()?;
    let result = transport(&sizes, items, rounds);
    crate::env::runtime::cleanup(&runtime_dir);
    let rows = result?;
    println!("Throughput: as fast as it goes ({items} items, 10× for ≤ 64 KiB). Latency: paced at {PACED_RATE} items/s, {PACED_ITEMS} items.");
    println!("The chain is a request-guarantee app; the best-effort column is the same chain as a best-effort app, run alternately with it ({rounds} rounds: medians, and the ratio's median with its lowest and highest round).");
    println!("| payload | items | chain items/s | best-effort items/s (lost) | guaranteed ÷ best effort | per-hop p50 µs (4 hops) | per-hop p99 µs | ipc-channel bytes items/s | ipc p50 µs | memcpy items/s | chain ÷ ipc |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let fmt = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "| {} | {} | {:.0} | {:.0} ({}) | {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1}× |",
            human(r.bytes),
            r.items,
            r.chain_items_per_s,
            r.best_effort_items_per_s,
            r.best_effort_lost,
            ratio_cell(&r.guaranteed_over_best_effort_rounds),
            fmt(&r.chain_hop_p50_us),
            fmt(&r.chain_hop_p99_us),
            r.ipc_items_per_s,
            r.ipc_p50_us,
            r.memcpy_items_per_s,
            r.chain_items_per_s / r.ipc_items_per_s.max(1e-9)
        );
    }
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_vec_pretty(&rows)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if rows.iter().any(|r| r.chain_corrupt_or_lost > 0) {
        bail!("the chain lost or corrupted items: the figures above are not valid");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn human(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} B")
    }
}

/// `0.93× (0.81–1.02×)`: the median of the rounds' ratios, with the lowest and highest.
fn ratio_cell(ratios: &[f64]) -> String {
    let (lo, hi) = ratios.iter().fold((f64::INFINITY, 0.0f64), |(lo, hi), r| {
        (lo.min(*r), hi.max(*r))
    });
    let median = percentile(ratios.to_vec(), 50.0);
    if ratios.len() < 2 {
        format!("{median:.2}×")
    } else {
        format!("{median:.2}× ({lo:.2}–{hi:.2}×)")
    }
}

fn transport(sizes: &[usize], items: u64, rounds: u32) -> anyhow::Result<Vec<Row>> {
    let base = std::env::temp_dir().join("bench-transport");
    let mut rows = Vec::new();
    for &bytes in sizes {
        let n = if bytes <= 64 * 1024 {
            items * 10
        } else {
            items
        };
        // Throughput: everything as fast as it goes. Latency: paced at PACED_RATE items/s,
        // so the figures are the cost of a hop, not the queue in front of the slowest stage.
        let guaranteed = ServiceType::RequestGuarantee;
        let (mut chain_rates, mut best_effort_rates, mut ratios) = (vec![], vec![], vec![]);
        let (mut chain_lost, mut best_effort_lost) = (0, 0);
        for round in 0..rounds {
            let saturated = chain(
                guaranteed,
                bytes,
                n,
                0.0,
                &base.join(format!("{bytes}-max-{round}")),
            )?;
            let best_effort = chain(
                ServiceType::BestEffort,
                bytes,
                n,
                0.0,
                &base.join(format!("{bytes}-be-{round}")),
            )?;
            ratios.push(saturated.0 / best_effort.0.max(1e-9));
            chain_rates.push(saturated.0);
            best_effort_rates.push(best_effort.0);
            chain_lost += saturated.2;
            best_effort_lost += best_effort.2;
        }
        let paced = chain(
            guaranteed,
            bytes,
            PACED_ITEMS,
            PACED_RATE,
            &base.join(format!("{bytes}-paced")),
        )?;
        let ipc = ipc_reference(bytes, n, 0.0)?;
        let ipc_paced = ipc_reference(bytes, PACED_ITEMS, PACED_RATE)?;
        let (memcpy_rate, memcpy_p50) = memcpy_reference(bytes, n);
        rows.push(Row {
            bytes,
            items: n,
            chain_items_per_s: percentile(chain_rates.clone(), 50.0),
            chain_items_per_s_rounds: chain_rates,
            chain_hop_p50_us: paced.1.iter().map(|h| h.0).collect(),
            chain_hop_p99_us: paced.1.iter().map(|h| h.1).collect(),
            chain_corrupt_or_lost: chain_lost + paced.2,
            best_effort_items_per_s: percentile(best_effort_rates.clone(), 50.0),
            best_effort_items_per_s_rounds: best_effort_rates,
            guaranteed_over_best_effort_rounds: ratios,
            best_effort_lost,
            ipc_items_per_s: ipc.0,
            ipc_p50_us: ipc_paced.1,
            ipc_p99_us: ipc_paced.2,
            memcpy_items_per_s: memcpy_rate,
            memcpy_p50_us: memcpy_p50,
        });
    }
    let _ = std::fs::remove_dir_all(&base);
    Ok(rows)
}

type ChainResult = (f64, Vec<(f64, f64)>, u64);

/// Rate and length of the latency runs.
const PACED_RATE: f64 = 100.0;
const PACED_ITEMS: u64 = 200;

fn chain(
    service_type: ServiceType,
    bytes: usize,
    items: u64,
    fps: f64,
    dir: &std::path::Path,
) -> anyhow::Result<ChainResult> {
    let spec = json!({
        "name": "bench-transport",
        "service_type": service_type,
        "tasks": [
            {"name": "head", "kind": "head", "function": "bench.blob", "params": {"bytes": bytes, "count": items, "fps": fps}},
            {"name": "b1", "kind": "cpu", "function": "core.forward", "inputs": ["head"]},
            {"name": "b2", "kind": "cpu", "function": "core.forward", "inputs": ["b1"]},
            {"name": "b3", "kind": "cpu", "function": "core.forward", "inputs": ["b2"]},
            {"name": "tail", "kind": "tail", "function": "bench.sink", "inputs": ["b3"]}
        ]
    });
    let spec =
        protocol::validate::load_app(&spec.to_string()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let loaded = LoadedApp {
        spec,
        file: dir.join("bench.json"),
    };
    let outcome = run_app(
        &loaded,
        &bench_run_options(dir),
        Arc::new(AtomicBool::new(false)),
        None,
    )?;
    if let Some(e) = outcome.error {
        bail!("transport chain failed: {e}");
    }
    let tail = outcome
        .summary
        .tails
        .first()
        .context("no tail in the summary")?;
    // Counted losses (shed, …) are also missing at the tail: count each item once.
    let lost = outcome.summary.lost_total.max(tail.missing);
    Ok((tail.steady_items_per_s, tail.hop_us.clone(), lost))
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    crate::observe::summary::percentile(&v, p)
}

/// The same payloads over a plain ipc-channel bytes channel, receiver on a thread.
fn ipc_reference(bytes: usize, items: u64, rate: f64) -> anyhow::Result<(f64, f64, f64)> {
    let (tx, rx) = ipc_channel::ipc::bytes_channel().context("ipc channel")?;
    let receiver = std::thread::spawn(move || -> anyhow::Result<Vec<f64>> {
        let mut lat = Vec::with_capacity(items as usize);
        for seq in 0..items {
            let msg = rx.recv().map_err(|e| anyhow::anyhow!("recv: {e:?}"))?;
            let now = now_ns();
            let sent = u64::from_le_bytes(msg[..8].try_into().context("short message")?);
            if msg.len() != bytes
                || msg[8..16] != seq.to_le_bytes()
                || !msg[16..]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == blob_byte(i + 16, seq))
            {
                bail!("ipc reference: item {seq} corrupted");
            }
            lat.push(now.saturating_sub(sent) as f64 / 1e3);
        }
        Ok(lat)
    });
    let mut payload: Vec<u8> = (0..bytes.max(16)).map(|i| blob_byte(i, 0)).collect();
    let start = Instant::now();
    for seq in 0..items {
        if rate > 0.0 {
            let due = start + Duration::from_secs_f64(seq as f64 / rate);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        payload[8..16].copy_from_slice(&seq.to_le_bytes());
        payload[..8].copy_from_slice(&now_ns().to_le_bytes());
        tx.send(&payload).context("send")?;
    }
    let lat = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))??;
    let secs = start.elapsed().as_secs_f64();
    Ok((
        items as f64 / secs,
        percentile(lat.clone(), 50.0),
        percentile(lat, 99.0),
    ))
}

/// memcpy of the payload, the floor of any design that copies once per hop.
fn memcpy_reference(bytes: usize, items: u64) -> (f64, f64) {
    let src: Vec<u8> = (0..bytes).map(|i| blob_byte(i, 0)).collect();
    let mut dst = vec![0u8; bytes];
    let mut lat = Vec::with_capacity(items as usize);
    let start = Instant::now();
    for _ in 0..items {
        let t = Instant::now();
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(src, dst);
    (items as f64 / secs, percentile(lat, 50.0))
}

/// How benchmark chains run: in this process, without a progress bar, hang after 3 s.
pub fn bench_run_options(dir: &Path) -> RunOptions {
    RunOptions {
        run_dir: dir.to_path_buf(),
        startup_timeout: Duration::from_secs(30),
        heartbeat_ms: 100,
        stop_grace: Duration::from_secs(5),
        drain_timeout: Duration::from_secs(10),
        hang_after: Duration::from_millis(3000),
        show_progress: false,
        agents: None,
        promise: None,
    }
}
