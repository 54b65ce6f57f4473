//! Starting child processes and bootstrapping them over ipc-channel.
//!
//! Children are spawned from one long-lived thread (PR_SET_PDEATHSIG fires when the
//! *thread* that forked the child ends), each in its own process group. Each child gets
//! a one-shot server name and a random nonce in its environment, connects back and
//! sends `Hello`; `accept` never times out, so it runs on its own thread, raced against
//! the child's exit and a deadline, and is unblocked by a dummy connection on failure.

use ipc_channel::ipc::{IpcOneShotServer, IpcReceiver, IpcSender};
use protocol::codec;
use protocol::messages::{
    Hello, SetupWire, Up, UpWire, ENV_BOOTSTRAP, ENV_NONCE, PROTOCOL_VERSION,
};
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("worker program '{name}' not found (looked in {looked}); build it with `cargo build` or set SMARTPIPE_WORKER_DIR")]
    MissingWorker { name: String, looked: String },
    #[error("cannot start {stage} ({program}): {detail}")]
    Spawn {
        stage: String,
        program: String,
        detail: String,
    },
    #[error("{stage} exited during start-up ({status}){log}")]
    DiedEarly {
        stage: String,
        status: String,
        log: String,
    },
    #[error("{stage} did not connect back within {secs} s")]
    Timeout { stage: String, secs: u64 },
    #[error("{stage}: bad hello: {detail}")]
    BadHello { stage: String, detail: String },
    #[error("{stage}: {detail}")]
    Ipc { stage: String, detail: String },
}

/// Find a worker binary: `$SMARTPIPE_WORKER_DIR`, next to this executable, then PATH.
pub fn find_worker(name: &str) -> Result<PathBuf, LaunchError> {
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    if let Some(dir) = crate::env::appenv::var("SMARTPIPE_WORKER_DIR") {
        candidates.push(PathBuf::from(dir).join(name));
    }
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(dir.join(name));
    }
    if let Some(path) = crate::env::appenv::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(name)));
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        looked.push(
            c.parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        );
    }
    Err(LaunchError::MissingWorker {
        name: name.to_string(),
        looked: looked.join(", "),
    })
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// The long-lived spawning thread.
#[derive(Clone)]
pub struct Spawner {
    tx: mpsc::Sender<SpawnRequest>,
}

impl Spawner {
    pub fn start() -> Spawner {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    protocol::child::die_with_this_process(&mut cmd);
                    cmd.process_group(0);
                    let _ = reply.send(cmd.spawn());
                }
            })
            .ok();
        Spawner { tx }
    }

    pub fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .send((cmd, reply_tx))
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?;
        reply_rx
            .recv()
            .map_err(|_| std::io::Error::other("spawner thread is gone"))?
    }
}

/// A child that has been started and is waiting to be accepted.
pub struct Pending {
    pub stage: String,
    pub child: Child,
    pub log_path: PathBuf,
    server_name: String,
    nonce: u64,
    accepted: mpsc::Receiver<Result<(IpcReceiver<UpWire>, UpWire), String>>,
}

/// A child that said a good hello.
pub struct Connected {
    pub stage: String,
    pub child: Child,
    pub up: IpcReceiver<UpWire>,
    pub reply: IpcSender<SetupWire>,
    pub hello: Hello,
}

/// A random 64-bit nonce from the kernel.
pub fn random_nonce() -> u64 {
    let mut buf = [0u8; 8];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    let fallback = protocol::clock::now_ns() ^ (u64::from(std::process::id()) << 32);
    u64::from_le_bytes(buf) ^ fallback
}

/// Start one child with a bootstrap server of its own.
pub fn start_child(
    spawner: &Spawner,
    stage: &str,
    mut cmd: Command,
    program: &Path,
    log_path: PathBuf,
) -> Result<Pending, LaunchError> {
    let ipc = |detail: std::io::Error| LaunchError::Ipc {
        stage: stage.to_string(),
        detail: detail.to_string(),
    };
    let (server, server_name) = IpcOneShotServer::<UpWire>::new().map_err(ipc)?;
    let nonce = random_nonce();
    cmd.env(ENV_BOOTSTRAP, &server_name)
        .env(ENV_NONCE, nonce.to_string());
    let child = spawner.spawn(cmd).map_err(|e| LaunchError::Spawn {
        stage: stage.to_string(),
        program: program.display().to_string(),
        detail: e.to_string(),
    })?;
    let (tx, accepted) = mpsc::channel();
    std::thread::Builder::new()
        .name(format!("accept {stage}"))
        .spawn(move || {
            let _ = tx.send(server.accept().map_err(|e| format!("{e:?}")));
        })
        .map_err(ipc)?;
    Ok(Pending {
        stage: stage.to_string(),
        child,
        log_path,
        server_name,
        nonce,
        accepted,
    })
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        String::new()
    } else {
        let mut lines = lines;
        lines.reverse();
        format!(
            "; its log ({}) ends with:\n    {}",
            path.display(),
            lines.join("\n    ")
        )
    }
}

impl Pending {
    /// Wait for the child's hello, checking it is still alive, up to `deadline`.
    pub fn accept(mut self, timeout: Duration) -> Result<Connected, LaunchError> {
        let deadline = Instant::now() + timeout;
        let outcome = loop {
            match self.accepted.recv_timeout(Duration::from_millis(20)) {
                Ok(result) => break Ok(result),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Ok(Err("accept thread ended".into()))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                break Err(LaunchError::DiedEarly {
                    stage: self.stage.clone(),
                    status: status.to_string(),
                    log: log_tail(&self.log_path),
                });
            }
            if Instant::now() >= deadline {
                break Err(LaunchError::Timeout {
                    stage: self.stage.clone(),
                    secs: timeout.as_secs(),
                });
            }
        };
        let result = match outcome {
            Ok(result) => result,
            Err(e) => {
                // Unblock the accept thread with a dummy connection, then give up.
                if let Ok(s) = IpcSender::<UpWire>::connect(self.server_name.clone()) {
                    let _ = s.send(UpWire {
                        bytes: vec![],
                        reply: None,
                    });
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(e);
            }
        };
        let bad = |detail: String| LaunchError::BadHello {
            stage: self.stage.clone(),
            detail,
        };
        let (up, first) = result.map_err(&bad)?;
        let hello = match codec::decode::<Up>("hello", &first.bytes) {
            Ok(Up::Hello(h)) => h,
            Ok(other) => return Err(bad(format!("expected Hello, got {other:?}"))),
            Err(e) => return Err(bad(e.to_string())),
        };
        let reply = first.reply.ok_or_else(|| bad("no reply channel".into()))?;
        if hello.nonce != self.nonce {
            return Err(bad("wrong nonce (not the process we started)".into()));
        }
        if hello.version != PROTOCOL_VERSION {
            let reason = format!(
                "protocol version {} but this supervisor speaks {}; rebuild the workers",
                hello.version, PROTOCOL_VERSION
            );
            let _ = reply.send(SetupWire {
                setup: vec![],
                refused: Some(reason.clone()),
                inbox: None,
                outputs: vec![],
                pools: vec![],
                rewire: None,
                attach: None,
            });
            return Err(bad(reason));
        }
        Ok(Connected {
            stage: self.stage,
            child: self.child,
            up,
            reply,
            hello,
        })
    }
}
