//! Network video streams. One that stops sending — a camera gone, a server that keeps the
//! connection open and says nothing: before, the planner's probe waited for ever (`start`
//! printed nothing), a stream that went quiet held the app for ever, and a drain asked
//! meanwhile failed after its 10 s. Now the probe has a deadline, `source.video` ends a
//! stream silent for its `read_timeout_s` and says so, and a drain is obeyed at once. And a
//! live stream's restarted source goes on with what is live, instead of reading and throwing
//! away as many frames as it had read before (an hour of a camera after an hour's run).

use serde_json::json;
use smartpipe_tests::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An HTTP server on a free loopback port that answers every request with `body` (no
/// length) and then keeps the connection open without a word, as a camera that stopped
/// sending. `None` sends not even the response's head. Returns the URL of the stream.
fn silent_after(body: Option<Vec<u8>>) -> String {
    silent_after_a_pause(body, Duration::ZERO).0
}

/// [`silent_after`], each answer `pause` after its request (a slow camera); with the count
/// of connections made to it so far.
fn silent_after_a_pause(body: Option<Vec<u8>>, pause: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    // The connections, held open (never closed, never written to again) while the test runs.
    let held: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            counted.fetch_add(1, Ordering::SeqCst);
            read_request_head(&mut stream);
            std::thread::sleep(pause);
            if let Some(body) = &body {
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(body);
                let _ = stream.flush();
            }
            if let Ok(mut streams) = held.lock() {
                streams.push(stream);
            }
        }
    });
    (format!("http://127.0.0.1:{port}/live.ts"), connections)
}

/// Read a request up to the blank line that ends its head.
fn read_request_head(stream: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !seen.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => seen.push(byte[0]),
            _ => return,
        }
    }
}

/// 80 frames of 64×48 at 10 fps as an MPEG transport stream, as a live camera sends them:
/// longer than the 5 s ffprobe reads of a stream to know it.
fn transport_stream(dir: &Path) -> Vec<u8> {
    let file = dir.join("live.ts");
    let made = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("testsrc=size=64x48:rate=10:d=8")
        .args(["-c:v", "mpeg2video", "-f", "mpegts"])
        .arg(&file)
        .status()
        .expect("ffmpeg");
    assert!(made.success());
    std::fs::read(&file).expect("the stream")
}

/// A best-effort app in `dir` reading `url` with these `source.video` params into
/// `rows.jsonl`.
fn stream_app(dir: &Path, name: &str, url: &str, params: serde_json::Value) -> PathBuf {
    let mut head_params = json!({"path": url});
    if let (Some(all), Some(more)) = (head_params.as_object_mut(), params.as_object()) {
        all.extend(more.clone());
    }
    let mut app = tail_app(
        name,
        json!({"name": "cam", "kind": "head", "function": "source.video", "params": head_params}),
        vec![],
        "cam",
    );
    app["service_type"] = json!("best-effort");
    write_app(dir, &app)
}

/// Ctrl-C to a supervisor this test started that still runs (its source waits for a frame).
fn interrupt(sup: &Background) {
    // SAFETY: signalling a live child process of this test.
    let signalled = unsafe { libc::kill(sup.id() as i32, libc::SIGINT) };
    assert_eq!(signalled, 0, "SIGINT");
}

#[test]
fn a_stream_that_goes_silent_ends_after_its_read_timeout_and_the_summary_says_so() {
    require_ffmpeg();
    let dir = scratch("stalled-stream");
    let url = silent_after(Some(transport_stream(&dir)));
    let app = stream_app(&dir, "stalled", &url, json!({"read_timeout_s": 1}));
    let (out, summary) = run_ok(&app, &dir.join("run"));
    let delivered = summary["items_out"].as_u64().expect("items_out");
    assert!(
        (1..=80).contains(&delivered),
        "what came is delivered: {summary}"
    );
    let rows = std::fs::read_to_string(dir.join("rows.jsonl")).expect("rows");
    assert_eq!(rows.lines().count() as u64, delivered);
    let note = summary["short_sources"][0].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!(
            "source 'cam': {url} sent no frame for 1 s (read_timeout_s) after {delivered} frames"
        )),
        "{summary}"
    );
    assert!(printed(&out).contains("short:"), "{}", printed(&out));
}

