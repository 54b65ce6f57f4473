//! The device agent's malloc: glibc's `glibc.malloc.hugetlb=1` tunable, which backs malloc's
//! large blocks with transparent huge pages (where the kernel's THP mode is `madvise` or
//! `always`). ONNX Runtime's CPU arena takes a big model's working set from malloc on the
//! session's first run; in 4 KiB pages ISNet at 1024² faulted in ≈ 210 000 of them, 1–3 s of
//! system time beside its 1.9 s run, in 2 MiB pages 2 600 faults and 0.2 s
//! (worker-gpu/src/sessions.rs has the figures). glibc reads its tunables from
//! `GLIBC_TUNABLES` when a process starts, so the supervisor sets it for the agent; a value
//! that already sets `glibc.malloc.hugetlb` (`=0` turns it off) is left as it is.

use std::process::Command;

/// The variable glibc reads its tunables from (`name=value` pairs separated by colons).
pub const TUNABLES: &str = "GLIBC_TUNABLES";
const HUGETLB: &str = "glibc.malloc.hugetlb";

/// `current` (the `GLIBC_TUNABLES` a process would get) with `glibc.malloc.hugetlb=1` added,
/// unless it sets that tunable itself.
pub fn with_hugetlb(current: Option<&str>) -> String {
    let current = current.map(str::trim).unwrap_or_default();
    let sets_it = current
        .split(':')
        .filter_map(|pair| pair.split_once('='))
        .any(|(name, _)| name.trim() == HUGETLB);
    match current {
        _ if sets_it => current.to_string(),
        "" => format!("{HUGETLB}=1"),
        _ => format!("{current}:{HUGETLB}=1"),
    }
}

/// Gives the agent's `cmd` huge pages: [`with_hugetlb`] of the `GLIBC_TUNABLES` it would
/// get (set on `cmd`, else the app's environment). Call it after [`super::appenv::apply`].
pub fn huge_pages_for_agent(cmd: &mut Command) {
    let on_cmd = cmd
        .get_envs()
        .find(|(name, _)| *name == TUNABLES)
        .map(|(_, value)| value.map(|v| v.to_string_lossy().into_owned()));
    let current = on_cmd.unwrap_or_else(|| super::appenv::var(TUNABLES));
    cmd.env(TUNABLES, with_hugetlb(current.as_deref()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugetlb_is_added_to_the_tunables_unless_they_set_it() {
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

    #[test]
    fn the_agent_command_keeps_a_value_set_on_it_and_adds_hugetlb() {
        let mut cmd = Command::new("worker-gpu");
        cmd.env(TUNABLES, "glibc.malloc.arena_max=2");
        huge_pages_for_agent(&mut cmd);
        let value = cmd
            .get_envs()
            .find(|(name, _)| *name == TUNABLES)
            .and_then(|(_, v)| v.map(|v| v.to_string_lossy().into_owned()));
        assert_eq!(
            value.as_deref(),
            Some("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
        );
    }
}
