//! Device memory on the node's ledger: the models each admitted app keeps in the node's one
//! GPU agent, and the admission of a request-guarantee app only where its models fit in what
//! the guaranteed apps already admitted leave of the device. A model two apps share (the
//! same manifest name) is held once, as the agent holds it once.
//!
//! The device's memory is `$SMARTPIPE_DEVICE_MEMORY_MB` when set, else the CUDA card's
//! ([`crate::plan::node_device_memory_mb`]); on `cpu:0` without the variable it is not
//! limited and nothing is refused for it. A model is counted at its file's size, the floor
//! of what a session of it holds (the same floor `plan::models` checks an app's own budget
//! against).

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

use super::ledger::Reservation;

/// One model an admitted app keeps in the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeldModel {
    /// The manifest's name for it.
    pub name: String,
    /// Its file's size, MiB.
    pub mb: f64,
}

/// The distinct models of `app`'s GPU tasks with their sizes (none for an app without
/// models).
pub fn app_models(
    app: &protocol::spec::AppSpec,
    app_file: &Path,
) -> anyhow::Result<Vec<HeldModel>> {
    let Some(store) = super::models::locate(app, app_file)? else {
        return Ok(Vec::new());
    };
    Ok(super::models::hosted(app, &store)?
        .into_iter()
        .map(|m| HeldModel {
            name: m.name,
            mb: m.bytes as f64 / 1048576.0,
        })
        .collect())
}

/// The models `loaded` keeps in the node's agent, when they may be: a request-guarantee
/// app's must fit in what the node's other guaranteed apps `left` of the device (the ledger's
/// [`super::ledger::Left::device`]); the refusal's text otherwise.
pub fn admit(
    loaded: &super::app::LoadedApp,
    left: Option<&DeviceLeft>,
) -> Result<Vec<HeldModel>, String> {
    let models = app_models(&loaded.spec, &loaded.file).map_err(|e| format!("{e:#}"))?;
    if loaded.spec.service_type == protocol::spec::ServiceType::RequestGuarantee {
        if let Some(why) = left.and_then(|d| refusal(&models, d)) {
            return Err(why);
        }
    }
    Ok(models)
}

/// What the request-guarantee apps of the node leave of its device memory.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceLeft {
    /// The device's memory, MiB.
    pub total_mb: u64,
    /// Left once every guaranteed app's models are counted (each model once), MiB.
    pub left_mb: f64,
    /// The models those apps hold: an app that shares one needs no more for it.
    pub resident: BTreeSet<String>,
    /// The guaranteed apps holding models, as `'name' (12.3 MiB of models)`.
    pub holders: Vec<String>,
}

/// What `reservations` leave of a device of `total_mb` (None: not limited).
pub fn left_of(reservations: &[Reservation], total_mb: Option<u64>) -> Option<DeviceLeft> {
    let total_mb = total_mb?;
    let mut resident = BTreeSet::new();
    let mut used = 0.0;
    let mut holders = Vec::new();
    for r in reservations
        .iter()
        .filter(|r| r.service_type == "request-guarantee" && !r.models.is_empty())
    {
        for m in &r.models {
            if resident.insert(m.name.clone()) {
                used += m.mb;
            }
        }
        holders.push(format!("'{}' ({:.1} MiB of models)", r.app, r.model_mb));
    }
    Some(DeviceLeft {
        total_mb,
        left_mb: (total_mb as f64 - used).max(0.0),
        resident,
        holders,
    })
}

/// Why `models` do not fit in what is `left` of the device, for a refusal; `None` when they
/// fit (the models already resident cost nothing more).
pub fn refusal(models: &[HeldModel], left: &DeviceLeft) -> Option<String> {
    let new: Vec<&HeldModel> = models
        .iter()
        .filter(|m| !left.resident.contains(&m.name))
        .collect();
    let needed: f64 = new.iter().map(|m| m.mb).sum();
    if needed <= left.left_mb + 1e-9 {
        return None;
    }
    let listed: Vec<String> = new
        .iter()
        .map(|m| format!("{} {:.1} MiB", m.name, m.mb))
        .collect();
    let after = if left.holders.is_empty() {
        String::new()
    } else {
        format!(" after {}", left.holders.join(", "))
    };
    Some(format!(
        "its models need {needed:.1} MiB of device memory ({}), {:.1} MiB of the device's {} MiB left{after}; the node's agent would swap models under every app's promise (SMARTPIPE_DEVICE_MEMORY_MB sets the device memory apps may fill)",
        listed.join(", "),
        left.left_mb,
        left.total_mb
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(app: &str, service: &str, models: &[(&str, f64)]) -> Reservation {
        let models: Vec<HeldModel> = models
            .iter()
            .map(|&(name, mb)| HeldModel {
                name: name.into(),
                mb,
            })
            .collect();
        Reservation {
            id: app.into(),
            app: app.into(),
            supervisor_pid: std::process::id(),
            service_type: service.into(),
            cores: 0.5,
            memory_mb: None,
            model_mb: models.iter().map(|m| m.mb).sum(),
            models,
            basis: "plan".into(),
            cpu_files: Vec::new(),
            own_cores: None,
            max_latency_ms: None,
        }
    }

    fn want(models: &[(&str, f64)]) -> Vec<HeldModel> {
        held("x", "request-guarantee", models).models
    }

    #[test]
    fn guaranteed_apps_hold_their_models_once_each_and_best_effort_apps_none() {
        let book = [
            held("a", "request-guarantee", &[("det", 4.5), ("rec", 10.4)]),
            held("b", "request-guarantee", &[("rec", 10.4), ("cls", 0.6)]),
            held("bulk", "best-effort", &[("isnet", 84.1)]),
        ];
        let left = left_of(&book, Some(32)).expect("a limited device");
        assert!(
            (left.left_mb - (32.0 - 4.5 - 10.4 - 0.6)).abs() < 1e-9,
            "{left:?}"
        );
        assert_eq!(
            left.resident.iter().collect::<Vec<_>>(),
            ["cls", "det", "rec"]
        );
        assert_eq!(
            left.holders,
            ["'a' (14.9 MiB of models)", "'b' (11.0 MiB of models)"]
        );
        assert_eq!(left_of(&book, None), None, "cpu:0 without a limit");
    }

    #[test]
    fn an_app_is_refused_only_for_the_models_not_already_resident() {
        let book = [held(
            "a",
            "request-guarantee",
            &[("det", 4.5), ("rec", 10.4)],
        )];
        let left = left_of(&book, Some(20)).expect("limited");
        // rec is resident: only cls is new
        assert_eq!(refusal(&want(&[("rec", 10.4), ("cls", 0.6)]), &left), None);
        let text = refusal(&want(&[("rec", 10.4), ("movenet", 18.2)]), &left)
            .expect("movenet does not fit beside a's models");
        assert!(
            text.starts_with("its models need 18.2 MiB of device memory (movenet 18.2 MiB), 5.1 MiB of the device's 20 MiB left after 'a' (14.9 MiB of models)"),
            "{text}"
        );
        let empty = left_of(&[], Some(20)).expect("limited");
        assert_eq!(
            refusal(&want(&[("movenet", 18.2)]), &empty),
            None,
            "fits alone"
        );
    }
}
