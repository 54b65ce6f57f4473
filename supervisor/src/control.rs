//! The control API of a running supervisor: HTTP/1.1 + JSON on a Unix socket in its
//! runtime dir (dir 0700, socket 0600, peer uid checked with SO_PEERCRED), and the
//! Prometheus metrics also on a loopback TCP port when asked. Routes: `GET /status`,
//! `GET /metrics`, `POST /stop` (drain, like SIGTERM).

use protocol::messages::{LossReason, StageMetrics, HISTOGRAM_BOUNDS_S};
use serde::{Deserialize, Serialize};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One stage replica as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LiveStage {
    pub label: String,
    pub task: String,
    pub pid: i32,
    pub state: String,
    pub restarts: u32,
    pub batch: u32,
    pub replicas: u32,
    pub items_per_s: f64,
    pub metrics: StageMetrics,
}

/// A running app.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LiveApp {
    pub name: String,
    pub state: String,
    pub run_dir: String,
    pub supervisor_pid: u32,
    pub uptime_s: f64,
    pub stages: Vec<LiveStage>,
    /// Where the app's run loop takes restart requests.
    #[serde(skip)]
    pub restarts: Option<std::sync::mpsc::Sender<RestartRequest>>,
}

/// A request to restart a task's replicas (all, or one), answered on `reply` with a
/// message for the user or the reason it could not be done.
pub struct RestartRequest {
    pub task: String,
    pub replica: Option<u32>,
    pub reply: std::sync::mpsc::Sender<Result<String, String>>,
}

impl std::fmt::Debug for RestartRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestartRequest")
            .field("task", &self.task)
            .field("replica", &self.replica)
            .finish()
    }
}

/// The socket of a supervisor's runtime dir.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join("control.sock")
}

/// Serve the API until the process ends. `stop` is the same flag SIGTERM sets.
pub fn serve(
    runtime_dir: &Path,
    state: Arc<Mutex<LiveApp>>,
    stop: Arc<AtomicBool>,
    metrics_addr: Option<std::net::SocketAddr>,
) -> anyhow::Result<PathBuf> {
    let path = socket_path(runtime_dir);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    // SAFETY: getuid never fails.
    let uid = unsafe { libc::getuid() };
    {
        let state = state.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    let allowed = peer_uid(&conn) == Some(uid);
                    let (state, stop) = (state.clone(), stop.clone());
                    std::thread::spawn(move || handle(conn, allowed, &state, &stop));
                }
            })?;
    }
    if let Some(addr) = metrics_addr {
        if !addr.ip().is_loopback() {
            anyhow::bail!("--metrics-addr must be a loopback address, got {addr}");
        }
        let tcp = std::net::TcpListener::bind(addr)?;
        eprintln!("metrics on http://{}/metrics", tcp.local_addr()?);
        std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for conn in tcp.incoming().flatten() {
                    let state = state.clone();
                    std::thread::spawn(move || {
                        let mut conn = conn;
                        let (method, target) = read_request(&mut conn);
                        let (code, ctype, body) = if method == "GET" && target == "/metrics" {
                            (
                                200,
                                "text/plain; version=0.0.4",
                                render_metrics(&snapshot(&state)),
                            )
                        } else {
                            (404, "text/plain", "only GET /metrics here\n".to_string())
                        };
                        respond(&mut conn, code, ctype, &body);
                    });
                }
            })?;
    }
    Ok(path)
}

fn snapshot(state: &Mutex<LiveApp>) -> LiveApp {
    state.lock().map(|s| s.clone()).unwrap_or_default()
}

/// The uid of the process at the other end of a Unix socket.
fn peer_uid(conn: &UnixStream) -> Option<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: a valid socket fd and a correctly sized ucred buffer.
    let rc = unsafe {
        libc::getsockopt(
            conn.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            &mut cred as *mut libc::ucred as *mut libc::c_void,
            &mut len,
        )
    };
    (rc == 0).then_some(cred.uid)
}