#[test]
fn a_drain_asked_while_a_stream_is_silent_is_obeyed() {
    require_ffmpeg();
    let dir = scratch("silent-drain");
    let url = silent_after(Some(transport_stream(&dir)));
    // 0: wait for the next frame for ever, as a user would for a camera that pauses.
    let app = stream_app(&dir, "silent", &url, json!({"read_timeout_s": 0}));
    let run = dir.join("run");
    let sup = start_in_background(&mut supervisor(), &app, &run);
    let rows = dir.join("rows.jsonl");
    wait_for("the stream's frames", Duration::from_secs(120), || {
        std::fs::read_to_string(&rows).is_ok_and(|r| r.lines().count() > 0)
    });
    interrupt(&sup);
    let (status, stderr) = finish(sup);
    assert!(status.success(), "{stderr}");
    let summary = read_summary(&run);
    assert_eq!(summary["outcome"], "drained after a signal", "{stderr}");
    assert!(summary["items_out"].as_u64() > Some(0), "{summary}");
}

#[test]
fn a_stream_that_sends_nothing_is_refused_at_start_after_the_probe_deadline() {
    require_ffmpeg();
    let dir = scratch("mute-stream");
    let url = silent_after(None);
    let app = stream_app(&dir, "mute", &url, json!({}));
    let mut cmd = supervisor();
    cmd.env("SMARTPIPE_PROBE_TIMEOUT_S", "1");
    let out = start_to_end(&mut cmd, &app, &dir.join("run"));
    assert!(!out.status.success());
    let said = printed(&out);
    assert!(
        said.contains(&format!(
            "task 'cam': {url}: not a readable video (ffprobe had no answer within 1 s"
        )),
        "{said}"
    );
}

#[test]
fn a_restarted_source_of_a_live_stream_goes_on_with_what_the_stream_sends_now() {
    require_ffmpeg();
    let dir = scratch("live-restart");
    // Every connection gets the same 80 frames and then silence: a stream without an end
    // (no duration), so each reader sees what is sent from when it connects.
    let url = silent_after(Some(transport_stream(&dir)));
    let name = "liverestart";
    let app = write_app(
        &dir,
        &json!({
            "name": name,
            "service_type": "request-guarantee",
            "tasks": [
                {"name": "cam", "kind": "head", "function": "source.video", "params": {"path": url, "read_timeout_s": 0}},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["cam"], "params": {"format": "csv", "path": "rows.csv"}}
            ]
        }),
    );
    let run = dir.join("run");
    let sup = start_in_background(&mut supervisor(), &app, &run);
    let csv = dir.join("rows.csv");
    let rows = || std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count().saturating_sub(1));
    wait_for(
        "the first connection's frames",
        Duration::from_secs(120),
        || rows() >= 60,
    );
    let before = rows();
    kill::kill_and_wait_for_replacement(name, "cam#0");
    // Before, the new source read and threw away as many frames as the tails had (about
    // 60-80 of the new connection's 80): a handful came, and a camera would have been dark
    // for as long as the app had run.
    wait_for(
        "the new connection's frames",
        Duration::from_secs(120),
        || rows() >= before + 40,
    );
    interrupt(&sup);
    let (status, stderr) = finish(sup);
    assert!(status.success(), "{stderr}");
    let seqs = csv_seqs(&csv);
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "each item once, in order: {seqs:?}"
    );
    let log = std::fs::read_to_string(run.join("logs/cam#0.log")).expect("the head's log");
    assert!(log.contains("is a live stream"), "{log}");
    let summary = read_summary(&run);
    assert_eq!(summary["restarts"]["cam#0"], 1, "{summary}");
}

/// A camera's hiccup must not end a 24/7 app: a stream that goes silent is opened again
/// (`reconnect`, the default for live protocols such as RTSP and UDP; given here for an
/// HTTP stream), its frames numbered on, until the app is stopped.
#[test]
fn a_lost_stream_is_opened_again_and_its_frames_numbered_on() {
    require_ffmpeg();
    let dir = scratch("reconnect");
    let url = silent_after(Some(transport_stream(&dir)));
    let app = stream_app(
        &dir,
        "reconnect",
        &url,
        json!({"read_timeout_s": 1, "reconnect": true}),
    );
    let run = dir.join("run");
    let sup = start_in_background(&mut supervisor(), &app, &run);
    let rows = dir.join("rows.jsonl");
    let count = || std::fs::read_to_string(&rows).map_or(0, |r| r.lines().count());
    // One connection gives at most 80 frames: more came through a second one.
    wait_for(
        "frames of a second connection",
        Duration::from_secs(120),
        || count() > 100,
    );
    interrupt(&sup);
    let (status, stderr) = finish(sup);
    assert!(status.success(), "{stderr}");
    let summary = read_summary(&run);
    assert_eq!(summary["outcome"], "drained after a signal", "{stderr}");
    let note = summary["reconnected_sources"][0]
        .as_str()
        .unwrap_or_default();
    assert!(
        note.starts_with("source 'cam' lost its stream "),
        "{summary}"
    );
    let seqs: Vec<u64> = std::fs::read_to_string(&rows)
        .expect("rows")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|row| row["seq"].as_u64())
        .collect();
    assert!(seqs.len() > 100);
    // Numbered on (best effort: a full pool may shed one now and then).
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "numbered on, each once: {seqs:?}"
    );
}

