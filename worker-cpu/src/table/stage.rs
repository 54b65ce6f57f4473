//! The stage runners of `table.filter`, `table.select` and `table.merge`.
//!
//! An item carries a table alone (`Payload::Table`) or beside other parts
//! (`Payload::Batch`, e.g. its frame). The table is transformed; every other part
//! goes on untouched; the stage SDK's send passes on or releases each shared-memory
//! reference this stage holds (no hold is counted here). A table that does not decode makes the item lost as bad
//! input; a predicate or column that does not fit the tables stops the stage with an
//! error naming the parameter, since every later item would fail the same way.

use super::{decode_ipc, encode_ipc, filter, merge, select, MergeHow, Predicate, TableError};
use crate::StageError;
use arrow_array::RecordBatch;
use protocol::functions::params;
use protocol::messages::{Command, Envelope, LossReason, Payload, SourceTotal};
use protocol::node::Node;
use protocol::TaskId;
use stage::{Body, Emit, Item};
use std::collections::{HashMap, HashSet};

/// Items of different (source, seq) that `table.merge` keeps waiting for their other
/// inputs; past this the oldest is sent on with what it has.
pub const MERGE_MAX_PENDING: usize = 1024;

/// Run `table.filter` to the end of the input.
pub fn run_filter(node: &mut Node) -> Result<(), StageError> {
    let params::TableFilter { predicate } = crate::params(node)?;
    let pred = Predicate::parse(&predicate).map_err(|e| param_error(node, "where", e))?;
    run_single(node, "where", |b| filter(b, &pred))
}

/// Run `table.select` to the end of the input.
pub fn run_select(node: &mut Node) -> Result<(), StageError> {
    let params::TableSelect { columns } = crate::params(node)?;
    if columns.is_empty() {
        return Err(param_error(node, "columns", "lists no column"));
    }
    run_single(node, "columns", |b| select(b, &columns))
}

fn param_error(node: &Node, param: &str, e: impl std::fmt::Display) -> StageError {
    StageError::Param {
        task: node.task.name.clone(),
        param: param.to_string(),
        detail: e.to_string(),
    }
}

/// Receive items until every upstream replica has ended: the stage SDK's body loop
/// (an item dropped releases its shared memory; sends count the holds).
fn each_item(
    node: &mut Node,
    on_item: impl FnMut(&mut Body<'_>, Item) -> Result<(), StageError>,
) -> Result<(), StageError> {
    stage::body::run(node, None, on_item)
}

/// Why a payload's tables could not be transformed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// A table is not valid Arrow IPC.
    Decode(TableError),
    /// The operation does not fit the table.
    Op(TableError),
}

/// The payload with every table replaced by `op` of it (other parts cloned as they
/// are: they are descriptors, the pixels stay in shared memory), and how many
/// tables it held.
pub(crate) fn map_tables(
    payload: &Payload,
    op: &mut impl FnMut(&RecordBatch) -> Result<RecordBatch, TableError>,
) -> Result<(Payload, usize), Failure> {
    Ok(match payload {
        Payload::Table(bytes) => {
            let batch = decode_ipc(bytes).map_err(Failure::Decode)?;
            let out = op(&batch).map_err(Failure::Op)?;
            (Payload::Table(encode_ipc(&out).map_err(Failure::Op)?), 1)
        }
        Payload::Batch(parts) => {
            let mut out = Vec::with_capacity(parts.len());
            let mut n = 0;
            for p in parts {
                let (q, k) = map_tables(p, op)?;
                out.push(q);
                n += k;
            }
            (Payload::Batch(out), n)
        }
        other => (other.clone(), 0),
    })
}

fn run_single(
    node: &mut Node,
    param_name: &str,
    mut op: impl FnMut(&RecordBatch) -> Result<RecordBatch, TableError>,
) -> Result<(), StageError> {
    let mut warned_tableless = false;
    each_item(node, |body, item| {
        match map_tables(item.payload(), &mut op) {
            Ok((payload, tables)) => {
                if tables == 0 && !warned_tableless {
                    warned_tableless = true;
                    tracing::warn!(source = %item.source(), seq = item.seq(),
                    "'{}' got an item without a table; such items pass unchanged", body.node().task.function);
                }
                Ok(body.send(Emit::of(item).payload(payload))?)
            }
            Err(Failure::Decode(e)) => {
                tracing::warn!(source = %item.source(), seq = item.seq(), "table does not decode ({e}); item lost");
                Ok(body.lose(item, LossReason::BadInput)?)
            }
            Err(Failure::Op(e)) => {
                let what = format!("item {}/{}: {e}", item.source(), item.seq());
                body.lose(item, LossReason::BadInput)?;
                Err(param_error(body.node(), param_name, what))
            }
        }
    })
}