fn read_request(conn: &mut impl Read) -> (String, String) {
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    let _ = reader.read_line(&mut line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    // Skip the headers; no route takes a body.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => break,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    (method, target)
}

fn respond(conn: &mut impl Write, code: u16, ctype: &str, body: &str) {
    let reason = match code {
        200 => "OK",
        202 => "Accepted",
        403 => "Forbidden",
        _ => "Not Found",
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn handle(mut conn: UnixStream, allowed: bool, state: &Mutex<LiveApp>, stop: &AtomicBool) {
    let (method, target) = read_request(&mut conn);
    if !allowed {
        respond(
            &mut conn,
            403,
            "text/plain",
            "this supervisor belongs to another user\n",
        );
        return;
    }
    let (code, ctype, body) = match (method.as_str(), target.as_str()) {
        ("GET", "/status") => (
            200,
            "application/json",
            serde_json::to_string(&snapshot(state)).unwrap_or_default(),
        ),
        ("GET", "/metrics") => (
            200,
            "text/plain; version=0.0.4",
            render_metrics(&snapshot(state)),
        ),
        ("POST", "/stop") => {
            stop.store(true, Ordering::SeqCst);
            (202, "application/json", "{\"draining\": true}".to_string())
        }
        _ => (
            404,
            "text/plain",
            "routes: GET /status, GET /metrics, POST /stop\n".to_string(),
        ),
    };
    respond(&mut conn, code, ctype, &body);
}

fn histogram(out: &mut String, name: &str, labels: &str, buckets: &[u64], sum_s: f64) {
    if buckets.len() != HISTOGRAM_BOUNDS_S.len() + 1 {
        return;
    }
    let mut cumulative = 0;
    for (bound, n) in HISTOGRAM_BOUNDS_S.iter().zip(buckets) {
        cumulative += n;
        out.push_str(&format!(
            "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}\n"
        ));
    }
    cumulative += buckets[HISTOGRAM_BOUNDS_S.len()];
    out.push_str(&format!(
        "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n"
    ));
    out.push_str(&format!(
        "{name}_sum{{{labels}}} {sum_s}\n{name}_count{{{labels}}} {cumulative}\n"
    ));
}

/// Prometheus text exposition of an app's metrics.
pub fn render_metrics(app: &LiveApp) -> String {
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    };
    let labels = |s: &LiveStage| {
        format!(
            "app=\"{}\",task=\"{}\",stage=\"{}\"",
            app.name, s.task, s.label
        )
    };
    type Getter = fn(&LiveStage) -> f64;
    let simple: [(&str, &str, &str, Getter); 9] = [
        (
            "smartpipe_stage_items_in_total",
            "counter",
            "Items a stage replica received.",
            |s| s.metrics.items_in as f64,
        ),
        (
            "smartpipe_stage_items_out_total",
            "counter",
            "Items a stage replica sent on (tails: delivered).",
            |s| s.metrics.items_out as f64,
        ),
        (
            "smartpipe_stage_busy_seconds_total",
            "counter",
            "Time a stage replica spent working.",
            |s| s.metrics.busy_ns as f64 / 1e9,
        ),
        (
            "smartpipe_stage_backpressure_seconds_total",
            "counter",
            "Time spent waiting for a free output slot.",
            |s| s.metrics.waiting_for_slot_ns as f64 / 1e9,
        ),
        (
            "smartpipe_stage_queue_depth",
            "gauge",
            "Items inside a stage replica (received, not yet sent or lost).",
            |s| {
                s.metrics
                    .items_in
                    .saturating_sub(s.metrics.items_out + s.metrics.lost.iter().sum::<u64>())
                    as f64
            },
        ),
        (
            "smartpipe_stage_batch_size",
            "gauge",
            "Batch size of the stage.",
            |s| f64::from(s.batch),
        ),
        (
            "smartpipe_stage_replicas",
            "gauge",
            "Replicas of the stage's task.",
            |s| f64::from(s.replicas),
        ),
        (
            "smartpipe_stage_restarts_total",
            "counter",
            "Restarts of a stage replica.",
            |s| f64::from(s.restarts),
        ),
        (
            "smartpipe_stage_items_per_second",
            "gauge",
            "Items a stage replica sent per second, recently.",
            |s| s.items_per_s,
        ),
    ];
    for (name, kind, help, get) in simple {
        family(&mut out, name, kind, help);
        for s in &app.stages {
            out.push_str(&format!("{name}{{{}}} {}\n", labels(s), get(s)));
        }
    }
    family(
        &mut out,
        "smartpipe_stage_lost_total",
        "counter",
        "Items lost at a stage replica, by reason.",
    );
    for s in &app.stages {
        for reason in LossReason::ALL {
            out.push_str(&format!(
                "smartpipe_stage_lost_total{{{},reason=\"{}\"}} {}\n",
                labels(s),
                reason.as_str(),
                s.metrics.lost[reason as usize]
            ));
        }
    }
    family(
        &mut out,
        "smartpipe_stage_service_seconds",
        "histogram",
        "Service time per item.",
    );
    for s in &app.stages {
        histogram(
            &mut out,
            "smartpipe_stage_service_seconds",
            &labels(s),
            &s.metrics.service_buckets,
            s.metrics.busy_ns as f64 / 1e9,
        );
    }
    family(
        &mut out,
        "smartpipe_e2e_latency_seconds",
        "histogram",
        "End-to-end latency of the items a tail received.",
    );
    for s in app
        .stages
        .iter()
        .filter(|s| !s.metrics.latency_buckets.is_empty())
    {
        histogram(
            &mut out,
            "smartpipe_e2e_latency_seconds",
            &labels(s),
            &s.metrics.latency_buckets,
            s.metrics.latency_sum_ns as f64 / 1e9,
        );
    }
    type AgentGetter = fn(&StageMetrics) -> f64;
    let agent: [(&str, &str, &str, AgentGetter); 4] = [
        (
            "smartpipe_agent_model_loads_total",
            "counter",
            "Model loads by a GPU agent.",
            |m| m.model_loads as f64,
        ),
        (
            "smartpipe_agent_model_evictions_total",
            "counter",
            "Model evictions by a GPU agent.",
            |m| m.model_evictions as f64,
        ),
        (
            "smartpipe_agent_model_load_seconds_total",
            "counter",
            "Time a GPU agent spent loading models.",
            |m| m.model_load_ns as f64 / 1e9,
        ),
        (
            "smartpipe_agent_resident_model_bytes",
            "gauge",
            "Bytes of the models resident on the device.",
            |m| m.resident_model_bytes as f64,
        ),
    ];
    for (name, kind, help, get) in agent {
        family(&mut out, name, kind, help);
        for s in app
            .stages
            .iter()
            .filter(|s| s.task.starts_with("gpu-agent"))
        {
            out.push_str(&format!("{name}{{{}}} {}\n", labels(s), get(&s.metrics)));
        }
    }
    out
}

/// Live supervisors of this user: (pid, socket).
pub fn find_supervisors() -> Vec<(u32, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(crate::runtime::user_dir()) else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let sock = socket_path(&e.path());
        if sock.exists() {
            found.push((pid, sock));
        }
    }
    found.sort();
    found
}

/// One request to a supervisor's socket; returns (status code, body).
pub fn request(sock: &Path, method: &str, target: &str) -> anyhow::Result<(u16, String)> {
    let mut conn = UnixStream::connect(sock)?;
    write!(
        conn,
        "{method} {target} HTTP/1.1\r\nHost: smartpipe\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_text_has_families_labels_and_cumulative_buckets() {
        let mut m = StageMetrics {
            items_in: 5,
            items_out: 4,
            ..StageMetrics::default()
        };
        m.lose(LossReason::Shed, 1);
        protocol::messages::observe(&mut m.latency_buckets, 0.003);
        protocol::messages::observe(&mut m.latency_buckets, 0.3);
        let app = LiveApp {
            name: "a".into(),
            stages: vec![LiveStage {
                label: "t#0".into(),
                task: "t".into(),
                metrics: m,
                ..LiveStage::default()
            }],
            ..LiveApp::default()
        };
        let text = render_metrics(&app);
        assert!(text.contains("# TYPE smartpipe_stage_items_in_total counter"));
        assert!(
            text.contains("smartpipe_stage_items_in_total{app=\"a\",task=\"t\",stage=\"t#0\"} 5")
        );
        assert!(text.contains(
            "smartpipe_stage_lost_total{app=\"a\",task=\"t\",stage=\"t#0\",reason=\"shed\"} 1"
        ));
        assert!(text.contains("smartpipe_e2e_latency_seconds_bucket{app=\"a\",task=\"t\",stage=\"t#0\",le=\"0.005\"} 1"));
        assert!(text.contains("smartpipe_e2e_latency_seconds_bucket{app=\"a\",task=\"t\",stage=\"t#0\",le=\"+Inf\"} 2"));
        assert!(text.contains("smartpipe_stage_queue_depth{app=\"a\",task=\"t\",stage=\"t#0\"} 0"));
    }
}
