//! `test.fault`: a stage that forwards items and then misbehaves, for SmartPipe's own
//! fault-injection tests. The supervisor refuses apps that use it unless
//! `SMARTPIPE_TEST_FAULTS=1` is set, so production apps cannot.

use crate::StageError;
use protocol::node::Node;
use std::time::Duration;

pub fn run(node: &mut Node) -> Result<(), StageError> {
    if std::env::var(protocol::messages::ENV_TEST_FAULTS).map_or(true, |v| v != "1") {
        return Err(StageError::Unsupported(
            "test.fault runs only under SMARTPIPE_TEST_FAULTS=1".into(),
        ));
    }
    let protocol::functions::params::TestFault {
        mode,
        after,
        stall_ms,
    } = crate::params(node)?;
    let mut forwarded = 0u64;
    let misbehave = |node: &Node, mode: &str| -> Result<(), StageError> {
        tracing::warn!(mode, "test.fault: misbehaving now");
        match mode {
            "crash" | "crash-on-start" => std::process::abort(),
            // Stopping ourselves; the supervisor's hang detection must notice.
            "hang" => {
                let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
            }
            // Busy with one item for a while (heartbeats go on): a slow stage, not a hung one.
            "stall" => std::thread::sleep(Duration::from_millis(stall_ms)),
            // Bytes that decode as no message (an unknown variant tag), sent up once:
            // only the first process of the replica does it, a restarted one forwards.
            "garbage" if node.setup.incarnation == 0 => {
                node.send_raw_up(vec![0xff; 16])?;
            }
            "ignore-stop" => {
                // SAFETY: ignoring a signal installs no handler of ours, so nothing runs in
                // a signal context.
                let _ = unsafe {
                    nix::sys::signal::signal(
                        nix::sys::signal::Signal::SIGTERM,
                        nix::sys::signal::SigHandler::SigIgn,
                    )
                };
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            _ => {}
        }
        Ok(())
    };
    if mode == "crash-on-start" || after == 0 {
        misbehave(node, &mode)?;
    }
    // On the stage SDK's body loop: each item is forwarded (the holds counted there).
    stage::body::run(node, None, |body, item| {
        body.forward(item)?;
        forwarded += 1;
        if forwarded == after {
            misbehave(body.node(), &mode)?;
        }
        Ok(())
    })
}
