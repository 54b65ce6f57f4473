//! A request-guarantee app's promise while it runs: the rate it was admitted at, the cores
//! it reserved in the node's ledger and the profiles the planner sized it from. When its
//! request rate changes (`supervisor rate`), the app is admitted again at the new rate
//! within what the node's other guaranteed apps leave, so a promise already made to
//! them still holds: the new plan and reservation, or why the node cannot promise it.

use crate::plan::ledger::{self, Reservation};
use crate::plan::profiled_plan;
use crate::plan::smart::{self, Profiles};
use protocol::spec::{AppSpec, TaskKind};

/// What a request-guarantee app was admitted with (only apps admitted on a profile have
/// one: without a profile nothing was reserved or promised).
#[derive(Debug, Clone)]
pub struct Promise {
    /// Its reservation in the node's ledger.
    pub reservation_id: String,
    pub profiles: Profiles,
    /// Items per second per source it was admitted at.
    pub rate: f64,
    /// Cores its reservation holds.
    pub cores: f64,
}

/// The app admitted again at another rate: the plan to run and the cores to reserve.
#[derive(Debug, Clone)]
pub struct Readmitted {
    pub plan: smart::Plan,
    pub cores: f64,
}

/// Why an app cannot be promised a new rate (its rate and reservation stay as they were).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadmitError {
    #[error("an unpaced request-guarantee app has no rate to promise its quota at")]
    Unpaced,
    #[error("at {rate} items/s: {refusal}{after}")]
    Refused {
        rate: f64,
        refusal: String,
        /// Who holds the rest of the node (`after 'a' (0.80 reserved)`), when anyone does.
        after: String,
    },
    #[error("cannot read or write the node ledger: {0}")]
    Ledger(String),
}

/// Plan `app` (as it runs, with the plan it was admitted with) at `items_per_s` within
/// what `reservations` other than its own (`promise.reservation_id`) leave of `node`.
pub fn plan_at(
    app: &AppSpec,
    promise: &Promise,
    items_per_s: f64,
    reservations: &[Reservation],
    node: ledger::Node,
) -> Result<Readmitted, ReadmitError> {
    if items_per_s <= 0.0 {
        return Err(ReadmitError::Unpaced);
    }
    let others: Vec<Reservation> = reservations
        .iter()
        .filter(|r| r.id != promise.reservation_id)
        .cloned()
        .collect();
    let left = ledger::left_of(&others, node);
    let mut at_rate = app.clone();
    at_rate.request_frequency = Some(items_per_s);
    at_rate.planned_capacity = None;
    // The new rate paces every head (`SetRate`), whatever its `fps` said.
    for head in at_rate
        .tasks
        .iter_mut()
        .filter(|t| t.kind == TaskKind::Head)
    {
        crate::plan::pace_head(head, items_per_s);
    }
    let refused = |refusal: String, after: String| ReadmitError::Refused {
        rate: items_per_s,
        refusal,
        after,
    };
    if let Some(why) = profiled_plan::impossible_on_its_face(&at_rate) {
        return Err(refused(why, String::new()));
    }
    // What binds: the app's own grant, or what the other guaranteed apps leave.
    let own = app.constraints.cpu_cores.filter(|own| *own < left.cores);
    match profiled_plan::admit_within(&at_rate, &promise.profiles, left.cores) {
        Ok(plan) => Ok(Readmitted {
            cores: plan.cores / smart::CPU_HEADROOM,
            plan,
        }),
        Err(smart::Refusal::Cores { needed, .. }) => Err(match own {
            Some(own) => refused(
                format!("needs {needed:.2} cores, {own:.2} granted by its constraints.cpu_cores"),
                String::new(),
            ),
            None => refused(
                format!("needs {needed:.2} cores, {:.2} left", left.cores),
                left.after(),
            ),
        }),
        Err(other) => Err(refused(other.to_string(), String::new())),
    }
}

