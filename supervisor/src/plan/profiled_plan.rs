//! The planner's side of stored profiles: what the app is granted on this machine, how
//! the planner sees its load, admission (`plan`, `start`), every strategy's plan, the
//! brute-force comparison, and writing an admitted plan into the app's tasks.

use crate::plan::smart::{self, Arrivals, PlanOptions, Profiles, Resources};
use protocol::spec::{AppSpec, BatchSpec, TaskKind};

/// What the app is granted on this machine (its constraints, else the machine).
fn resources(app: &AppSpec) -> Resources {
    let device = crate::plan::device();
    Resources::from_app(
        app,
        crate::plan::available_cores(),
        !crate::plan::on_cpu_cores(&device),
        crate::plan::agent_threads(&device),
        crate::plan::agent_executors(&device),
    )
}

/// How the planner sees the app's load: periodic arrivals when every head is paced (an
/// `fps`), Poisson otherwise.
pub fn plan_options(app: &AppSpec) -> PlanOptions {
    let heads: Vec<_> = app
        .tasks
        .iter()
        .filter(|t| t.kind == TaskKind::Head)
        .collect();
    let paced = !heads.is_empty() && heads.iter().all(|t| crate::plan::source_fps(t).is_some());
    PlanOptions {
        arrivals: if paced {
            Arrivals::Periodic
        } else {
            Arrivals::Poisson
        },
        queue_bound: in_flight_bound(app),
        ..PlanOptions::default()
    }
}

/// How many items the app can have in flight before a best-effort source sheds: its
/// sources' pools (`plan::source_in_flight`), else the default pool.
fn in_flight_bound(app: &AppSpec) -> u32 {
    crate::plan::plan(app)
        .ok()
        .and_then(|p| {
            p.stages
                .iter()
                .filter(|s| s.kind == TaskKind::Head)
                .filter_map(|s| s.pool.as_ref().map(|pool| pool.slots))
                .max()
        })
        .unwrap_or(crate::plan::DEFAULT_SLOTS)
}

/// A quota no measurement can make possible: a throughput above what the sources offer
/// (`request_frequency`, or a faster head's `fps`, × 60 items per minute).
pub fn impossible_on_its_face(app: &AppSpec) -> Option<String> {
    let (Some(quota), Some(rate)) = (app.quota.throughput_per_min, crate::plan::offered_rate(app))
    else {
        return None;
    };
    let offered = rate * 60.0;
    // A quota of exactly the offered rate (as written, or computed as rate × 60 on the
    // other side) is possible: float rounding is not a refusal.
    (quota > offered * (1.0 + 1e-9)).then(|| {
        format!(
            "throughput quota {quota} replies/min is more than the request frequency offers ({rate} requests/s = {offered} per min), by {}",
            quota - offered
        )
    })
}

/// The planner's answer for an app on this machine.
pub fn admit(app: &AppSpec, profiles: &Profiles) -> Result<smart::Plan, smart::Refusal> {
    admit_within(app, profiles, f64::INFINITY)
}

/// The planner's answer for an app on this machine when at most `cores_left` cores are
/// left of it (the rest reserved by apps already admitted).
pub fn admit_within(
    app: &AppSpec,
    profiles: &Profiles,
    cores_left: f64,
) -> Result<smart::Plan, smart::Refusal> {
    let mut resources = resources(app);
    resources.cpu_cores = resources.cpu_cores.min(cores_left);
    let plan = smart::admit(app, profiles, resources, &plan_options(app))?;
    // An overloaded best-effort app drains items at the rate its plan carries, and its
    // sources' pools (what may wait in flight) are sized by that rate (`apply`): predict
    // it with that bound on what is in flight.
    if throughput_short(&plan) {
        let mut capped = app.clone();
        capped.planned_capacity = Some(plan.predicted.throughput_per_s);
        return smart::admit(&capped, profiles, resources, &plan_options(&capped));
    }
    Ok(plan)
}

fn throughput_short(plan: &smart::Plan) -> bool {
    plan.shortfall
        .iter()
        .any(|s| matches!(s, smart::Shortfall::Throughput { .. }))
}

/// The plans of all three strategies, for `supervisor plan`.
pub fn all_plans(app: &AppSpec, profiles: &Profiles) -> anyhow::Result<smart::Plans> {
    let resources = resources(app);
    Ok(smart::plans(app, profiles, resources, &plan_options(app))?)
}

/// `plan --brute-force`: the cheapest static configuration meeting the quota.
pub fn print_brute_force(app: &AppSpec, profiles: &Profiles) -> anyhow::Result<()> {
    use smart::brute::{cheapest_static, Space};
    let (resources, opts) = (resources(app), plan_options(app));
    match cheapest_static(app, profiles, resources, &opts, Space::FULL)? {
        Some(c) => {
            println!(
                "\nbrute force ({} configurations): cheapest meeting the quota uses {:.2} cores",
                c.tried, c.cores
            );
            for (t, s) in c.stages.iter().filter(|(t, _)| {
                app.tasks
                    .iter()
                    .any(|x| &x.name == t && matches!(x.kind, TaskKind::Cpu | TaskKind::Gpu))
            }) {
                println!(
                    "{t}: batch {} (wait {:.1} ms), replicas {}",
                    s.batch, s.max_wait_ms, s.replicas
                );
            }
            // Does meeting the quota take batching, or replicas?
            for (space, without) in [
                (Space::NO_BATCHING, "batching"),
                (Space::NO_REPLICAS, "replicas"),
            ] {
                match cheapest_static(app, profiles, resources, &opts, space)? {
                    Some(c) => println!(
                        "without {without}: cheapest meeting the quota uses {:.2} cores",
                        c.cores
                    ),
                    None => println!("without {without}: no static configuration meets the quota"),
                }
            }
        }
        None => println!("\nbrute force: no static configuration meets the quota"),
    }
    Ok(())
}

/// Apply an admitted plan to the app: batch and replicas of every task it planned.
pub fn apply(app: &mut AppSpec, plan: &smart::Plan) {
    app.planned_capacity = throughput_short(plan)
        .then_some(plan.predicted.throughput_per_s)
        .filter(|c| *c > 0.0);
    for (task, cfg) in &plan.stages {
        if let Some(t) = app.tasks.iter_mut().find(|t| &t.name == task) {
            if t.kind == TaskKind::Head {
                continue;
            }
            if t.kind == TaskKind::Gpu && (t.batch.is_none() || t.planned) {
                t.batch = Some(BatchSpec {
                    size: cfg.batch,
                    max_wait_ms: cfg.max_wait_ms,
                });
            }
            if t.replicas.is_none() || t.planned {
                t.replicas = Some(cfg.replicas);
            }
            t.planned = true;
        }
    }
}
