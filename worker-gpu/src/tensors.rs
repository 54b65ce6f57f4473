//! f32 tensors in shared memory: a request's inputs as a run reads them (one tensor in
//! place in its slot, several concatenated into one batched `vision` tensor) and results
//! written back, little-endian, packed.

use protocol::messages::TensorRef;
use protocol::shm::{ShmRef, SlotPool};
use std::borrow::Borrow;
use std::sync::Arc;
use vision::{f32s_of_le, TensorF32, TensorView};

/// What one run reads: a single tensor where it lies, in the asking stage's slot (the
/// stage holds the slot until the agent replies), or several concatenated into a buffer of
/// the agent's (a batch of several items' tensors).
pub enum RunInput {
    InSlot {
        pool: Arc<SlotPool>,
        shm: ShmRef,
        shape: Vec<usize>,
    },
    Batched(TensorF32),
}

impl RunInput {
    /// The request's inputs as one run reads them: one tensor is checked and left in its
    /// slot (the executor reads it there, no copy); several are concatenated now.
    pub fn of(parts: &[(Arc<SlotPool>, &TensorRef)]) -> Result<RunInput, String> {
        match parts {
            [(pool, t)] => {
                let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
                if shape.is_empty() {
                    return Err(format!("cannot run a tensor of shape {:?}", t.shape));
                }
                let bytes = pool.read(&t.shm).map_err(|e| e.to_string())?;
                check_len(&t.shape, bytes.len())?;
                Ok(RunInput::InSlot {
                    pool: Arc::clone(pool),
                    shm: t.shm,
                    shape,
                })
            }
            _ => read_batch(parts).map(RunInput::Batched),
        }
    }

    pub fn shape(&self) -> &[usize] {
        match self {
            RunInput::InSlot { shape, .. } => shape,
            RunInput::Batched(t) => &t.shape,
        }
    }