/// [`plan_at`] against the node's ledger, and the reservation changed to the new plan's
/// cores when `accept` takes the plan (it checks that the running app can follow it).
/// The ledger stays locked from the planning to the change, so no other admission
/// comes between.
pub fn readmit(
    app: &AppSpec,
    promise: &mut Promise,
    items_per_s: f64,
    accept: impl FnOnce(&smart::Plan) -> Result<(), String>,
) -> Result<Result<Readmitted, String>, ReadmitError> {
    let ledger = ledger::Ledger::lock().map_err(|e| ReadmitError::Ledger(e.to_string()))?;
    let readmitted = plan_at(
        app,
        promise,
        items_per_s,
        &ledger.reservations,
        ledger::Node::this_machine(),
    )?;
    if let Err(why) = accept(&readmitted.plan) {
        return Ok(Err(why));
    }
    let held = ledger
        .set_cores(&promise.reservation_id, readmitted.cores)
        .map_err(|e| ReadmitError::Ledger(e.to_string()))?;
    if !held {
        return Err(ReadmitError::Ledger(format!(
            "its reservation {} is not in the ledger any more",
            promise.reservation_id
        )));
    }
    promise.rate = items_per_s;
    promise.cores = readmitted.cores;
    Ok(Ok(readmitted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::smart::profile::TaskProfile;

    fn guaranteed(rate: f64) -> AppSpec {
        serde_json::from_value(serde_json::json!({
            "name": "cam", "service_type": "request-guarantee", "strategy": "lazy",
            "request_frequency": rate,
            "quota": {"max_latency_ms": 2000},
            "constraints": {"cpu_cores": 2.0},
            "tasks": [
                {"name": "gen", "kind": "head", "function": "image.gen", "params": {"width": 8, "height": 8, "count": 1}},
                {"name": "work", "kind": "cpu", "function": "core.forward", "inputs": ["gen"]},
                {"name": "rows", "kind": "tail", "function": "table.print", "inputs": ["work"], "params": {"format": "csv"}}
            ]
        }))
        .expect("app")
    }

    /// `work` costs 10 ms per item whatever the batch.
    fn profiles() -> Profiles {
        Profiles::new("test").with(TaskProfile::linear("work", 0.0, 0.010))
    }

    fn reservation(id: &str, app: &str, cores: f64) -> Reservation {
        Reservation {
            id: id.into(),
            app: app.into(),
            supervisor_pid: 1,
            service_type: "request-guarantee".into(),
            cores,
            memory_mb: None,
            model_mb: 0.0,
            models: Vec::new(),
            basis: "plan".into(),
            cpu_files: Vec::new(),
            own_cores: None,
            max_latency_ms: None,
        }
    }

    fn node() -> ledger::Node {
        ledger::Node {
            cores: 2.0,
            memory_mb: 0,
            device_mb: None,
        }
    }

    fn promise(cores: f64) -> Promise {
        Promise {
            reservation_id: "mine".into(),
            profiles: profiles(),
            rate: 10.0,
            cores,
        }
    }

    #[test]
    fn a_raise_that_fits_beside_the_others_is_planned_on_more_cores() {
        // 10 ms an item: 10/s keeps 0.1 of a core busy, 100/s one core.
        let app = guaranteed(10.0);
        let book = [reservation("mine", "cam", 0.11), reservation("b", "b", 0.5)];
        let low = plan_at(&app, &promise(0.11), 10.0, &book, node()).expect("fits");
        let high = plan_at(&app, &promise(0.11), 100.0, &book, node()).expect("fits");
        assert!(
            high.cores > 5.0 * low.cores,
            "{} vs {}",
            high.cores,
            low.cores
        );
        assert!(
            high.cores <= 1.5 + 1e-9,
            "within what 'b' leaves: {}",
            high.cores
        );
    }

    #[test]
    fn the_new_rate_paces_every_head_whatever_its_fps_said() {
        // `supervisor rate` sets every head's pace: a head written with fps 100 runs at
        // the new rate, and the app is planned at that rate, not at 100/s.
        let mut paced = guaranteed(10.0);
        paced.tasks[0]
            .params
            .insert("fps".into(), serde_json::json!(100.0));
        let book = [reservation("mine", "cam", 0.11)];
        let at_ten = plan_at(&paced, &promise(0.11), 10.0, &book, node()).expect("fits");
        let unpaced =
            plan_at(&guaranteed(10.0), &promise(0.11), 10.0, &book, node()).expect("fits");
        assert!(
            (at_ten.cores - unpaced.cores).abs() < 1e-9,
            "{} vs {}",
            at_ten.cores,
            unpaced.cores
        );
    }

    #[test]
    fn a_raise_past_what_the_others_leave_is_refused_naming_them() {
        let app = guaranteed(10.0);
        // 'b' holds 1.5 of the 2 cores: 100/s (about 1.1 cores) does not fit; without 'b'
        // it does, and the app's own reservation never counts against it.
        let book = [reservation("mine", "cam", 0.11), reservation("b", "b", 1.5)];
        let err = plan_at(&app, &promise(0.11), 100.0, &book, node()).expect_err("refused");
        let text = err.to_string();
        assert!(text.starts_with("at 100 items/s: needs"), "{text}");
        assert!(
            text.contains("0.50 left after 'b' (1.50 reserved)"),
            "{text}"
        );
        let alone = [reservation("mine", "cam", 1.9)];
        plan_at(&app, &promise(1.9), 100.0, &alone, node()).expect("its own cores are its own");
    }

    #[test]
    fn a_rate_below_the_throughput_quota_or_past_its_own_grant_is_refused_saying_so() {
        let mut app = guaranteed(10.0);
        app.quota.throughput_per_min = Some(600.0);
        let err = plan_at(&app, &promise(0.11), 5.0, &[], node()).expect_err("5/s < 600/min");
        assert!(err.to_string().contains("throughput quota 600"), "{err}");
        let mut app = guaranteed(10.0);
        app.constraints.cpu_cores = Some(0.5);
        let err = plan_at(&app, &promise(0.11), 100.0, &[], node()).expect_err("own grant");
        assert!(
            err.to_string()
                .contains("granted by its constraints.cpu_cores"),
            "{err}"
        );
    }

    #[test]
    fn an_unpaced_guaranteed_app_is_not_readmitted() {
        let err = plan_at(&guaranteed(10.0), &promise(0.11), 0.0, &[], node()).expect_err("0");
        assert_eq!(err, ReadmitError::Unpaced);
    }
}
