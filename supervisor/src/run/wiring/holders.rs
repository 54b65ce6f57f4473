//! Shared-memory holder ids of an app's processes, and which of them map each task's
//! pools (the pools keep one hold counter per listed holder).

use super::ReplicaId;
use crate::plan::ancestors;
use protocol::spec::AppSpec;
use protocol::HolderId;

/// The shared-memory holder id of replica `(t, r)` given every task's replica count
/// (the agent last): 1 + the replicas before it (0 is the supervisor's). The same
/// numbering as [`Wiring::holder`]; callers have checked the total fits.
pub(super) fn holder_id(counts: &[u32], (t, r): ReplicaId) -> HolderId {
    let before: u64 = counts[..t].iter().map(|&n| u64::from(n)).sum();
    HolderId::new((1 + before + u64::from(r)) as u16)
}

/// Per task: the holder ids of the processes that map the pools of its replicas (the
/// replicas of every task downstream of it, which may read or forward its items, and
/// the GPU agent, which maps every pool). A replica's own id is added per pool.
pub(super) fn pool_readers(app: &AppSpec, counts: &[u32], agent: bool) -> Vec<Vec<HolderId>> {
    let mut readers: Vec<Vec<HolderId>> = vec![Vec::new(); app.tasks.len()];
    for c in 0..app.tasks.len() {
        let ids: Vec<HolderId> = (0..counts[c])
            .map(|cr| holder_id(counts, (c, cr)))
            .collect();
        for p in ancestors(app, c) {
            readers[p].extend_from_slice(&ids);
        }
    }
    if agent {
        let id = holder_id(counts, (app.tasks.len(), 0));
        for list in &mut readers {
            list.push(id);
        }
    }
    readers
}
