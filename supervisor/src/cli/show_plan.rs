//! `supervisor plan APP`: the plan of an app as `start` would run it (stages, replicas,
//! batches, pools), the strategies' plans and the admission verdict when this machine has a
//! profile of the app, and the verdict against what the node's guaranteed apps leave now.

use std::path::Path;
use std::process::ExitCode;

/// Print the plan of the app file `app` (`json`: the plan alone, as JSON).
pub fn plan(app: &Path, json: bool, brute_force: bool) -> anyhow::Result<ExitCode> {
    let loaded = crate::plan::app::load(app)?;
    let the_plan = crate::plan::plan(&loaded.spec)?;
    let profiles = crate::control::profiling::load_profiles(&loaded)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&the_plan)?);
    } else {
        let device = crate::plan::device();
        let detected = crate::plan::detected_device();
        if device == detected.device {
            println!("device: {}", detected.description);
        } else {
            println!("device: {device} (SMARTPIPE_DEVICE)");
        }
        println!(
            "{:<16} {:<5} {:<18} {:>8} {:>6} {:>7} {:>14}",
            "task", "kind", "function", "replicas", "batch", "slots", "slot bytes"
        );
        for s in &the_plan.stages {
            let (slots, size) = s
                .pool
                .as_ref()
                .map(|p| (p.slots.to_string(), p.slot_size.to_string()))
                .unwrap_or(("-".into(), "-".into()));
            println!(
                "{:<16} {:<5} {:<18} {:>8} {:>6} {:>7} {:>14}",
                s.task,
                s.kind.to_string(),
                s.function,
                s.replicas,
                s.batch_size,
                slots,
                size
            );
        }
    }
    match &profiles {
        None => println!(
            "\nno profile of '{}' on this machine ({}): run `supervisor profile {}` to let the planner choose batch sizes and replicas",
            loaded.spec.name,
            crate::control::profiling::machine(),
            app.display()
        ),
        Some(p) => {
            let all = crate::plan::profiled_plan::all_plans(&loaded.spec, p)?;
            for (name, plan) in [("lazy", &all.lazy), ("balance", &all.balance), ("strong", &all.strong)] {
                match plan {
                    Some(plan) => println!("\nstrategy {name}:\n{plan}"),
                    None => println!("\nstrategy {name}: no configuration meets the quota"),
                }
            }
            match crate::plan::profiled_plan::admit(&loaded.spec, p) {
                Ok(plan) => println!(
                    "\nadmitted ({:?}, {:?}){}",
                    loaded.spec.service_type,
                    loaded.spec.strategy,
                    if plan.shortfall.is_empty() {
                        String::new()
                    } else {
                        let misses: Vec<String> =
                            plan.shortfall.iter().map(|s| s.to_string()).collect();
                        format!(" with a predicted shortfall: {}", misses.join("; "))
                    }
                ),
                Err(refusal) => println!("\nrefused: {refusal}"),
            }
            print_verdict_on_this_node(&loaded, p);
            if brute_force {
                crate::plan::profiled_plan::print_brute_force(&loaded.spec, p)?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `plan`: the verdict against the node as it is now (what the guaranteed apps already
/// admitted leave), when they hold any of it.
fn print_verdict_on_this_node(
    loaded: &crate::plan::app::LoadedApp,
    profiles: &crate::plan::smart::Profiles,
) {
    let app = &loaded.spec;
    let reservations = crate::plan::ledger::Ledger::snapshot();
    let left =
        crate::plan::ledger::left_of(&reservations, crate::plan::ledger::Node::this_machine());
    if left.holders.is_empty() {
        return;
    }
    let verdict = match crate::plan::device_memory::admit(loaded, left.device.as_ref()) {
        Err(why) => format!("refused: {why}"),
        Ok(_) => match crate::plan::profiled_plan::admit_within(app, profiles, left.cores) {
            Ok(plan) if plan.shortfall.is_empty() => format!(
                "admitted on {:.2} cores (it would reserve {:.2}: busy cores over the planner's headroom)",
                plan.cores,
                plan.cores / crate::plan::smart::CPU_HEADROOM
            ),
            Ok(_) => "admitted best-effort with a predicted shortfall".to_string(),
            Err(crate::plan::smart::Refusal::Cores { needed, .. }) => {
                format!(
                    "refused: needs {needed:.2} cores, {:.2} left{}",
                    left.cores,
                    left.after()
                )
            }
            Err(refusal) => format!("refused: {refusal}"),
        },
    };
    println!(
        "\non this node now ({:.2} cores left{}): {verdict}",
        left.cores,
        left.after()
    );
}
