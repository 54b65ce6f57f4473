//! Child processes that die with the process that started them.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Have the child `cmd` starts killed (SIGKILL) when this process dies, even by -9: a
/// stage's decoder, a supervisor's stages. `PR_SET_PDEATHSIG` fires when the *thread*
/// that forked the child ends, so spawn from a thread that lives as long as the child
/// should. A child whose parent died before the signal was armed exits at once (70).
pub fn die_with_this_process(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: between fork and exec the closure only calls prctl, getppid and _exit,
    // which are async-signal-safe and do not allocate.
    unsafe {
        cmd.pre_exec(move || {
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if nix::unistd::getppid() != parent {
                libc::_exit(70);
            }
            Ok(())
        });
    }
}
