//! Helpers for SmartPipe's end-to-end tests: locating the built binaries, making
//! temporary app folders and test media, running the supervisor and inspecting the
//! processes and memory it leaves behind.

pub mod kill;
pub mod mutate;
pub mod solid;
pub mod zoo;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's binaries the tests run, and the crates each is built from.
const BINARIES: [(&str, &[&str]); 4] = [
    ("supervisor", &["supervisor", "media", "protocol", "vision"]),
    (
        "worker-cpu",
        &["worker-cpu", "media", "stage", "protocol", "vision"],
    ),
    ("worker-gpu", &["worker-gpu", "stage", "protocol", "vision"]),
    (
        "stage-invert",
        &["examples/stages/invert", "stage", "protocol"],
    ),
];

/// The folder holding the workspace's built binaries (`target/debug`). Panics when one
/// is missing or older than a source it is built from: `cargo test` alone does not
/// rebuild them, and a test run against stale binaries tests old code.
pub fn bin_dir() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test executable path");
            // target/debug/deps/<test> → target/debug
            let dir = exe
                .parent()
                .and_then(Path::parent)
                .expect("test binary lives in target/<profile>/deps")
                .to_path_buf();
            let rebuild = "run `cargo build --workspace --bins` before the tests (make test does)";
            for (name, crates) in BINARIES {
                let binary = dir.join(name);
                let built = std::fs::metadata(&binary).and_then(|m| m.modified());
                let Ok(built) = built else {
                    panic!("{} is missing: {rebuild}", binary.display());
                };
                // A crate's main.rs belongs to its own binary only.
                let own = repo_root().join(crates[0]);
                let skip = |p: &Path| p.ends_with("src/main.rs") && !p.starts_with(&own);
                if let Some((source, changed)) = newest_source(crates, &skip) {
                    assert!(
                        built >= changed,
                        "{} is older than {}: {rebuild}",
                        binary.display(),
                        source.display()
                    );
                }
            }
            dir
        })
        .clone()
}

/// The most recently modified source (`src/**.rs`) or manifest of `crates`.
fn newest_source(
    crates: &[&str],
    skip: &dyn Fn(&Path) -> bool,
) -> Option<(PathBuf, std::time::SystemTime)> {
    let root = repo_root();
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    let mut stack: Vec<PathBuf> = crates
        .iter()
        .flat_map(|c| [root.join(c).join("src"), root.join(c).join("Cargo.toml")])
        .collect();
    while let Some(path) = stack.pop() {
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
            continue;
        }
        let relevant = path.extension().is_some_and(|e| e == "rs" || e == "toml");
        if let (true, false, Ok(changed)) = (relevant, skip(&path), meta.modified()) {
            if newest.as_ref().is_none_or(|(_, t)| changed > *t) {
                newest = Some((path, changed));
            }
        }
    }
    newest
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf()
}