/// One input's item waiting in `table.merge`.
pub(crate) struct Part {
    /// Task index of the upstream stage (its last hop; none for an item without hops).
    pub stage: Option<TaskId>,
    pub env: Envelope,
    pub recv: u64,
    pub tables: Vec<RecordBatch>,
    /// Frames, tensors: everything but tables, in order.
    pub others: Vec<Payload>,
}

/// Split a payload into its tables (decoded) and its other parts (flattened).
pub(crate) fn split(
    payload: &Payload,
    tables: &mut Vec<RecordBatch>,
    others: &mut Vec<Payload>,
) -> Result<(), TableError> {
    match payload {
        Payload::Table(bytes) => tables.push(decode_ipc(bytes)?),
        Payload::Batch(parts) => {
            for p in parts {
                split(p, tables, others)?;
            }
        }
        other => others.push(other.clone()),
    }
    Ok(())
}

/// What merging one key's parts gives.
pub(crate) struct Combined {
    pub env: Envelope,
    pub recv: u64,
    /// Parts that duplicate a kept one (the same frame through two inputs): release.
    pub duplicates: Vec<Payload>,
}

/// Merge the parts of one (source, seq). `empty_join` makes a join come out empty
/// (an input that sends tables never sent this key: an inner join has no row).
pub(crate) fn combine(
    mut parts: Vec<Part>,
    how: &MergeHow,
    empty_join: bool,
) -> Result<Combined, TableError> {
    parts.sort_by_key(|p| p.stage);
    let mut tables = Vec::new();
    for p in &parts {
        match p.tables.len() {
            0 => {}
            1 => tables.push(p.tables[0].clone()),
            _ => tables.push(super::ops::concat(&p.tables)?),
        }
    }
    let mut merged = match tables.len() {
        0 => None,
        _ => Some(merge(&tables, how)?),
    };
    if empty_join && matches!(how, MergeHow::Join(_)) {
        merged = merged.map(|t| t.slice(0, 0));
    }
    let (mut kept, mut duplicates) = (Vec::<Payload>::new(), Vec::new());
    for p in &parts {
        for o in &p.others {
            if kept.contains(o) {
                duplicates.push(o.clone());
            } else {
                kept.push(o.clone());
            }
        }
    }
    if let Some(t) = merged {
        kept.push(Payload::Table(encode_ipc(&t)?));
    }
    let last = parts
        .into_iter()
        .max_by_key(|p| p.recv)
        .ok_or_else(|| TableError::Merge("no part to merge".into()))?;
    let payload = if kept.len() == 1 {
        kept.pop().unwrap_or(Payload::Batch(Vec::new()))
    } else {
        Payload::Batch(kept)
    };
    Ok(Combined {
        env: Envelope {
            payload,
            ..last.env
        },
        recv: last.recv,
        duplicates,
    })
}

type Key = (String, u64);

struct Pending {
    arrival: u64,
    parts: Vec<Part>,
    /// The items behind `parts`: their shared memory is passed on or released by the
    /// send (or on drop).
    items: Vec<Item>,
    /// A part's table did not decode: the whole item is lost once complete.
    bad: bool,
}

struct MergeState {
    inputs: usize,
    how: MergeHow,
    param: &'static str,
    pending: HashMap<Key, Pending>,
    arrivals: u64,
    /// Upstream stages seen, and those that sent a table.
    seen: HashSet<Option<TaskId>>,
    table_senders: HashSet<Option<TaskId>>,
    /// Request-guarantee apps: per source, the items below this the tails have
    /// (`Command::Ack`). A part of one of them is a replay whose partners may never
    /// come again (only the branch that lost it replays it): waiting for them would
    /// hold its shared memory forever and stall the branch that sent it.
    delivered: HashMap<String, u64>,
}

/// Run `table.merge` to the end of the input.
pub fn run_merge(node: &mut Node) -> Result<(), StageError> {
    let params::TableMerge { on, how } = crate::params(node)?;
    let (how, param_name) = match (how.as_deref(), on) {
        (Some("concat"), _) => (MergeHow::Concat, "how"),
        (Some("join") | None, on) => {
            let keys = on.map(params::OneOrMany::into_vec).unwrap_or_default();
            (MergeHow::Join(keys), "on")
        }
        (Some(other), _) => {
            return Err(param_error(
                node,
                "how",
                format!("'{other}' is not join or concat"),
            ))
        }
    };
    let state = MergeState {
        inputs: node.task.inputs.len().max(1),
        how,
        param: param_name,
        pending: HashMap::new(),
        arrivals: 0,
        seen: HashSet::new(),
        table_senders: HashSet::new(),
        delivered: HashMap::new(),
    };
    // The state is used by both callbacks, never at once.
    let state = std::cell::RefCell::new(state);
    stage::body::run_with_commands(
        node,
        None,
        |body, item| state.borrow_mut().push(body, item),
        |_, command| {
            if let Command::Ack(totals) = command {
                state.borrow_mut().delivered(&totals);
            }
            Ok::<(), StageError>(())
        },
    )?;
    let mut state = state.into_inner();
    let mut rest: Vec<(Key, u64)> = state
        .pending
        .iter()
        .map(|(k, p)| (k.clone(), p.arrival))
        .collect();
    rest.sort_by_key(|(_, arrival)| *arrival);
    if !rest.is_empty() {
        tracing::info!(
            "{} item(s) did not come from every input; sent on with what arrived",
            rest.len()
        );
    }
    let mut body = Body::new(node);
    for (key, _) in rest {
        state.flush(&mut body, &key)?;
    }
    Ok(())
}

