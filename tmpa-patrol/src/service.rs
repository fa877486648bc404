//! `service`: runs the `--service-cmd` (e.g. `supervisorctl status app`) with `sh -c` and a
//! timeout; the service is up when the command exits 0 and its output says RUNNING.
//! [`run_command`] is also how the job checks run `journalctl` (`crate::logs`).
//!
//! The command runs in its own process group, so that on timeout the whole group (the
//! shell and whatever it started) is killed, not just the shell. Output is read on two
//! threads, bounded, and drained past the bound so that the command never blocks on a
//! full pipe.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{Check, Perf, Status, one_line};

/// Bytes of the command's output kept (per stream), unless [`Limits`] says otherwise.
pub const OUTPUT_BYTES_MAX: usize = 64 * 1024;
/// How often the child is polled while it runs.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for the output after the command ended (a background grandchild
/// may hold the pipe open).
const DRAIN_WAIT: Duration = Duration::from_millis(500);

/// How the command ended.
#[derive(Debug)]
pub struct Outcome {
    /// Its exit status; `None` when it was killed on timeout.
    pub status: Option<ExitStatus>,
    /// Its standard output (at most the limit's bytes).
    pub stdout: String,
    /// Whether the command wrote more than that (the rest was read and dropped).
    pub stdout_truncated: bool,
    /// Its standard error (at most the limit's bytes).
    pub stderr: String,
}

/// Bytes of a command's output kept, per stream.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Of standard output.
    pub stdout: usize,
    /// Of standard error.
    pub stderr: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            stdout: OUTPUT_BYTES_MAX,
            stderr: OUTPUT_BYTES_MAX,
        }
    }
}

/// Runs `cmd` with `sh -c`, killing its process group after `timeout`.
///
/// # Errors
/// When `sh` cannot be started or waited for.
pub fn run(cmd: &str, timeout: Duration) -> io::Result<Outcome> {
    let mut sh = Command::new("sh");
    sh.arg("-c").arg(cmd);
    run_command(sh, timeout, Limits::default())
}

/// The variables a command the patrol starts gets from the patrol's environment: what a
/// shell needs to find and word its programs, nothing that could hold a secret (the
/// configuration of /etc/default/tmpa is exported to the patrol's cron line).
const PASSED_ENV: [&str; 4] = ["PATH", "LANG", "TZ", "TERM"];

/// Clears `cmd`'s environment but for [`PASSED_ENV`] and `LC_*`.
fn minimal_env(cmd: &mut Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        let keep = k
            .to_str()
            .is_some_and(|k| PASSED_ENV.contains(&k) || k.starts_with("LC_"));
        if keep {
            cmd.env(k, v);
        }
    }
}

/// Runs `cmd` with no input, in its own process group, which is killed after `timeout`;
/// keeps the first `limits` bytes of each output stream and drains the rest.
///
/// # Errors
/// When the command cannot be started or waited for.
pub fn run_command(mut cmd: Command, timeout: Duration, limits: Limits) -> io::Result<Outcome> {
    minimal_env(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()?;
    let (tx, rx) = mpsc::channel();
    type Pipe = Option<Box<dyn Read + Send>>;
    let pipes: [(u8, usize, Pipe); 2] = [
        (
            1,
            limits.stdout,
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
        (
            2,
            limits.stderr,
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        ),
    ];
    for (which, limit, pipe) in pipes {
        let Some(mut pipe) = pipe else { continue };
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut pipe).take(limit as u64).read_to_end(&mut kept);
            let dropped = io::copy(&mut pipe, &mut io::sink()).unwrap_or(0);
            let _ = tx.send((which, kept, dropped > 0));
        });
    }
    drop(tx);
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.kill();
            child.wait()?;
            break None;
        }
        std::thread::sleep(POLL);
    };
    let (mut stdout, mut stderr, mut stdout_truncated) = (Vec::new(), Vec::new(), false);
    let drain_until = Instant::now() + DRAIN_WAIT;
    while let Ok((which, bytes, dropped)) =
        rx.recv_timeout(drain_until.saturating_duration_since(Instant::now()))
    {
        if which == 1 {
            stdout = bytes;
            stdout_truncated = dropped;
        } else {
            stderr = bytes;
        }
    }
    Ok(Outcome {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stdout_truncated,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn kill_group(pid: u32) {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return;
    };
    // The group may be gone already; the direct kill below still reaps the shell.
    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
}

fn first_line(s: &str) -> Option<&str> {
    s.lines().map(str::trim).find(|l| !l.is_empty())
}

/// `service`: skipped (unknown, not counted) without a command, or with an empty one
/// (`TMPA_SERVICE_CMD=` as /etc/default/tmpa ships it).
pub fn check(cmd: Option<&str>, timeout: Duration) -> Check {
    let name = "service";
    let Some(cmd) = cmd.filter(|c| !c.trim().is_empty()) else {
        let mut c = Check::new(
            name,
            Status::Unknown,
            None,
            "not configured: nothing to check (set TMPA_SERVICE_CMD in /etc/default/tmpa, \
             or give --service-cmd, e.g. \"supervisorctl status app\")"
                .into(),
        );
        c.skipped = true;
        return c;
    };
    let (status, value, detail) = match run(cmd, timeout) {
        Err(e) => (
            Status::Unknown,
            None,
            format!("cannot run sh -c {cmd:?}: {e}"),
        ),
        Ok(Outcome { status: None, .. }) => (
            Status::Critical,
            Some(0.0),
            format!(
                "{cmd:?} gave no answer within {}s (killed)",
                timeout.as_secs_f64()
            ),
        ),
        Ok(o) => {
            let said = first_line(&o.stdout)
                .or_else(|| first_line(&o.stderr))
                .map_or_else(|| "no output".to_owned(), |l| one_line(l, 200));
            let code = o.status.and_then(|s| s.code());
            if code == Some(0) && o.stdout.contains("RUNNING") {
                (Status::Ok, Some(1.0), said)
            } else {
                let how =
                    code.map_or_else(|| "killed by a signal".to_owned(), |c| format!("exit {c}"));
                (
                    Status::Critical,
                    Some(0.0),
                    format!("{cmd:?} {how}, not RUNNING: {said}"),
                )
            }
        }
    };
    let mut c = Check::new(name, status, value, detail);
    c.perf.push(Perf {
        label: "service_running",
        value,
        uom: "",
        warn: None,
        crit: None,
    });
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_needs_exit_zero_and_the_word() {
        let t = Duration::from_secs(5);
        assert_eq!(
            check(Some("echo 'app RUNNING pid 1'"), t).status,
            Status::Ok
        );
        assert_eq!(
            check(Some("echo 'app RUNNING'; exit 3"), t).status,
            Status::Critical
        );
        assert_eq!(
            check(Some("echo 'app STOPPED'"), t).status,
            Status::Critical
        );
        let skipped = check(None, t);
        assert!(skipped.skipped && skipped.status == Status::Unknown);
        assert!(
            skipped.detail.contains("TMPA_SERVICE_CMD"),
            "{}",
            skipped.detail
        );
        assert!(check(Some(" "), t).skipped, "empty, as shipped");
    }

    #[test]
    fn a_hanging_command_is_killed_on_time() {
        let t0 = Instant::now();
        let c = check(Some("sleep 30; echo RUNNING"), Duration::from_millis(300));
        assert_eq!(c.status, Status::Critical);
        assert!(c.detail.contains("no answer"), "{}", c.detail);
        assert!(t0.elapsed() < Duration::from_secs(5));
    }
}