/// A fresh, empty folder under the target dir for one test.
pub fn scratch(name: &str) -> PathBuf {
    let root = bin_dir().join("test-scratch");
    remove_stale_scratch(&root, name);
    let dir = root.join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Remove the folders `name-PID` under `root` left by test processes that have ended:
/// each test name keeps the folder of its latest run (to look into after a failure), not
/// one per run for ever.
fn remove_stale_scratch(root: &Path, name: &str) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let prefix = format!("{name}-");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let ended = !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists();
        if ended {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// What a command printed, stdout then stderr, for checking its messages.
pub fn printed(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// A `supervisor` command. Its foreground `start` runs the app in a supervisor of its
/// own (`--no-daemon`): the suites test the run loop, and signals, kills and stalls of
/// "the supervisor" reach the one running the test's app; `foreground.rs`,
/// `shared_agent.rs` and `node.rs` test the node's daemon (see [`through_daemon`]).
/// `SMARTPIPE_TESTS_THROUGH_DAEMON=1` runs every foreground start through the daemon.
pub fn supervisor() -> Command {
    let mut cmd = Command::new(bin_dir().join("supervisor"));
    if std::env::var("SMARTPIPE_TESTS_THROUGH_DAEMON").as_deref() != Ok("1") {
        cmd.env("SMARTPIPE_NO_DAEMON", "1");
    }
    cmd.env("SMARTPIPE_WORKER_DIR", bin_dir());
    // Tests run many apps at once on few cores: a heartbeat can be late without a hang.
    // The hang tests set their own, tighter value.
    cmd.env("SMARTPIPE_HANG_AFTER_MS", "5000");
    cmd
}

/// `cmd` with its foreground `start` through the node's daemon (the default for users).
pub fn through_daemon(cmd: &mut Command) -> &mut Command {
    cmd.env_remove("SMARTPIPE_NO_DAEMON")
}

/// Write an app file into `dir` and return its path.
pub fn write_app(dir: &Path, json: &serde_json::Value) -> PathBuf {
    let path = dir.join("app.json");
    std::fs::write(&path, serde_json::to_vec_pretty(json).expect("json")).expect("write app");
    path
}

/// Run `supervisor start` to completion; panics with its output if it fails.
pub fn run_ok(app: &Path, run_dir: &Path) -> (Output, serde_json::Value) {
    run_ok_with(&mut supervisor(), app, run_dir)
}

/// `cmd start APP --run-dir RUN_DIR` to completion, whatever its outcome.
pub fn start_to_end(cmd: &mut Command, app: &Path, run_dir: &Path) -> Output {
    cmd.arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("run supervisor")
}

/// [`run_ok`] with `cmd`, a [`supervisor`] command with any environment the test needs.
pub fn run_ok_with(cmd: &mut Command, app: &Path, run_dir: &Path) -> (Output, serde_json::Value) {
    let out = start_to_end(cmd, app, run_dir);
    assert!(
        out.status.success(),
        "supervisor failed: {}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (out, read_summary(run_dir))
}

pub fn read_summary(run_dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(run_dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str(&text).expect("summary is JSON")
}

/// Whether ffmpeg and ffprobe are installed (`make test` provisions them).
pub fn require_ffmpeg() {
    for tool in ["ffmpeg", "ffprobe"] {
        let ok = Command::new(tool)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(ok, "{tool} is not installed: run `make test` (it installs ffmpeg) or `apt-get install ffmpeg`");
    }
}

/// Every frame of the video at `file` as RGB bytes, one after the other (ffmpeg decodes
/// it); panics when ffmpeg cannot.
pub fn video_rgb(file: &Path) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(file)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("ffmpeg");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Write `count` PNG frames `f-000.png`… into `dir`; frame k is filled with a colour
/// that encodes k, plus a gradient so resizing has something to do.
pub fn write_frames(dir: &Path, count: u32, width: u32, height: u32) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).expect("frames dir");
    (0..count)
        .map(|k| {
            let img = image::RgbImage::from_fn(width, height, |x, y| {
                image::Rgb([
                    (k * 20 % 256) as u8,
                    (x * 255 / width) as u8,
                    (y * 255 / height) as u8,
                ])
            });
            let path = dir.join(format!("f-{k:03}.png"));
            img.save(&path).expect("save frame");
            path
        })
        .collect()
}

/// `cmd` with the repository's model manifest and provisioned model folder.
pub fn with_models(cmd: &mut Command) -> &mut Command {
    let root = repo_root();
    cmd.env("SMARTPIPE_MANIFEST", root.join("apps/models.json"))
        .env("SMARTPIPE_MODELS_DIR", root.join(".smartpipe/models"))
}

/// Pids of live processes whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        // Skip zombies: they hold no resources and vanish when reaped.
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z'));
        if cmdline.contains(needle) && !zombie {
            pids.push(pid);
        }
    }
    pids
}

/// Open memfd mappings or descriptors created by process `creator` (ipc-channel and the
/// slot pools name their memfds after the creating pid), held by any process.
pub fn memfds_of(creator: u32) -> Vec<String> {
    let tag = format!(".{creator}.");
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let t = target.display().to_string();
                if t.contains("memfd:")
                    && (t.contains("ipc-channel-shared-memory") || t.contains("smartpipe-pool"))
                    && t.contains(&tag)
                {
                    found.push(format!("{} -> {t}", fd.path().display()));
                }
            }
        }
    }
    found
}

/// A supervisor running in the background; its stderr is read as it comes (a full
/// pipe would block it).
pub struct Background {
    child: std::process::Child,
    stderr: Option<std::thread::JoinHandle<()>>,
    stderr_text: std::sync::Arc<std::sync::Mutex<String>>,
}

/// A test that fails before [`finish`] leaves no supervisor behind: it is killed, and
/// its stages follow it (they end when their supervisor dies).
impl Drop for Background {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Background {
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// What the supervisor has written on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.stderr_text
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }
}

/// `cmd start APP --run-dir RUN` in the background (stdout dropped, stderr captured).
/// `cmd` is a [`supervisor`] command, with any environment the test needs.
pub fn start_in_background(cmd: &mut Command, app: &Path, run_dir: &Path) -> Background {
    let mut child = cmd
        .arg("start")
        .arg(app)
        .arg("--run-dir")
        .arg(run_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the supervisor");
    let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = stderr_text.clone();
    let stderr = child.stderr.take().map(|pipe| {
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut text) = sink.lock() {
                    text.push_str(&line);
                    text.push('\n');
                }
            }
        })
    });
    Background {
        child,
        stderr,
        stderr_text,
    }
}

/// Wait for a background supervisor: its exit status and what it wrote on stderr.
pub fn finish(mut sup: Background) -> (std::process::ExitStatus, String) {
    let status = sup.child.wait().expect("wait for the supervisor");
    if let Some(reader) = sup.stderr.take() {
        let _ = reader.join();
    }
    (status, sup.stderr_so_far())
}

/// Poll `cond` every 10 ms until it holds; panics naming `what` after `timeout`.
/// Returns how long it took.
pub fn wait_for(
    what: &str,
    timeout: std::time::Duration,
    mut cond: impl FnMut() -> bool,
) -> std::time::Duration {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    start.elapsed()
}