    /// Calls `run` on the input's values: read in place when the slot holds them as
    /// aligned f32 of this machine's byte order (little-endian), else copied first.
    pub fn read<R>(&self, run: impl FnOnce(TensorView<'_>) -> R) -> Result<R, String> {
        match self {
            RunInput::Batched(t) => Ok(run(t.view())),
            RunInput::InSlot { pool, shm, shape } => {
                let bytes = pool.read(shm).map_err(|e| e.to_string())?;
                let data = f32s_of_le(bytes);
                Ok(run(TensorView { shape, data: &data }))
            }
        }
    }
}

/// A tensor of `shape` in a slot range of `len` bytes: exactly its f32 values, or an error.
fn check_len(shape: &[u32], len: usize) -> Result<(), String> {
    let n: usize = shape.iter().map(|&d| d as usize).product();
    if len != n * 4 {
        return Err(format!(
            "tensor of shape {:?} needs {} bytes, its slot range has {}",
            shape,
            n * 4,
            len
        ));
    }
    Ok(())
}

/// The tensors concatenated along dim 0 (their other dimensions must agree), read
/// straight from their pools into one buffer.
pub fn read_batch<P: Borrow<SlotPool>>(parts: &[(P, &TensorRef)]) -> Result<TensorF32, String> {
    let Some((_, first)) = parts.first() else {
        return Err("a request without inputs".into());
    };
    let rest = first.shape.get(1..).unwrap_or(&[]);
    let mut rows = 0usize;
    let mut total = 0usize;
    for (_, t) in parts {
        if t.shape.get(1..).unwrap_or(&[]) != rest || t.shape.is_empty() {
            return Err(format!(
                "cannot batch shapes {:?} and {:?}",
                first.shape, t.shape
            ));
        }
        rows += t.shape[0] as usize;
        total += t.shape.iter().map(|&d| d as usize).product::<usize>();
    }
    let mut data = Vec::with_capacity(total);
    for (pool, t) in parts {
        let bytes = pool.borrow().read(&t.shm).map_err(|e| e.to_string())?;
        check_len(&t.shape, bytes.len())?;
        data.extend_from_slice(&f32s_of_le(bytes));
    }
    let mut shape = vec![rows];
    shape.extend(rest.iter().map(|&d| d as usize));
    TensorF32::new(shape, data).map_err(|e| e.to_string())
}

/// Writes `data` little-endian at `offset` of the slot `r`: one copy on a little-endian
/// machine, else converted in chunks through a small buffer (a large output is not first
/// copied whole).
pub fn write_f32(pool: &SlotPool, r: &ShmRef, offset: u64, data: &[f32]) -> Result<(), String> {
    if cfg!(target_endian = "little") {
        // f32 in memory are already their little-endian bytes: one copy
        return pool
            .write_at(r, offset, bytemuck::cast_slice(data))
            .map_err(|e| e.to_string());
    }
    const CHUNK: usize = 16 * 1024;
    let mut buf = vec![0u8; CHUNK * 4];
    let mut at = offset;
    for part in data.chunks(CHUNK) {
        let bytes = &mut buf[..part.len() * 4];
        for (d, v) in bytes.chunks_exact_mut(4).zip(part) {
            d.copy_from_slice(&v.to_le_bytes());
        }
        pool.write_at(r, at, bytes).map_err(|e| e.to_string())?;
        at += bytes.len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_with(values: &[&[f32]]) -> (SlotPool, Vec<ShmRef>) {
        let pool = SlotPool::create(protocol::PoolId::new(7), 4, 4096, &[]).expect("pool");
        let mut refs = Vec::new();
        for v in values {
            let mut w = pool.try_acquire(1).expect("slot");
            for (d, x) in w.bytes_mut().chunks_exact_mut(4).zip(v.iter()) {
                d.copy_from_slice(&x.to_le_bytes());
            }
            refs.push(w.commit(v.len() as u64 * 4).expect("commit"));
        }
        (pool, refs)
    }

    #[test]
    fn inputs_concatenate_along_the_batch_axis() {
        let (pool, refs) = pool_with(&[&[1.0, 2.0, 3.0, 4.0], &[5.0, 6.0]]);
        let a = TensorRef {
            shm: refs[0],
            shape: vec![2, 2],
        };
        let b = TensorRef {
            shm: refs[1],
            shape: vec![1, 2],
        };
        let t = read_batch(&[(&pool, &a), (&pool, &b)]).expect("batch");
        assert_eq!(t.shape, vec![3, 2]);
        assert_eq!(t.data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // other trailing dimensions, a wrong byte count, nothing at all: errors
        let c = TensorRef {
            shm: refs[1],
            shape: vec![2, 1],
        };
        assert!(read_batch(&[(&pool, &a), (&pool, &c)])
            .unwrap_err()
            .contains("cannot batch"));
        let d = TensorRef {
            shm: refs[1],
            shape: vec![1, 3],
        };
        assert!(read_batch(&[(&pool, &d)])
            .unwrap_err()
            .contains("needs 12 bytes"));
        assert!(read_batch::<&SlotPool>(&[]).is_err());
    }

    #[test]
    fn a_single_tensor_is_read_where_it_lies_in_its_slot() {
        let (pool, refs) = pool_with(&[&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]);
        let pool = Arc::new(pool);
        let t = TensorRef {
            shm: refs[0],
            shape: vec![1, 2, 3],
        };
        let input = RunInput::of(&[(Arc::clone(&pool), &t)]).expect("input");
        assert_eq!(input.shape(), &[1, 2, 3]);
        let slot_at = pool.read(&refs[0]).expect("read").as_ptr() as usize;
        let (values, at) = input
            .read(|v| (v.data.to_vec(), v.data.as_ptr() as usize))
            .expect("view");
        assert_eq!(values, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(at, slot_at, "read in place, not copied");
        // A range not aligned to f32 is read through a copy, the same values.
        let odd = ShmRef {
            offset: 2,
            len: 8,
            ..refs[0]
        };
        let bytes = pool.read(&odd).expect("read").to_vec();
        let expected: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let t = TensorRef {
            shm: odd,
            shape: vec![2],
        };
        let input = RunInput::of(&[(Arc::clone(&pool), &t)]).expect("input");
        assert_eq!(input.read(|v| v.data.to_vec()).expect("copy"), expected);
        // The byte count is checked when the request is read, not when it runs.
        let wrong = TensorRef {
            shm: refs[0],
            shape: vec![1, 7],
        };
        let e = RunInput::of(&[(Arc::clone(&pool), &wrong)]).err();
        assert!(e.is_some_and(|e| e.contains("needs 28 bytes")));
        // Several tensors are batched into one.
        let both = RunInput::of(&[(Arc::clone(&pool), &t), (pool, &t)]).expect("batch");
        assert!(matches!(both, RunInput::Batched(ref b) if b.shape == vec![4]));
    }

    #[test]
    fn outputs_are_written_little_endian_at_the_offset() {
        let (pool, refs) = pool_with(&[&[0.0; 8]]);
        let data: Vec<f32> = (0..40_000).map(|i| i as f32 * 0.5).collect();
        let big =
            SlotPool::create(protocol::PoolId::new(8), 1, 40_000 * 4 + 64, &[]).expect("pool");
        let slot = big.try_acquire(1).expect("slot").commit(0).expect("commit");
        write_f32(&big, &slot, 64, &data).expect("write");
        let bytes = big
            .read(&ShmRef {
                offset: 64,
                len: 40_000 * 4,
                ..slot
            })
            .expect("read");
        let back: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        assert_eq!(back, data);
        // past the slot's end: an error, nothing written out of bounds
        assert!(write_f32(&pool, &refs[0], 4090, &[1.0, 2.0]).is_err());
    }
}
