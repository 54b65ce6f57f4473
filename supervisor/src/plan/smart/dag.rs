//! The app's DAG as the model sees it: stages by index, their inputs and consumers, a
//! topological order, which heads feed each stage, and every head-to-tail path.

use protocol::spec::{AppSpec, TaskKind};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DagError {
    #[error("task '{task}': unknown input '{input}'")]
    UnknownInput { task: String, input: String },
    #[error("the tasks form a cycle")]
    Cycle,
    #[error("the app has no head task")]
    NoHead,
    #[error("too many head-to-tail paths (over {0})")]
    TooManyPaths(usize),
}

/// Cap on enumerated paths (a DAG can have exponentially many).
pub const MAX_PATHS: usize = 4096;

#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub name: String,
    pub kind: TaskKind,
    pub function: String,
    pub inputs: Vec<usize>,
    pub outputs: Vec<usize>,
    /// Batch fixed by the user: (size, max_wait_ms).
    pub fixed_batch: Option<(u32, f64)>,
    pub fixed_replicas: Option<u32>,
}

impl Stage {
    /// Whether the planner chooses this stage's batch, replicas and threads.
    pub fn planned(&self) -> bool {
        matches!(self.kind, TaskKind::Cpu | TaskKind::Gpu)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Dag {
    pub stages: Vec<Stage>,
    pub order: Vec<usize>,
    /// For each stage, the heads whose items reach it.
    pub heads_of: Vec<Vec<usize>>,
    /// Every path from a head to a stage with no consumers, as stage indices.
    pub paths: Vec<Vec<usize>>,
}

impl Dag {
    pub fn from_app(app: &AppSpec) -> Result<Dag, DagError> {
        let n = app.tasks.len();
        let mut stages: Vec<Stage> = Vec::with_capacity(n);
        for t in &app.tasks {
            let mut inputs = Vec::new();
            for i in &t.inputs {
                let j = app.task_index(i).ok_or_else(|| DagError::UnknownInput {
                    task: t.name.clone(),
                    input: i.clone(),
                })?;
                inputs.push(j);
            }
            stages.push(Stage {
                name: t.name.clone(),
                kind: t.kind,
                function: t.function.clone(),
                inputs,
                outputs: Vec::new(),
                fixed_batch: t.batch.as_ref().map(|b| (b.size.max(1), b.max_wait_ms)),
                fixed_replicas: t.replicas.map(|r| r.max(1)),
            });
        }
        for j in 0..n {
            for k in stages[j].inputs.clone() {
                stages[k].outputs.push(j);
            }
        }
        // Kahn's algorithm.
        let mut indeg: Vec<usize> = stages.iter().map(|s| s.inputs.len()).collect();
        let mut order: Vec<usize> = (0..n).filter(|&i| indeg[i] == 0).collect();
        let mut k = 0;
        while k < order.len() {
            for &o in &stages[order[k]].outputs {
                indeg[o] -= 1;
                if indeg[o] == 0 {
                    order.push(o);
                }
            }
            k += 1;
        }
        if order.len() != n {
            return Err(DagError::Cycle);
        }
        let mut heads_of: Vec<Vec<usize>> = vec![Vec::new(); n];
        for &i in &order {
            if stages[i].inputs.is_empty() {
                heads_of[i] = vec![i];
            } else {
                let mut hs: Vec<usize> = stages[i]
                    .inputs
                    .iter()
                    .flat_map(|&j| heads_of[j].iter().copied())
                    .collect();
                hs.sort_unstable();
                hs.dedup();
                heads_of[i] = hs;
            }
        }
        let roots: Vec<usize> = (0..n).filter(|&i| stages[i].inputs.is_empty()).collect();
        if roots.is_empty() {
            return Err(DagError::NoHead);
        }
        let mut paths = Vec::new();
        let mut stack: Vec<Vec<usize>> = roots.iter().map(|&r| vec![r]).collect();
        while let Some(p) = stack.pop() {
            let last = *p.last().unwrap_or(&0);
            if stages[last].outputs.is_empty() {
                paths.push(p);
                if paths.len() > MAX_PATHS {
                    return Err(DagError::TooManyPaths(MAX_PATHS));
                }
            } else {
                for &o in stages[last].outputs.iter().rev() {
                    let mut q = p.clone();
                    q.push(o);
                    stack.push(q);
                }
            }
        }
        Ok(Dag {
            stages,
            order,
            heads_of,
            paths,
        })
    }

    pub fn heads(&self) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&i| self.stages[i].inputs.is_empty())
            .collect()
    }
}
