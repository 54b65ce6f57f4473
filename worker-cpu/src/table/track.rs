//! `track.deepsort`: DeepSORT tracking over a detection table that carries the
//! embedder's vectors (an `embedding` list column beside `x1, y1, x2, y2, score`).
//! Adds a `track_id` column (UInt64; null while a track is tentative) and keeps
//! every other column. One tracker per source, fed in arrival order; the task runs
//! as one replica (validation refuses more, parsing pins it) so a source is never
//! split. An item of a source that comes again (a replay after a restart) gets the
//! ids it got the first time from a short memory instead of moving the tracks.

use super::stage::{map_tables, Failure};
use super::{column_index, column_list, TableError};
use crate::StageError;
use arrow_array::cast::AsArray;
use arrow_array::types::Float32Type;
use arrow_array::{Array, ArrayRef, Float32Array, RecordBatch, UInt64Array};
use arrow_schema::{DataType, Field, Schema};
use protocol::functions::params::TrackDeepsort;
use protocol::messages::LossReason;
use protocol::node::Node;
use stage::{Body, Emit, Item};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use vision::tracking::{Detection, Tracker, TrackerConfig, TrackingError};

/// Items per source whose ids are remembered for replays.
pub const REPLAY_MEMORY: usize = 256;

/// Name of the column `track.deepsort` adds.
pub const TRACK_ID: &str = "track_id";

/// The features of every row: a list (fixed-size or not) of float32.
fn embeddings(batch: &RecordBatch, column: &str) -> Result<Vec<Vec<f32>>, TableError> {
    let i = batch
        .schema_ref()
        .index_of(column)
        .map_err(|_| TableError::Column {
            column: column.into(),
            detail: format!(
            "missing: DeepSORT needs the embedder's vectors beside the boxes (the table has: {})",
            column_list(batch)
        ),
        })?;
    let col = batch.column(i);
    let bad = |detail: String| TableError::Column {
        column: column.into(),
        detail,
    };
    let rows: Vec<Option<ArrayRef>> = match col.data_type() {
        DataType::FixedSizeList(..) => {
            let l = col.as_fixed_size_list();
            (0..l.len())
                .map(|r| (!l.is_null(r)).then(|| l.value(r)))
                .collect()
        }
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            (0..l.len())
                .map(|r| (!l.is_null(r)).then(|| l.value(r)))
                .collect()
        }
        other => return Err(bad(format!("is {other}, expected a list of float32"))),
    };
    rows.into_iter()
        .enumerate()
        .map(|(r, v)| {
            let v = v.ok_or_else(|| bad(format!("row {r} is null")))?;
            let f = v
                .as_primitive_opt::<Float32Type>()
                .ok_or_else(|| bad(format!("holds {}, expected float32", v.data_type())))?;
            Ok(f.values().to_vec())
        })
        .collect()
}

fn f32_col<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float32Array, TableError> {
    let i = column_index(batch, name).map_err(|_| TableError::Column {
        column: name.into(),
        detail: format!(
            "missing: DeepSORT needs a detection table (x1, y1, x2, y2; the table has: {})",
            column_list(batch)
        ),
    })?;
    batch
        .column(i)
        .as_primitive_opt::<Float32Type>()
        .ok_or_else(|| TableError::Column {
            column: name.into(),
            detail: format!("is {}, expected float32", batch.column(i).data_type()),
        })
}

/// The detections of a table, in row order.
pub fn detections_of(batch: &RecordBatch, embedding: &str) -> Result<Vec<Detection>, TableError> {
    let (x1, y1, x2, y2) = (
        f32_col(batch, "x1")?,
        f32_col(batch, "y1")?,
        f32_col(batch, "x2")?,
        f32_col(batch, "y2")?,
    );
    let score = f32_col(batch, "score").ok();
    let feats = embeddings(batch, embedding)?;
    Ok(feats
        .into_iter()
        .enumerate()
        .map(|(r, feature)| {
            let s = score.map_or(1.0, |s| s.value(r));
            Detection::from_corners(
                x1.value(r),
                y1.value(r),
                x2.value(r),
                y2.value(r),
                s,
                feature,
            )
        })
        .collect())
}

