//! A node's shared GPU agent taking apps in and out while it runs: each app's pools,
//! the inboxes of its GPU stages (at node-wide output indices) and, on leaving, the
//! unmapping of its pools.

use super::*;

/// How long the agent waits for the attach wire that a `Command::Attach` announces
/// (the supervisor sends it before the command, so it is normally there already).
const ATTACH_WAIT: Duration = Duration::from_secs(10);

impl Node {
    /// The [`AttachWire`] announced by a `Command::Attach`.
    pub fn receive_attach(&mut self) -> Result<AttachWire, NodeError> {
        let rx = self
            .attach
            .as_ref()
            .ok_or_else(|| NodeError::Bootstrap("attach without an attach channel".into()))?;
        rx.try_recv_timeout(ATTACH_WAIT)
            .map_err(|e| NodeError::SupervisorGone(format!("attach channel: {e:?}")))
    }

    /// Map an app's pools (as `holder` in them). A pool id already mapped is an error:
    /// pool ids are node-wide, so that would be two apps' pools under one id.
    pub fn add_pools(
        &mut self,
        infos: &[PoolInfo],
        handles: Vec<crate::shm::PoolHandle>,
        holder: HolderId,
    ) -> Result<(), NodeError> {
        if infos.len() != handles.len() {
            return Err(NodeError::Bootstrap(format!(
                "attach lists {} pools but carries {}",
                infos.len(),
                handles.len()
            )));
        }
        if let Some(dup) = infos.iter().find(|i| self.pools.contains_key(&i.id)) {
            return Err(NodeError::Bootstrap(format!(
                "pool {} ({}) is already mapped by another app",
                dup.id, dup.owner
            )));
        }
        for (info, handle) in infos.iter().zip(handles) {
            self.pools.insert(
                info.id,
                Arc::new(SlotPool::open_as(info.id, handle, holder)?),
            );
        }
        Ok(())
    }

    /// Unmap pools (an app left); ids not mapped are ignored.
    pub fn remove_pools(&mut self, ids: &[PoolId]) {
        for id in ids {
            self.pools.remove(id);
        }
    }

    /// Put `senders` at outputs `first..`; gaps below `first` (outputs of apps that
    /// left, or of apps not attached again yet after a restart) get a sender whose
    /// receiver is gone, so a reply sent there is reported as to a dead peer.
    pub fn place_outputs(
        &mut self,
        first: u32,
        senders: Vec<InboxSender>,
    ) -> Result<(), NodeError> {
        let first = first as usize;
        while self.outputs.len() < first + senders.len() {
            let (dead, _) = ipc::channel::<Vec<u8>>()
                .map_err(|e| NodeError::Bootstrap(format!("cannot create a channel: {e}")))?;
            self.outputs.push(dead);
            self.out_holders.push(HolderId::NONE);
        }
        for (k, s) in senders.into_iter().enumerate() {
            self.outputs[first + k] = s;
            self.dead_outputs.remove(&(first + k));
        }
        Ok(())
    }
}