/// A decoder's first frame comes after it has connected and analysed the stream, which can
/// take longer than the wait between frames: it may take as long as a probe. Before, a
/// `read_timeout_s` shorter than that start took every connection for stalled.
#[test]
fn a_first_frame_slower_than_the_read_timeout_is_waited_for() {
    require_ffmpeg();
    let dir = scratch("slow-start");
    let (url, connections) =
        silent_after_a_pause(Some(transport_stream(&dir)), Duration::from_secs(2));
    let app = stream_app(&dir, "slowstart", &url, json!({"read_timeout_s": 1}));
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert!(summary["items_out"].as_u64() > Some(0), "{summary}");
    let note = summary["short_sources"][0].as_str().unwrap_or_default();
    assert!(note.contains("sent no frame for 1 s"), "{summary}");
    // The planner's probe and the decoder: the head takes what the probe found instead of
    // probing the stream again (each probe of a live MPEG-TS takes ffprobe 5 s).
    assert_eq!(connections.load(Ordering::SeqCst), 2);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// A camera's URL often carries its password or a token: the console, the summary, the report
/// and the logs name the stream with them masked (they are shared; before, the password was in
/// every message about the stream and in the report's copy of the app).
#[test]
fn a_cameras_password_is_not_written_where_the_stream_is_named() {
    require_ffmpeg();
    let dir = scratch("camera-secret");
    let url = silent_after(Some(transport_stream(&dir)));
    let secret_url = url.replace("http://", "http://admin:s3cret@") + "?token=t0ken";
    let app = stream_app(&dir, "secret", &secret_url, json!({"read_timeout_s": 1}));
    let run = dir.join("run");
    let (out, summary) = run_ok(&app, &run);
    let note = summary["short_sources"][0].as_str().unwrap_or_default();
    assert!(note.contains("http://admin:***@127.0.0.1:"), "{summary}");
    assert!(note.contains("live.ts?token=***"), "{summary}");
    let mut places = vec![("the console".to_string(), printed(&out))];
    for file in files_under(&run) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).expect("read")).into_owned();
        places.push((file.display().to_string(), text));
    }
    assert!(
        places.len() > 3,
        "the run folder holds the summary, report and logs"
    );
    for (place, text) in places {
        assert!(
            !text.contains("s3cret") && !text.contains("t0ken"),
            "{place} shows a secret of the URL"
        );
    }
}

/// `image.show {path}` streams to a URL (an annotated camera published to a media server):
/// before, it made a folder named `tcp:` beside the app, failed at its end ("Unable to find
/// a suitable output format") and reported every frame as delivered. A URL of a protocol it
/// cannot stream with is refused by `validate`.
#[test]
fn a_video_is_streamed_to_a_url() {
    require_ffmpeg();
    let dir = scratch("stream-out");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    let receiver = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the tail connects");
        let mut bytes = Vec::new();
        stream.read_to_end(&mut bytes).expect("the stream");
        bytes
    });
    let tail = |path: &str| {
        json!({
            "name": "published",
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 64, "height": 48, "count": 20}},
                {"name": "live", "kind": "tail", "function": "image.show", "inputs": ["gen"], "params": {"path": path}}
            ]
        })
    };
    let app = write_app(&dir, &tail(&format!("tcp://127.0.0.1:{port}")));
    let (_, summary) = run_ok(&app, &dir.join("run"));
    assert_eq!(summary["items_out"], 20, "{summary}");
    let received = dir.join("received.ts");
    std::fs::write(&received, receiver.join().expect("the receiver")).expect("write");
    assert_eq!(video_frames(&received), Some(20), "every frame arrived");
    assert!(!dir.join("tcp:").exists(), "no folder named after the URL");
    let app = write_app(&dir, &tail("http://127.0.0.1:9/x.mp4"));
    let out = supervisor()
        .arg("validate")
        .arg(&app)
        .output()
        .expect("validate");
    assert!(!out.status.success());
    assert!(
        printed(&out).contains("'http://' is not one of them"),
        "{}",
        printed(&out)
    );
}