/// The table with a `track_id` column set to `ids` (replacing one it had).
pub fn with_track_ids(batch: &RecordBatch, ids: &[Option<u64>]) -> Result<RecordBatch, TableError> {
    let mut fields: Vec<Field> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema_ref().fields().iter().zip(batch.columns()) {
        if f.name() != TRACK_ID {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
        }
    }
    fields.push(Field::new(TRACK_ID, DataType::UInt64, true));
    columns.push(Arc::new(UInt64Array::from(ids.to_vec())));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// One frame's table through a tracker: the ids of confirmed tracks, else null.
pub fn track_table(
    tracker: &mut Tracker,
    batch: &RecordBatch,
    embedding: &str,
) -> Result<(RecordBatch, Vec<Option<u64>>), TrackFailure> {
    let dets = detections_of(batch, embedding).map_err(TrackFailure::Table)?;
    let ids: Vec<Option<u64>> = tracker
        .step(&dets)
        .map_err(TrackFailure::Tracking)?
        .into_iter()
        .map(|a| a.confirmed.then_some(a.track_id))
        .collect();
    let out = with_track_ids(batch, &ids).map_err(TrackFailure::Table)?;
    Ok((out, ids))
}

/// Why a table could not be tracked.
#[derive(Debug)]
pub enum TrackFailure {
    /// The table lacks what DeepSORT needs: every item would fail alike.
    Table(TableError),
    /// This frame's detections are unusable (NaN, empty box): the item is bad input.
    Tracking(TrackingError),
}

/// A source's tracker and the ids it gave its last items.
#[derive(serde::Serialize, serde::Deserialize)]
struct SourceState {
    tracker: Tracker,
    last_seq: Option<u64>,
    recent: VecDeque<(u64, Vec<Vec<Option<u64>>>)>,
}

fn config_of(node: &Node, p: &TrackDeepsort) -> Result<TrackerConfig, StageError> {
    let mut c = TrackerConfig::default();
    if let Some(v) = p.max_age {
        c.max_age = v;
    }
    if let Some(v) = p.n_init {
        c.n_init = v;
    }
    if let Some(v) = p.max_cosine_distance {
        c.max_cosine_distance = v;
    }
    if let Some(v) = p.max_iou_distance {
        c.max_iou_distance = v;
    }
    c.nn_budget = p.nn_budget;
    c.check().map_err(|e| StageError::Param {
        task: node.task.name.clone(),
        param: "max_cosine_distance".into(),
        detail: e.to_string(),
    })?;
    Ok(c)
}

/// Where a request-guarantee app's tracker keeps its state: `<run dir>/state/<task>.json`.
fn snapshot_path(node: &Node) -> Option<std::path::PathBuf> {
    (node.guaranteed() && !node.setup.run_dir.is_empty()).then(|| {
        std::path::Path::new(&node.setup.run_dir)
            .join("state")
            .join(format!("{}.json", node.task.name))
    })
}

/// The tracks a restarted replica comes back with: the snapshot of the process it
/// replaces (none on a first start, where a file left by an earlier run is removed).
fn restore(
    node: &Node,
    path: &std::path::Path,
) -> Result<HashMap<String, SourceState>, StageError> {
    if node.setup.incarnation == 0 {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StageError::io(path.display(), e)),
        }
        return Ok(HashMap::new());
    }
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            StageError::Input(format!(
                "task '{}': tracker snapshot {} does not parse: {e}",
                node.task.name,
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(StageError::io(path.display(), e)),
    }
}

/// Write the state atomically (temporary file, then rename) before the output leaves.
fn save(path: &std::path::Path, sources: &HashMap<String, SourceState>) -> Result<(), StageError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StageError::io(dir.display(), e))?;
    }
    let bytes = serde_json::to_vec(sources).map_err(|e| StageError::Input(e.to_string()))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(|e| StageError::io(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| StageError::io(path.display(), e))
}

/// Run `track.deepsort` to the end of its input.
pub fn run(node: &mut Node) -> Result<(), StageError> {
    let p: TrackDeepsort = crate::params(node)?;
    let config = config_of(node, &p)?;
    let embedding = p.embedding;
    let snapshot = snapshot_path(node);
    let mut sources: HashMap<String, SourceState> = match &snapshot {
        Some(p) => restore(node, p)?,
        None => HashMap::new(),
    };
    stage::body::run(node, None, |body, item| {
        let state = match sources.get_mut(item.source()) {
            Some(s) => s,
            None => sources
                .entry(item.source().to_string())
                .or_insert(SourceState {
                    tracker: Tracker::new(config.clone())
                        .map_err(|e| StageError::Input(e.to_string()))?,
                    last_seq: None,
                    recent: VecDeque::new(),
                }),
        };
        if let Some(out) = handle(body, state, &embedding, item)? {
            if let Some(p) = &snapshot {
                save(p, &sources)?;
            }
            body.send(out)?;
        }
        Ok(())
    })
}

