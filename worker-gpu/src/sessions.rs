//! How the agent makes its ONNX Runtime sessions on each provider.
//!
//! On `cpu:0` the agent shares the cores with the pipeline's CPU stages, and what a session
//! costs beyond its runs is taken from them:
//!
//! - **idle intra-op threads sleep** instead of spinning (a spinning thread takes a core a
//!   stage needs);
//! - **no memory pattern**: with it a big model's first *two* runs each fault in its working
//!   set (ISNet at 1024², one intra-op thread: ≈ 210 000 page faults and 1–3 s of system time
//!   on each of runs 1 and 2, beside 1.9 s of user time; with huge pages still 2.8 s of system
//!   time on each); without it only the first run does, and with the agent's huge pages
//!   (below) not even that: 2 600 faults, 0.2 s. The steady runs cost the same either way;
//! - **no warm-up run**: on zeros it costs a whole run (1.9 s of ISNet) per session, and with
//!   the settings above the first real run costs what every later one does, so it saves no
//!   latency; on a device it stays (the first run there sets up kernels and workspaces).
//!
//! - **one arena for all sessions** ([`vision::shared_arena`]): a session per model and
//!   executor each growing an arena to its own peak added up to 1.1–1.2 GB in the OCR app,
//!   0.8 GB with one arena the agent's few runs in flight share. A model whose manifest
//!   entry says `own_arena` (MTCNN's nets: small, run many times a second by every
//!   executor) keeps an arena per session instead, and each executor thread takes the
//!   session it ran last ([`crate::residency::session_for`]), so that a buffer one
//!   executor freed is not the next one the other writes from its core.
//!
//! The supervisor starts the agent, like every worker, with glibc keeping freed blocks for
//! reuse (`supervisor/src/env/malloc.rs`); huge pages for malloc are the user's choice
//! (`GLIBC_TUNABLES=glibc.malloc.hugetlb=1`; a default from session 11 to 34, dropped when it
//! cost the OCR app system time on a fragmented machine). Each setting can still be changed
//! from the environment ([`SessionOptions::with_env`]: `SMARTPIPE_ORT_MEM_PATTERN`,
//! `SMARTPIPE_ORT_WARM_UP`).

use vision::{Provider, SessionOptions};

/// The settings of the agent's sessions on `provider` at `threads` intra-op threads, before
/// the environment's overrides.
pub fn agent_session_options(provider: Provider, threads: usize) -> SessionOptions {
    let device = provider != Provider::Cpu;
    SessionOptions {
        intra_threads: threads.max(1),
        warm_up: device,
        intra_spinning: device,
        memory_pattern: device,
        shared_arena: !device,
        ..SessionOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_sessions_neither_spin_nor_plan_memory_nor_warm_up_and_device_ones_do() {
        let cpu = agent_session_options(Provider::Cpu, 1);
        assert!(!cpu.intra_spinning && !cpu.memory_pattern && !cpu.warm_up);
        assert!(cpu.shared_arena);
        assert_eq!(cpu.intra_threads, 1);
        let cuda = agent_session_options(Provider::Cuda { device_id: 0 }, 0);
        assert!(cuda.intra_spinning && cuda.memory_pattern && cuda.warm_up);
        assert!(
            !cuda.shared_arena,
            "device memory has allocators of its own"
        );
        assert_eq!(cuda.intra_threads, 1, "at least one intra-op thread");
    }
}
