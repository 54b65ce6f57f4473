//! f32 tensors in shared memory: reading them into `vision` tensors and writing
//! results back, little-endian, packed.

use protocol::messages::TensorRef;
use protocol::shm::{ShmError, SlotPool};
use vision::TensorF32;

/// Read a tensor from its pool.
pub fn read_tensor(pool: &SlotPool, t: &TensorRef) -> Result<TensorF32, String> {
    let bytes = pool.read(&t.shm).map_err(|e: ShmError| e.to_string())?;
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    let n: usize = shape.iter().product();
    if bytes.len() != n * 4 {
        return Err(format!(
            "tensor of shape {shape:?} needs {} bytes, its slot range has {}",
            n * 4,
            bytes.len()
        ));
    }
    let data: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    TensorF32::new(shape, data).map_err(|e| e.to_string())
}

/// Little-endian bytes of a tensor's data.
pub fn tensor_bytes(t: &TensorF32) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.data.len() * 4);
    for v in &t.data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
