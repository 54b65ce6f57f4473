//! Which device the GPU agent should run on: the first CUDA device when this crate is built
//! with the `cuda` feature and the CUDA driver (found at run time through cudarc's dynamic
//! loading) reports one; `cpu:0` otherwise, with the reason, so that a user who expected a
//! GPU sees why there is none.

/// The device found, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    /// `cuda:N` or `cpu:0`: the agent's device string.
    pub device: String,
    /// A line for people: the card, its compute capability and memory, or why `cpu:0`.
    pub description: String,
    /// Device memory in MiB (CUDA only): the residency budget when the app sets none.
    pub memory_mb: Option<u64>,
}

impl Detected {
    fn cpu(reason: impl Into<String>) -> Self {
        Detected {
            device: "cpu:0".into(),
            description: format!("cpu:0 ({})", reason.into()),
            memory_mb: None,
        }
    }
}

/// Look for a CUDA device. Never panics: a missing driver or a driver error gives `cpu:0`
/// with the reason.
pub fn detect() -> Detected {
    #[cfg(feature = "cuda")]
    {
        detect_cuda()
    }
    #[cfg(not(feature = "cuda"))]
    {
        Detected::cpu("built without the `cuda` feature")
    }
}

#[cfg(feature = "cuda")]
fn detect_cuda() -> Detected {
    use cudarc::driver::CudaContext;
    // cudarc panics when it cannot load libcuda; ask first.
    // SAFETY: only tries to dlopen the driver library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Detected::cpu("no CUDA driver library (libcuda.so) on this machine");
    }
    let count = match CudaContext::device_count() {
        Ok(n) => n,
        Err(e) => return Detected::cpu(format!("the CUDA driver reports no device: {e}")),
    };
    if count < 1 {
        return Detected::cpu("the CUDA driver lists no device");
    }
    let ctx = match CudaContext::new(0) {
        Ok(c) => c,
        Err(e) => return Detected::cpu(format!("cannot open CUDA device 0: {e}")),
    };
    let name = ctx.name().unwrap_or_else(|_| "unknown CUDA device".into());
    let cap = ctx
        .compute_capability()
        .map(|(major, minor)| format!("sm_{major}{minor}"))
        .unwrap_or_else(|_| "sm_?".into());
    let memory_mb = ctx.total_mem().ok().map(|b| (b >> 20) as u64);
    Detected {
        device: "cuda:0".into(),
        description: format!(
            "cuda:0 ({name}, {cap}, {} MiB{})",
            memory_mb
                .map(|m| m.to_string())
                .unwrap_or_else(|| "?".into()),
            if count > 1 {
                format!("; {count} devices, the agent uses the first")
            } else {
                String::new()
            }
        ),
        memory_mb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_feature_the_device_is_the_cpu_with_the_reason() {
        if cfg!(feature = "cuda") {
            eprintln!("skipping: built with `cuda`; the cuda test covers detection");
            return;
        }
        let d = detect();
        assert_eq!(d.device, "cpu:0");
        assert!(
            d.description.contains("without the `cuda` feature"),
            "{d:?}"
        );
        assert_eq!(d.memory_mb, None);
    }
}
