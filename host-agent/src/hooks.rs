//! Running the operator's commands for apply-config, lock and wipe.
//!
//! A hook is a shell command line (`sh -c`), so operators can write
//! `talosctl apply-config --insecure --nodes 127.0.0.1 --file /dev/stdin` as they would in
//! a terminal. It gets the machine config on stdin (apply-config only) and the context in
//! `ITL_*` variables; it must finish within the hook timeout or it is killed — with every
//! process it started: the hook runs in a process group of its own, and the whole group is
//! killed, so no child of a timed-out hook lives on while the hook is started again. Only a
//! hook that exits 0 counts as done.

use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

/// Runs `command` with `stdin` and `env`; fails unless it exits 0 within `timeout`.
pub fn run(command: &str, stdin: &[u8], env: &[(&str, &str)], timeout: Duration) -> Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start hook `{command}`"))?;
    if let Some(mut pipe) = child.stdin.take() {
        // A hook that does not read its input is fine (lock, wipe): ignore a closed pipe.
        let data = stdin.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().context("waiting for the hook")? {
            if status.success() {
                return Ok(());
            }
            bail!("hook `{command}` failed ({status})");
        }
        if started.elapsed() > timeout {
            kill_group(child.id());
            let _ = child.wait();
            bail!(
                "hook `{command}` did not finish within {}s and was killed",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILL to process group `pgid` (the hook's: its pid, `process_group(0)`).
fn kill_group(pgid: u32) {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals that process group; no memory is shared.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_env_status_and_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let cmd = format!(
            "cat > {} && echo \"$ITL_ACTION\" >> {}",
            out.display(),
            out.display()
        );
        run(
            &cmd,
            b"machine: {}\n",
            &[("ITL_ACTION", "apply-config")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "machine: {}\napply-config\n"
        );
        let err = run("exit 3", b"", &[], Duration::from_secs(10)).unwrap_err();
        assert!(err.to_string().contains("exit status: 3"), "{err}");
        let err = run("sleep 5", b"", &[], Duration::from_millis(100)).unwrap_err();
        assert!(err.to_string().contains("was killed"), "{err}");
    }

    /// A timed-out hook's children die with it (review: only `sh` was killed before).
    #[test]
    fn a_timed_out_hooks_children_are_killed() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("child.pid");
        let cmd = format!("sleep 30 & echo $! > {} ; wait", pid_file.display());
        let err = run(&cmd, b"", &[], Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("was killed"), "{err}");
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        // SAFETY: signal 0 only asks whether the process exists.
        while unsafe { libc::kill(pid, 0) } == 0 {
            assert!(Instant::now() < deadline, "the hook's child {pid} lives on");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
