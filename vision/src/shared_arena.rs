//! One CPU memory arena for the sessions of the process that ask for it
//! ([`crate::SessionOptions::shared_arena`]; ONNX Runtime's environment allocator). Each
//! session otherwise grows an arena of its own to its own peak and keeps it: the agent on
//! `cpu:0` holds a session per model and executor, and their arenas add up (the OCR app:
//! 1.1–1.2 GB of agent memory at its peak with one arena a session, 0.8 GB with one shared;
//! BENCHMARKS.md). Only two runs are in flight at once, so one arena the size of two runs
//! serves them all, and a session loaded again after an eviction finds its memory
//! already faulted in.

use std::sync::OnceLock;

use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
use ort::AsPointer;

/// The registration's outcome: once per process (ONNX Runtime has one environment).
static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();

/// Registers the shared CPU arena with `env` the first time it is asked for; the same
/// outcome after that.
pub fn ensure_registered(env: &ort::environment::Environment) -> Result<(), String> {
    REGISTERED.get_or_init(|| register_cpu_arena(env)).clone()
}

/// Registers an arena allocator for CPU memory with `env`; sessions built with
/// `with_env_allocators()` then share it.
fn register_cpu_arena(env: &ort::environment::Environment) -> Result<(), String> {
    let info = MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Arena,
        MemoryType::Default,
    )
    .map_err(|e| e.to_string())?;
    let api = ort::api();
    // SAFETY: both pointers come from live `ort` objects; a null arena configuration asks
    // for ONNX Runtime's defaults. The returned status is read and released here.
    let status = unsafe {
        (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), std::ptr::null())
    };
    if status.0.is_null() {
        return Ok(());
    }
    // SAFETY: a non-null status is a live OrtStatus until released.
    let msg = unsafe {
        let text = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0))
            .to_string_lossy()
            .into_owned();
        (api.ReleaseStatus)(status.0);
        text
    };
    Err(msg)
}
