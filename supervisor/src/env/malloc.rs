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
//!
//! Huge pages for malloc (`glibc.malloc.hugetlb=1`) are the user's to ask for, no longer a
//! default of the device agent (session 35): where the kernel compacts memory on a fault in a
//! `madvise`d region (THP `defrag` = `madvise`, Debian's default) and free memory is
//! fragmented, the OCR app's agent spent 2.5–3.0 s of system time in the runs that got huge
//! pages against 0.6–0.8 s without, and ran 1.11× slower; the faces and ISNet apps gained
//! nothing (BENCHMARKS.md, session 35).

use std::process::Command;

/// The variable glibc reads its tunables from (`name=value` pairs separated by colons).
pub const TUNABLES: &str = "GLIBC_TUNABLES";

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

/// Sets a worker's tunables on `cmd` (a stage or a device agent): freed blocks kept for
/// reuse, each unless the `GLIBC_TUNABLES` it would get (set on `cmd`, else the app's
/// environment) sets it. Call it after [`super::appenv::apply`].
pub fn tune_worker(cmd: &mut Command) {
    let current = set_on(cmd).unwrap_or_else(|| super::appenv::var(TUNABLES));
    let defaults = [
        (MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
        (TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES),
    ];
    cmd.env(TUNABLES, with_defaults(current.as_deref(), &defaults));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_is_added_to_the_tunables_unless_they_set_it() {
        let with_default = |current| with_defaults(current, &[(TRIM_THRESHOLD, 1)]);
        assert_eq!(with_default(None), "glibc.malloc.trim_threshold=1");
        assert_eq!(with_default(Some(" ")), "glibc.malloc.trim_threshold=1");
        assert_eq!(
            with_default(Some("glibc.malloc.arena_max=2")),
            "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=1"
        );
        assert_eq!(
            with_default(Some(
                "glibc.malloc.trim_threshold=0:glibc.malloc.arena_max=2"
            )),
            "glibc.malloc.trim_threshold=0:glibc.malloc.arena_max=2"
        );
    }

    fn tunables_of(cmd: &Command) -> Option<String> {
        set_on(cmd).flatten()
    }

    #[test]
    fn a_worker_command_keeps_a_value_set_on_it_and_adds_heap_reuse() {
        let mut cmd = Command::new("worker-gpu");
        cmd.env(
            TUNABLES,
            "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0:glibc.malloc.hugetlb=1",
        );
        tune_worker(&mut cmd);
        assert_eq!(
            tunables_of(&cmd).as_deref(),
            Some(
                "glibc.malloc.arena_max=2:glibc.malloc.trim_threshold=0:glibc.malloc.hugetlb=1:\
                 glibc.malloc.mmap_threshold=33554432"
            )
        );
    }

    #[test]
    fn a_worker_command_keeps_freed_blocks_and_gets_no_huge_pages() {
        let mut cmd = Command::new("worker-cpu");
        cmd.env(TUNABLES, "");
        tune_worker(&mut cmd);
        assert_eq!(
            tunables_of(&cmd).as_deref(),
            Some("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=67108864")
        );
    }
}