impl MergeState {
    fn push(&mut self, body: &mut Body<'_>, item: Item) -> Result<(), StageError> {
        let env = item.envelope().clone();
        let recv = item.recv_ns();
        let stage = env.hops.last().map(|h| h.stage);
        self.seen.insert(stage);
        let key = (env.source.clone(), env.seq);
        if self
            .delivered
            .get(&env.source)
            .is_some_and(|&below| env.seq < below)
        {
            tracing::debug!(source = %env.source, seq = env.seq, "a replayed part of an item the tails have; dropped");
            return Ok(());
        }
        let (mut tables, mut others) = (Vec::new(), Vec::new());
        let decoded = split(&env.payload, &mut tables, &mut others);
        if !tables.is_empty() {
            self.table_senders.insert(stage);
        }
        let entry = self.pending.entry(key.clone()).or_insert_with(|| {
            self.arrivals += 1;
            Pending {
                arrival: self.arrivals,
                parts: Vec::new(),
                items: Vec::new(),
                bad: false,
            }
        });
        if entry.parts.iter().any(|p| p.stage == stage) {
            let from = stage.map_or_else(|| "none".to_string(), |s| s.to_string());
            tracing::debug!(source = %env.source, seq = env.seq, "duplicate from stage {from}; dropped");
            return Ok(());
        }
        if let Err(e) = decoded {
            tracing::warn!(source = %env.source, seq = env.seq, "table does not decode ({e}); item lost");
            entry.bad = true;
            others.clear();
        } else {
            entry.items.push(item);
        }
        entry.parts.push(Part {
            stage,
            env,
            recv,
            tables,
            others,
        });
        if entry.parts.len() >= self.inputs {
            return self.flush(body, &key);
        }
        if self.pending.len() > MERGE_MAX_PENDING {
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.arrival)
                .map(|(k, _)| k.clone())
            {
                tracing::warn!(source = %oldest.0, seq = oldest.1,
                    "more than {MERGE_MAX_PENDING} items wait for other inputs; the oldest goes on with what arrived");
                self.flush(body, &oldest)?;
            }
        }
        Ok(())
    }

    /// The tails have the items below `totals`: forget what waits for them.
    fn delivered(&mut self, totals: &[SourceTotal]) {
        for t in totals {
            let below = self.delivered.entry(t.source.clone()).or_insert(0);
            *below = (*below).max(t.total);
        }
        let before = self.pending.len();
        let delivered = &self.delivered;
        self.pending
            .retain(|(source, seq), _| delivered.get(source).is_none_or(|&below| *seq >= below));
        if self.pending.len() < before {
            tracing::debug!(
                dropped = before - self.pending.len(),
                "replayed parts of items the tails have; their partners will not come"
            );
        }
    }

    /// Send one key on with the parts it has, or count it lost if one was bad (the
    /// items' shared memory goes back when they are dropped).
    fn flush(&mut self, body: &mut Body<'_>, key: &Key) -> Result<(), StageError> {
        let Some(pending) = self.pending.remove(key) else {
            return Ok(());
        };
        if pending.bad {
            // The tails of a request-guarantee app are told, so they do not wait for it.
            return body.skip(&key.0, key.1, LossReason::BadInput);
        }
        let present: HashSet<Option<TaskId>> = pending.parts.iter().map(|p| p.stage).collect();
        let missing_tables = present.len() < self.inputs
            && (self.seen.len() < self.inputs
                || self.table_senders.iter().any(|s| !present.contains(s)));
        match combine(pending.parts, &self.how, missing_tables) {
            Ok(c) => {
                // A frame that came through two inputs is passed on once: the send
                // releases the other hold.
                if !c.duplicates.is_empty() {
                    tracing::trace!(parts = c.duplicates.len(), "shared parts passed on once");
                }
                let emit = pending
                    .items
                    .into_iter()
                    .fold(Emit::new(c.env, c.recv), Emit::input);
                Ok(body.send(emit)?)
            }
            Err(e) => {
                body.count_lost(LossReason::BadInput);
                Err(param_error(
                    body.node(),
                    self.param,
                    format!("item {}/{}: {e}", key.0, key.1),
                ))
            }
        }
    }
}