/// A private runtime folder (`SMARTPIPE_RUNTIME_DIR`) for one test's supervisors and
/// daemon: commands made by [`PrivateRuntime::supervisor`] see only those, so tests
/// running at once do not share a daemon. Dropping it shuts the daemon down, kills
/// whatever supervisor of it is still alive, and removes the folder.
pub struct PrivateRuntime {
    pub dir: PathBuf,
}

impl PrivateRuntime {
    pub fn new(name: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/smartpipe-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        PrivateRuntime { dir }
    }

    /// A [`supervisor`] command using this runtime folder.
    pub fn supervisor(&self) -> Command {
        let mut cmd = supervisor();
        cmd.env("SMARTPIPE_RUNTIME_DIR", &self.dir);
        cmd
    }

    /// Pids of the supervisors with a runtime dir here (alive or not).
    pub fn supervisor_pids(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                    .collect()
            })
            .unwrap_or_default();
        pids.sort();
        pids
    }

    /// What `status --json` lists.
    pub fn apps(&self) -> Vec<serde_json::Value> {
        let out = self
            .supervisor()
            .args(["status", "--json"])
            .output()
            .expect("run status");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for PrivateRuntime {
    fn drop(&mut self) {
        if self.supervisor_pids().is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
            return;
        }
        let _ = self
            .supervisor()
            .args(["shutdown", "--timeout", "30"])
            .output();
        for pid in self.supervisor_pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("supervisor") {
                // SAFETY: a supervisor this test started (its runtime dir is ours).
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `seq` column of the tail's CSV, in file order.
pub fn csv_seqs(csv: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(csv).unwrap_or_else(|e| panic!("{}: {e}", csv.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = header.iter().position(|c| *c == "seq").expect("seq column");
    lines
        .map(|l| l.split(',').nth(col).expect("seq").parse().expect("number"))
        .collect()
}

/// The `seq` column of record batches, in order.
fn seq_column(batches: impl Iterator<Item = arrow_array::RecordBatch>) -> Vec<u64> {
    use arrow_array::cast::AsArray;
    batches
        .flat_map(|batch| {
            let seq = batch.column_by_name("seq").expect("seq column");
            seq.as_primitive::<arrow_array::types::UInt64Type>()
                .values()
                .to_vec()
        })
        .collect()
}

/// The `seq` column of a Parquet file, in file order.
pub fn parquet_seqs(file: &Path) -> Vec<u64> {
    let open = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(open)
        .unwrap_or_else(|e| panic!("{} is not a readable Parquet file: {e}", file.display()))
        .build()
        .expect("reader");
    seq_column(reader.map(|batch| batch.expect("row group")))
}

/// The `seq` column of an Arrow IPC stream (a Parquet tail's journal), in file order.
pub fn arrow_stream_seqs(file: &Path) -> Vec<u64> {
    let open = std::fs::File::open(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let reader = arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(open), None)
        .unwrap_or_else(|e| panic!("{} is not an Arrow IPC stream: {e}", file.display()));
    seq_column(reader.map(|batch| batch.expect("record batch")))
}

/// A request-guarantee app: `head`, the `mid` tasks, and a `table.print` tail of `last`
/// into `rows.jsonl`.
pub fn tail_app(
    name: &str,
    head: serde_json::Value,
    mid: Vec<serde_json::Value>,
    last: &str,
) -> serde_json::Value {
    let mut tasks = vec![head];
    tasks.extend(mid);
    tasks.push(serde_json::json!({"name": "rows", "kind": "tail", "function": "table.print", "inputs": [last], "params": {"format": "jsonl", "path": "rows.jsonl"}}));
    serde_json::json!({"name": name, "service_type": "request-guarantee", "tasks": tasks})
}

/// An endless app: a generated 16×16 frame every 20 ms into a CSV.
pub fn endless_app(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("app dir");
    write_app(
        dir,
        &serde_json::json!({
            "name": name,
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 16, "height": 16, "count": 1000000, "fps": 50}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["gen"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    )
}

/// `CMD start APP --detach --run-dir RUN`; panics unless it succeeds. Returns the daemon's
/// pid from the message.
pub fn start_detached(cmd: &mut Command, app: &Path, run_dir: &Path) -> i32 {
    let out = cmd
        .arg("start")
        .arg(app)
        .arg("--detach")
        .arg("--run-dir")
        .arg(run_dir)
        .output()
        .expect("start");
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("runs in the daemon"), "{said}");
    said.split("(pid ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no daemon pid in {said:?}"))
}

/// Frames in the first video stream of `file` (ffprobe decodes and counts them); `None`
/// when ffprobe cannot read it.
pub fn video_frames(file: &Path) -> Option<u64> {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(file)
        .output()
        .ok()?;
    // MPEG-TS lists the stream once per program: the first count.
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_end_matches(','))
        .find(|l| !l.is_empty())?
        .parse()
        .ok()
}
