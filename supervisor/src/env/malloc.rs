//! The workers' malloc, through glibc's tunables (`GLIBC_TUNABLES`, read when a process starts;
//! a tunable the user's value already sets is left as it is):
//!
//! - **every worker keeps freed blocks for reuse** (`glibc.malloc.mmap_threshold` 32 MiB,
//!   `glibc.malloc.trim_threshold` 64 MiB): a stage allocates its per-item buffers afresh for
//!   every item (P-Net's pyramid levels, 2 MB a 720p frame; R-Net's crops), and with glibc's
//!   defaults blocks of a few MB were handed back to the kernel when freed and faulted in
//!   again, zero-filled, for the next item: the faces app's stages and agent took 170,000–190,000
//!   page faults per 240 frames, 70,000 with these (BENCHMARKS.md, session 34). Blocks of
//!   32 MiB and more are still mapped and unmapped one by one, and a heap keeps at most 64 MiB
//!   free at its top.
//! - **the device agent's large blocks in huge pages** (`glibc.malloc.hugetlb=1`, where the
//!   kernel's THP mode is `madvise` or `always`): ONNX Runtime's CPU arena takes a big model's
//!   working set from malloc on the session's first run; in 4 KiB pages ISNet at 1024² faulted
//!   in ≈ 210 000 of them, 1–3 s of system time beside its 1.9 s run, in 2 MiB pages 2 600
//!   faults and 0.2 s (worker-gpu/src/sessions.rs has the figures).

use std::process::Command;

/// The variable glibc reads its tunables from (`name=value` pairs separated by colons).
pub const TUNABLES: &str = "GLIBC_TUNABLES";
const HUGETLB: &str = "glibc.malloc.hugetlb";

const MMAP_THRESHOLD: &str = "glibc.malloc.mmap_threshold";
const TRIM_THRESHOLD: &str = "glibc.malloc.trim_threshold";
/// Blocks smaller than this come from the heap and are reused once freed (glibc's largest
/// threshold on 64-bit).
const MMAP_THRESHOLD_BYTES: u64 = 32 << 20;
/// Free memory at the top of a heap beyond this goes back to the kernel.
const TRIM_THRESHOLD_BYTES: u64 = 64 << 20;

/// `current` (the `GLIBC_TUNABLES` a process would get) with each of `defaults` added that
/// it does not set itself.
pub fn with_defaults(current: Option<&str>, defaults: &[(&str, u64)]) -> String {
    let current = current.map(str::trim).unwrap_or_default();
    let mut out = current.to_string();
    for (tunable, value) in defaults {
        let sets_it = current
            .split(':')
            .filter_map(|pair| pair.split_once('='))
            .any(|(name, _)| name.trim() == *tunable);
        if !sets_it {
            if !out.is_empty() {
                out.push(':');
            }
            out.push_str(&format!("{tunable}={value}"));
        }
    }
    out
}

/// The `GLIBC_TUNABLES` set on `cmd`, if it sets or removes it (`Some(None)`: removed).
fn set_on(cmd: &Command) -> Option<Option<String>> {
    cmd.get_envs()
        .find(|(name, _)| *name == TUNABLES)
        .map(|(_, value)| value.map(|v| v.to_string_lossy().into_owned()))
}

/// Sets a worker's tunables on `cmd`: freed blocks kept for reuse, and for a device agent
/// (`agent`) huge pages, each unless the `GLIBC_TUNABLES` it would get (set on `cmd`, else
/// the app's environment) sets it. Call it after [`super::appenv::apply`].
pub fn tune_worker(cmd: &mut Command, agent: bool) {
    let current = set_on(cmd).unwrap_or_else(|| super::appenv::var(TUNABLES));
    let mut defaults = vec![
        (MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    ];
    if agent {
        defaults.push((HUGETLB, 1));
    }
    cmd.env(TUNABLES, with_defaults(current.as_deref(), &defaults));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugetlb_is_added_to_the_tunables_unless_they_set_it() {
        let with_hugetlb = |current| with_defaults(current, &[(HUGETLB, 1)]);
        assert_eq!(with_hugetlb(None), "glibc.malloc.hugetlb=1");
        assert_eq!(with_hugetlb(Some(" ")), "glibc.malloc.hugetlb=1");
        assert_eq!(
            with_hugetlb(Some("glibc.malloc.arena_max=2")),
            "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"
        );
        assert_eq!(
            with_hugetlb(Some("glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2")),
            "glibc.malloc.hugetlb=0:glibc.malloc.arena_max=2"
        );
    }

    fn tunables_of(cmd: &Command) -> Option<String> {
        set_on(cmd).flatten()
    }

    #[test]
    fn the_agent_command_keeps_a_value_set_on_it_and_adds_heap_reuse_and_hugetlb() {
        let mut cmd = Command::new("worker-gpu");
        cmd.env(
            TUNABLES,
            "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0",
        );
        tune_worker(&mut cmd, true);
        assert_eq!(
            tunables_of(&cmd).as_deref(),
            Some(
                "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0:\
                 glibc.malloc.mmap_threshold=33554432:glibc.malloc.hugetlb=1"
            )
        );
    }

    #[test]
    fn a_stage_command_keeps_freed_blocks_but_gets_no_huge_pages() {
        let mut cmd = Command::new("worker-cpu");
        cmd.env(TUNABLES, "");
        tune_worker(&mut cmd, false);
        assert_eq!(
            tunables_of(&cmd).as_deref(),
            Some("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864")
        );
    }
}