/// Track one item: the item with the `track_id` column to send on, or `None` when
/// it was lost (counted here).
fn handle(
    body: &mut Body<'_>,
    state: &mut SourceState,
    embedding: &str,
    item: Item,
) -> Result<Option<Emit>, StageError> {
    let task = body.task_name().to_string();
    let env = item.envelope().clone();
    let seen = state.last_seq.is_some_and(|l| env.seq <= l);
    let result = if seen {
        // A replay: the ids it was given, without moving the tracks again.
        let Some((_, ids)) = state.recent.iter().find(|(s, _)| *s == env.seq).cloned() else {
            tracing::warn!(source = %env.source, seq = env.seq,
                "track.deepsort: item older than the last {REPLAY_MEMORY} of its source arrived again or out of order; lost");
            body.lose(item, LossReason::BadInput)?;
            return Ok(None);
        };
        let mut k = 0;
        map_tables(&env.payload, &mut |b| {
            let r = with_track_ids(b, ids.get(k).map_or(&[][..], |v| v.as_slice()));
            k += 1;
            r
        })
    } else {
        let mut all = Vec::new();
        let mut failure = None;
        let r = map_tables(&env.payload, &mut |b| match track_table(
            &mut state.tracker,
            b,
            embedding,
        ) {
            Ok((out, ids)) => {
                all.push(ids);
                Ok(out)
            }
            Err(TrackFailure::Table(e)) => Err(e),
            Err(TrackFailure::Tracking(e)) => {
                let msg = e.to_string();
                failure = Some(msg.clone());
                Err(TableError::Column {
                    column: embedding.into(),
                    detail: msg,
                })
            }
        });
        if let Some(msg) = failure {
            tracing::warn!(source = %env.source, seq = env.seq, "{task}: {msg}; item lost");
            state.last_seq = Some(env.seq);
            body.lose(item, LossReason::BadInput)?;
            return Ok(None);
        }
        if r.is_ok() {
            state.last_seq = Some(env.seq);
            state.recent.push_back((env.seq, all));
            if state.recent.len() > REPLAY_MEMORY {
                state.recent.pop_front();
            }
        }
        r
    };
    match result {
        Ok((payload, _)) => Ok(Some(Emit::of(item).payload(payload))),
        Err(Failure::Decode(e)) => {
            tracing::warn!(source = %env.source, seq = env.seq, "table does not decode ({e}); item lost");
            body.lose(item, LossReason::BadInput)?;
            Ok(None)
        }
        Err(Failure::Op(e)) => {
            body.lose(item, LossReason::BadInput)?;
            Err(StageError::Input(format!(
                "task '{task}' (track.deepsort): item {}/{}: {e}",
                env.source, env.seq
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::detections::tests::face;
    use crate::table::{detections_batch, rows_of, Extras};
    use arrow_array::builder::{FixedSizeListBuilder, Float32Builder};

    /// A face table of boxes shifted by `dx`, with an `embedding` column.
    fn table(dx: f32, looks: &[[f32; 3]]) -> RecordBatch {
        let rows: Vec<_> = looks
            .iter()
            .enumerate()
            .map(|(i, _)| {
                let mut r = face(0, 0.9);
                r.x1 += dx + 100.0 * i as f32;
                r.x2 += dx + 100.0 * i as f32;
                r
            })
            .collect();
        let base = detections_batch(&rows, Extras::MTCNN).unwrap();
        let mut b = FixedSizeListBuilder::new(Float32Builder::new(), 3)
            .with_field(Arc::new(Field::new("item", DataType::Float32, false)));
        for l in looks {
            b.values().append_slice(l);
            b.append(true);
        }
        let emb: ArrayRef = Arc::new(b.finish());
        let mut fields: Vec<Field> = base
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new("embedding", emb.data_type().clone(), true));
        let mut cols = base.columns().to_vec();
        cols.push(emb);
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
    }

    #[test]
    fn track_ids_appear_once_confirmed_and_every_column_stays() {
        let mut tracker = Tracker::new(TrackerConfig::default()).unwrap();
        let looks = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let mut last = Vec::new();
        for t in 0..4 {
            let (out, ids) =
                track_table(&mut tracker, &table(2.0 * t as f32, &looks), "embedding").unwrap();
            assert_eq!(out.num_columns(), table(0.0, &looks).num_columns() + 1);
            assert!(out.schema().index_of("landmarks").is_ok());
            let rows = rows_of(&out).unwrap();
            assert_eq!(rows.iter().map(|r| r.track_id).collect::<Vec<_>>(), ids);
            last = ids;
            if t < 2 {
                assert_eq!(
                    last,
                    vec![None, None],
                    "frame {t}: tentative tracks have no id"
                );
            }
        }
        assert_eq!(last, vec![Some(1), Some(2)]);
    }

    #[test]
    fn a_table_without_embeddings_or_boxes_is_an_error_naming_the_column() {
        let mut tracker = Tracker::new(TrackerConfig::default()).unwrap();
        let plain = detections_batch(&[face(0, 0.9)], Extras::MTCNN).unwrap();
        let Err(TrackFailure::Table(e)) = track_table(&mut tracker, &plain, "embedding") else {
            panic!("a table without embeddings was tracked");
        };
        let e = e.to_string();
        assert!(
            e.contains("'embedding'") && e.contains("embedder") && e.contains("landmarks"),
            "{e}"
        );
        let cut = table(0.0, &[[1.0, 0.0, 0.0]]).project(&[0, 1, 8]).unwrap();
        let Err(TrackFailure::Table(e)) = track_table(&mut tracker, &cut, "embedding") else {
            panic!("a table without boxes was tracked");
        };
        assert!(e.to_string().contains("'x1'"), "{e}");
    }

    #[test]
    fn a_nan_embedding_is_bad_input_naming_the_detection() {
        let mut tracker = Tracker::new(TrackerConfig::default()).unwrap();
        let t = table(0.0, &[[1.0, 0.0, 0.0], [f32::NAN, 0.0, 0.0]]);
        let Err(TrackFailure::Tracking(e)) = track_table(&mut tracker, &t, "embedding") else {
            panic!("NaN was tracked");
        };
        assert!(e.to_string().contains("detection 1"), "{e}");
    }
}
