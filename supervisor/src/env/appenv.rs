//! The environment an app runs under. A supervisor started for one app reads its own
//! process environment; the node's daemon hosts apps sent from many shells, so each app
//! carries the environment and working folder of the `start` that sent it. Code that
//! reads a setting (`SMARTPIPE_*`, `ORT_*`, `PATH`) asks [`var`], and every process
//! started for an app gets the app's environment through [`apply`]: the daemon's own
//! environment never leaks into an app, and one app's never into another's.
//!
//! The app's environment is bound to the thread that admits and runs it ([`scope`]);
//! threads without one (a supervisor hosting a single app, the CLI) read the process
//! environment, as before.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

/// The environment and working folder of the shell that started an app, and, for an
/// app followed by a foreground `start`, that command's stdout and stderr.
#[derive(Debug, Clone, Default)]
pub struct AppEnv {
    pub vars: BTreeMap<String, String>,
    pub cwd: PathBuf,
    pub console: Option<Arc<crate::env::console::Console>>,
}

impl AppEnv {
    /// This process's environment (variables that are not UTF-8 are left out: no
    /// setting SmartPipe reads can be one) and working folder.
    pub fn of_this_process() -> std::io::Result<AppEnv> {
        Ok(AppEnv {
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
            cwd: std::env::current_dir()?,
            console: None,
        })
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<AppEnv>>> = const { RefCell::new(None) };
}

/// Run `f` with `env` as the environment of this thread's app.
pub fn scope<R>(env: Arc<AppEnv>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<AppEnv>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(env));
    let _restore = Restore(previous);
    f()
}

/// The app environment bound to this thread, if any.
pub fn current() -> Option<Arc<AppEnv>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// A setting of this thread's app (else of this process), when set and UTF-8.
pub fn var(key: &str) -> Option<String> {
    match current() {
        Some(env) => env.vars.get(key).cloned(),
        None => std::env::var(key).ok(),
    }
}

/// [`var`] for paths and lists of paths.
pub fn var_os(key: &str) -> Option<OsString> {
    match current() {
        Some(env) => env.vars.get(key).map(OsString::from),
        None => std::env::var_os(key),
    }
}

/// Environment variable that overrides the restart intensity (restarts of a task allowed
/// within the window before the app fails; 0 = none).
pub const ENV_MAX_RESTARTS: &str = "SMARTPIPE_MAX_RESTARTS";

/// [`ENV_MAX_RESTARTS`] when set, else `default`; a value that is not a whole number is an
/// error (`start` checks it before anything runs).
pub fn max_restarts(default: usize) -> Result<usize, String> {
    match var(ENV_MAX_RESTARTS) {
        None => Ok(default),
        Some(v) => v.trim().parse::<usize>().map_err(|_| {
            format!("{ENV_MAX_RESTARTS}={v:?} is not a whole number of restarts (0 or more)")
        }),
    }
}

/// The console of the command following this thread's app, if one does.
pub fn console() -> Option<Arc<crate::env::console::Console>> {
    current().and_then(|env| env.console.clone())
}

/// Standard error as this thread's app sees it: the stderr of the command following the
/// app in the daemon, else this process's. The supervisor's log lines and notes about an
/// app go here, so a foreground `start` shows them as a supervisor of its own would.
pub struct Stderr;

impl std::io::Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match console().map(|c| c.stderr()) {
            Some(Ok(mut err)) => err.write(buf),
            _ => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Print a line about this thread's app to its [`Stderr`].
pub fn note(line: &str) {
    use std::io::Write;
    let _ = Stderr.write_all(format!("{line}\n").as_bytes());
}

/// `path` as the app's working folder sees it: relative paths resolve against the
/// folder of the `start` that sent the app (without one, this process's folder).
pub fn in_cwd(path: impl Into<PathBuf>) -> PathBuf {
    let path = path.into();
    match current() {
        Some(env) => env.cwd.join(path),
        None => path,
    }
}

/// Give `cmd` the environment and working folder of this thread's app (nothing to do
/// without one: children inherit the process's). Variables set on `cmd` before stay.
pub fn apply(cmd: &mut Command) -> &mut Command {
    if let Some(env) = current() {
        let own: Vec<(OsString, Option<OsString>)> = cmd
            .get_envs()
            .map(|(k, v)| (k.to_os_string(), v.map(|v| v.to_os_string())))
            .collect();
        cmd.env_clear().envs(&env.vars);
        for (k, v) in own {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if env.cwd.is_dir() {
            cmd.current_dir(&env.cwd);
        }
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with(pairs: &[(&str, &str)]) -> Arc<AppEnv> {
        Arc::new(AppEnv {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: std::env::temp_dir(),
            console: None,
        })
    }

    #[test]
    fn an_apps_settings_are_its_own_and_end_with_its_scope() {
        let a = env_with(&[("SMARTPIPE_DEVICE", "cpu:0")]);
        let b = env_with(&[("SMARTPIPE_DEVICE", "cuda:1")]);
        scope(a, || {
            assert_eq!(var("SMARTPIPE_DEVICE").as_deref(), Some("cpu:0"));
            scope(b, || {
                assert_eq!(var("SMARTPIPE_DEVICE").as_deref(), Some("cuda:1"))
            });
            assert_eq!(var("SMARTPIPE_DEVICE").as_deref(), Some("cpu:0"));
            // Unset for the app even though this process may have it.
            assert_eq!(var("PATH"), None);
        });
        assert_eq!(var("PATH"), std::env::var("PATH").ok());
    }

    #[test]
    fn a_child_gets_the_apps_environment_and_folder_not_the_processes() {
        let app = env_with(&[("ONLY_IN_APP", "1"), ("PATH", "/usr/bin:/bin")]);
        let out = scope(app, || {
            let mut cmd = Command::new("/bin/sh");
            cmd.args(["-c", "echo \"$ONLY_IN_APP:$SET_HERE:$HOME:$(pwd)\""])
                .env("SET_HERE", "2");
            apply(&mut cmd).output()
        })
        .expect("run sh");
        let text = String::from_utf8_lossy(&out.stdout);
        let tmp = std::env::temp_dir().canonicalize().expect("temp dir");
        assert_eq!(text.trim(), format!("1:2::{}", tmp.display()));
    }
}
