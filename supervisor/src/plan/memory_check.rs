//! Whether the planned shared-memory pools fit this machine's memory before any is made.
//! A pool's pages are taken as payloads fill its slots (a memfd created without writing
//! it), so a pool that cannot fit would get the app's processes (and, in the daemon,
//! every other app) OOM-killed once its slots fill, however late: refused at start.

use crate::plan::Plan;
use anyhow::anyhow;
use protocol::limits::bytes;
use protocol::shm::region_bytes;

/// `MemAvailable` and `MemTotal` of `/proc/meminfo`, in bytes, when readable.
fn meminfo() -> Option<(u128, u128)> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u128> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let kib: u128 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    };
    Some((field("MemAvailable:")?, field("MemTotal:")?))
}

/// Refuse a plan whose largest pool exceeds the memory available now (it is written whole
/// when created) or whose pools together exceed the machine's memory, naming the sizes.
pub fn pools_fit(plan: &Plan) -> anyhow::Result<()> {
    let Some((available, total)) = meminfo() else {
        return Ok(());
    };
    check(plan, available, total)
}

fn check(plan: &Plan, available: u128, total: u128) -> anyhow::Result<()> {
    let mut sum: u128 = 0;
    let mut largest: Option<(u128, &str)> = None;
    for stage in &plan.stages {
        let Some(pool) = &stage.pool else { continue };
        let one = region_bytes(pool.slots, pool.slot_size, 1);
        sum += one * u128::from(stage.replicas);
        if largest.is_none_or(|(size, _)| one > size) {
            largest = Some((one, &stage.task));
        }
    }
    if let Some((size, task)) = largest.filter(|(size, _)| *size > available) {
        return Err(anyhow!(
            "the shared-memory pool of task '{task}' needs {} and only {} of memory are available now",
            bytes(size),
            bytes(available)
        ));
    }
    if sum > total {
        return Err(anyhow!(
            "the app's shared-memory pools need {} together, more than this machine's {} of memory",
            bytes(sum),
            bytes(total)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PoolPlan, StagePlan};
    use protocol::spec::TaskKind;

    fn stage(task: &str, replicas: u32, slots: u32, slot_size: u64) -> StagePlan {
        StagePlan {
            task: task.into(),
            kind: TaskKind::Cpu,
            function: "image.resize".into(),
            replicas,
            active: replicas,
            batch_size: 1,
            batch_max_wait_ms: 0.0,
            threads: 1,
            pool: Some(PoolPlan { slots, slot_size }),
        }
    }

    #[test]
    fn a_pool_larger_than_the_free_memory_is_refused_with_its_size() {
        const GB: u128 = 1_000_000_000;
        let plan = Plan {
            stages: vec![stage("small", 1, 8, 1 << 20), stage("big", 1, 8, 1 << 30)],
        };
        let err = check(&plan, 4 * GB, 16 * GB).unwrap_err().to_string();
        assert!(
            err.contains("task 'big'") && err.contains("8.5 GB"),
            "{err}"
        );
        assert!(check(&plan, 10 * GB, 16 * GB).is_ok());
        // Four replicas of the big one: 34 GB in all, more than 16 GB of memory.
        let plan = Plan {
            stages: vec![stage("big", 4, 8, 1 << 30)],
        };
        let err = check(&plan, 10 * GB, 16 * GB).unwrap_err().to_string();
        assert!(err.contains("34.3 GB together"), "{err}");
    }
}
