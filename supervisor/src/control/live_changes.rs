//! The control API's requests that change a running app: restart a stage
//! (`POST /apps/NAME/restart`), its request frequency (`rate`) and its GPU agent's intra-op
//! threads (`threads`). Each checks its body, hands the app's run loop the request and waits
//! for the answer.

use std::sync::mpsc;

use serde::Deserialize;

use super::{ApiError, ChangeRequest, LiveChange, Registry, RestartRequest, RESTART_WAIT};

/// A request's JSON body, or a 400 naming the request and the body it takes.
fn json_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    request: &str,
    shape: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            400,
            format!("bad {request} request ({e}); the body is {shape}"),
        )
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestartBody {
    task: String,
    #[serde(default)]
    replica: Option<u32>,
}

/// `POST /apps/NAME/restart`: check the task (and replica), hand the request to the
/// app's run loop and wait for its answer.
pub(super) fn restart(registry: &Registry, name: &str, body: &[u8]) -> Result<String, ApiError> {
    let wanted: RestartBody = json_body(
        body,
        "restart",
        r#"{"task": NAME, "replica": N} (replica optional)"#,
    )?;
    let (live, tasks) = registry
        .lookup(name)
        .ok_or_else(|| ApiError::new(404, format!("no app '{name}' runs in this supervisor")))?;
    if !tasks.contains(&wanted.task) {
        return Err(ApiError::new(
            404,
            format!(
                "app '{name}' has no task '{}'; its tasks: {}",
                wanted.task,
                tasks.join(", ")
            ),
        ));
    }
    let (sender, replicas) = {
        let l = live.lock().unwrap_or_else(|p| p.into_inner());
        let replicas = l
            .stages
            .iter()
            .filter(|s| s.task == wanted.task)
            .map(|s| s.replicas)
            .max();
        (l.restarts.clone(), replicas)
    };
    if let (Some(r), Some(n)) = (wanted.replica, replicas) {
        if r >= n {
            return Err(ApiError::new(
                404,
                format!(
                    "task '{}' of app '{name}' has {n} replica{} (#0 to #{})",
                    wanted.task,
                    if n == 1 { "" } else { "s" },
                    n.saturating_sub(1)
                ),
            ));
        }
    }
    let sender = sender.ok_or_else(|| {
        ApiError::new(
            503,
            format!("app '{name}' cannot restart stages (its run loop takes no restart requests)"),
        )
    })?;
    let (reply, answer) = mpsc::channel();
    sender
        .send(RestartRequest {
            task: wanted.task.clone(),
            replica: wanted.replica,
            reply,
        })
        .map_err(|_| ApiError::new(409, format!("app '{name}' is ending and restarts nothing")))?;
    let what = format!("the restart of '{}'", wanted.task);
    let doing = format!("restarting '{}'", wanted.task);
    await_run_loop(&answer, name, &what, &doing)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateBody {
    items_per_s: f64,
    /// A request-guarantee app: take the rate even where it cannot be promised.
    #[serde(default)]
    unpromised: bool,
}

/// `POST /apps/NAME/rate`: hand the app's run loop a new request frequency (items per
/// second per source; 0 = as fast as the pipeline takes them) and wait for its answer.
pub(super) fn set_rate(registry: &Registry, name: &str, body: &[u8]) -> Result<String, ApiError> {
    let wanted: RateBody = json_body(
        body,
        "rate",
        r#"{"items_per_s": X, "unpromised": BOOL} (unpromised optional)"#,
    )?;
    if let Some(problem) = protocol::limits::rate_problem(wanted.items_per_s) {
        return Err(ApiError::new(400, format!("items_per_s {problem}")));
    }
    send_change(
        registry,
        name,
        LiveChange::Rate {
            items_per_s: wanted.items_per_s,
            unpromised: wanted.unpromised,
        },
        ("the rate change", "changing its rate"),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreadsBody {
    threads: u32,
}

/// Most intra-op threads `POST /apps/NAME/threads` (and `supervisor threads`) accepts.
pub const MAX_THREADS: u32 = 256;

/// `POST /apps/NAME/threads`: hand the app's run loop new intra-op threads for its GPU
/// agent's sessions and wait for its answer.
pub(super) fn set_threads(
    registry: &Registry,
    name: &str,
    body: &[u8],
) -> Result<String, ApiError> {
    let wanted: ThreadsBody = json_body(body, "threads", r#"{"threads": N}"#)?;
    if !(1..=MAX_THREADS).contains(&wanted.threads) {
        return Err(ApiError::new(
            400,
            format!("threads must be 1 to {MAX_THREADS}, not {}", wanted.threads),
        ));
    }
    send_change(
        registry,
        name,
        LiveChange::Threads(wanted.threads),
        ("the thread change", "changing its threads"),
    )
}

/// Hand `change` to app `name`'s run loop and wait for its answer (`what`, `doing`: how
/// [`await_run_loop`] names it).
fn send_change(
    registry: &Registry,
    name: &str,
    change: LiveChange,
    (what, doing): (&str, &str),
) -> Result<String, ApiError> {
    let (live, _) = registry
        .lookup(name)
        .ok_or_else(|| ApiError::new(404, format!("no app '{name}' runs in this supervisor")))?;
    let sender = live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .changes
        .clone()
        .ok_or_else(|| {
            ApiError::new(
                503,
                format!("app '{name}' takes no changes now (its run loop takes no requests)"),
            )
        })?;
    let (reply, answer) = mpsc::channel();
    sender
        .send(ChangeRequest { change, reply })
        .map_err(|_| ApiError::new(409, format!("app '{name}' is ending")))?;
    await_run_loop(&answer, name, what, doing)
}

/// The run loop's answer to a request of the API: its message (200), its refusal (409),
/// no answer within [`RESTART_WAIT`] (504: "did not answer `what`"), or the app ended
/// first (409: "ended before `doing`").
fn await_run_loop(
    answer: &mpsc::Receiver<Result<String, String>>,
    name: &str,
    what: &str,
    doing: &str,
) -> Result<String, ApiError> {
    match answer.recv_timeout(RESTART_WAIT) {
        Ok(Ok(message)) => Ok(message),
        Ok(Err(message)) => Err(ApiError::new(409, message)),
        Err(mpsc::RecvTimeoutError::Timeout) => Err(ApiError::new(
            504,
            format!(
                "app '{name}' did not answer {what} within {} s",
                RESTART_WAIT.as_secs()
            ),
        )),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err(ApiError::new(
            409,
            format!("app '{name}' ended before {doing}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_reaches_the_app_exactly_as_it_was_written() {
        // serde_json parses floats fast but not always to the nearest f64 unless its
        // float_roundtrip feature is on: this rate came back 18.047487388023537.
        let rate: f64 = "18.047487388023534".parse().expect("a number");
        let body = serde_json::to_vec(&serde_json::json!({"items_per_s": rate})).expect("json");
        let got: RateBody = json_body(&body, "rate", "").expect("a rate body");
        assert_eq!(got.items_per_s.to_bits(), rate.to_bits());
    }
}
