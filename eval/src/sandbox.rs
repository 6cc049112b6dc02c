//! Runs untrusted programs (model-written Python and Rust tests) so that they cannot hurt the
//! machine or the run: a fresh temporary directory, a clean environment, a wall-clock timeout,
//! resource limits (address space, CPU seconds, processes, file size, open files), a network
//! namespace of its own with only a downed loopback where the kernel lets one be made, and on
//! exit every process the program started killed: its process group, and, when the harness runs
//! as root, every process of the throwaway user id it ran as (so a child that left the group with
//! `setsid` dies too).
//!
//! Linux only (namespaces, `setrlimit`). What could not be had (no network namespace for an
//! unprivileged user, say) is reported once by [`Sandbox::new`], never silently assumed.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The limits one run gets.
#[derive(Debug, Clone)]
pub struct Limits {
    pub timeout: Duration,
    /// Address space, bytes.
    pub memory: u64,
    /// Processes (threads count too) the program may have at once.
    pub processes: u64,
    /// Largest file it may write, bytes.
    pub file_size: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(3),
            memory: 2 << 30,
            processes: 64,
            file_size: 64 << 20,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Passed,
    /// Exited with this non-zero code.
    Failed(i32),
    /// Killed by this signal (the CPU limit gives SIGKILL or SIGXCPU).
    Signalled(i32),
    TimedOut,
    /// The program could not be started at all.
    NotRun(String),
}

#[derive(Debug, Clone)]
pub struct RunResult {
    pub verdict: Verdict,
    /// The end of what the program wrote (both streams, up to 4 KiB).
    pub output: String,
    pub elapsed: Duration,
}

/// What this machine lets the sandbox do; probed once.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Each run in a network namespace of its own.
    pub network_isolated: bool,
    /// Each run as a throwaway user id (only possible as root).
    pub own_user: bool,
}

const CLONE_NEWNET: i32 = 0x4000_0000;
const CLONE_NEWUSER: i32 = 0x1000_0000;
/// Throwaway user ids: far above any real account.
const UID_BASE: u32 = 3_000_000;
static NEXT_UID: AtomicU32 = AtomicU32::new(0);

impl Sandbox {
    /// Probes what isolation this machine allows and says on stderr what it could not get.
    pub fn new() -> Sandbox {
        let own_user = unsafe { libc::geteuid() } == 0;
        let mut sb = Sandbox {
            network_isolated: true,
            own_user,
        };
        let probe = sb.run(Path::new("/bin/true"), &[], None, &Limits::default());
        if probe.verdict != Verdict::Passed {
            sb.network_isolated = false;
            eprintln!(
                "sandbox: no network namespace can be made here ({:?}); programs keep the network",
                probe.verdict
            );
        }
        if !own_user {
            eprintln!(
                "sandbox: not root, so programs run as this user; the process limit counts this user's processes"
            );
        }
        sb
    }

    /// Runs `program args` in a fresh temporary directory holding `files` (name, contents).
    pub fn run_with_files(
        &self,
        program: &Path,
        args: &[&str],
        files: &[(&str, &str)],
        limits: &Limits,
    ) -> RunResult {
        let dir = match tempfile::Builder::new().prefix("nib-sandbox-").tempdir() {
            Ok(d) => d,
            Err(e) => return not_run(format!("no temporary directory: {e}")),
        };
        for (name, text) in files {
            if let Err(e) = std::fs::write(dir.path().join(name), text) {
                return not_run(format!("cannot write {name}: {e}"));
            }
        }
        self.run(program, args, Some(dir.path()), limits)
    }

    /// Runs `program args` in `dir` (a fresh temporary directory when `None`).
    pub fn run(
        &self,
        program: &Path,
        args: &[&str],
        dir: Option<&Path>,
        limits: &Limits,
    ) -> RunResult {
        let temp;
        let dir: PathBuf = match dir {
            Some(d) => d.to_path_buf(),
            None => match tempfile::Builder::new().prefix("nib-sandbox-").tempdir() {
                Ok(d) => {
                    temp = d;
                    temp.path().to_path_buf()
                }
                Err(e) => return not_run(format!("no temporary directory: {e}")),
            },
        };
        let uid = self.own_user.then(|| {
            let pid = std::process::id() % 100_000;
            UID_BASE + pid * 64 + NEXT_UID.fetch_add(1, Ordering::Relaxed) % 64
        });
        let out_path = dir.join(".nib-output");
        let out = match std::fs::File::create(&out_path) {
            Ok(f) => f,
            Err(e) => return not_run(format!("cannot create the output file: {e}")),
        };
        if let Some(uid) = uid {
            // The program's user must be able to write its directory.
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap_or_default();
            unsafe {
                libc::chown(c.as_ptr(), uid, uid);
            }
            let _ =
                std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700));
        }
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &dir)
            .env("TMPDIR", &dir)
            .env("LANG", "C.UTF-8")
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_or(Stdio::null(), Stdio::from))
            .stderr(Stdio::from(out));
        let isolate = self.network_isolated;
        let limits_c = limits.clone();
        unsafe {
            cmd.pre_exec(move || {
                // Only async-signal-safe calls here: we are between fork and exec.
                if libc::setpgid(0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if isolate {
                    let flags = if uid.is_some() {
                        CLONE_NEWNET
                    } else {
                        CLONE_NEWNET | CLONE_NEWUSER
                    };
                    if libc::unshare(flags) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let cpu = limits_c.timeout.as_secs() + 1;
                for (res, v) in [
                    (libc::RLIMIT_AS, limits_c.memory),
                    (libc::RLIMIT_CPU, cpu),
                    (libc::RLIMIT_NPROC, limits_c.processes),
                    (libc::RLIMIT_FSIZE, limits_c.file_size),
                    (libc::RLIMIT_NOFILE, 256),
                    (libc::RLIMIT_CORE, 0),
                ] {
                    let r = libc::rlimit {
                        rlim_cur: v,
                        rlim_max: v,
                    };
                    if libc::setrlimit(res, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let start = Instant::now();
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return not_run(format!("cannot start {}: {e}", program.display())),
        };
        let pgid = child.id() as i32;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) if start.elapsed() >= limits.timeout => break None,
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(_) => break None,
            }
        };
        let elapsed = start.elapsed();
        // Whatever it started dies with it.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        if let Some(uid) = uid {
            kill_user(uid);
        }
        let status = match status {
            Some(s) => Some(s),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                None
            }
        };
        let verdict = match status {
            None => Verdict::TimedOut,
            Some(s) => match (s.code(), s.signal()) {
                (Some(0), _) => Verdict::Passed,
                (Some(c), _) => Verdict::Failed(c),
                (None, Some(sig)) => Verdict::Signalled(sig),
                (None, None) => Verdict::Failed(-1),
            },
        };
        RunResult {
            verdict,
            output: tail(&out_path, 4096),
            elapsed,
        }
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Sandbox::new()
    }
}

/// Kills every process of `uid`: a child that becomes `uid` may signal all of them (`kill(-1)`).
fn kill_user(uid: u32) {
    unsafe {
        let pid = libc::fork();
        if pid == 0 {
            if libc::setgid(uid) == 0 && libc::setuid(uid) == 0 {
                // Twice: a fork bomb may have been mid-fork the first time.
                libc::kill(-1, libc::SIGKILL);
                libc::kill(-1, libc::SIGKILL);
            }
            libc::_exit(0);
        }
        if pid > 0 {
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
        }
    }
}

fn not_run(why: String) -> RunResult {
    RunResult {
        verdict: Verdict::NotRun(why),
        output: String::new(),
        elapsed: Duration::ZERO,
    }
}

fn tail(path: &Path, max: u64) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > max {
        let _ = std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(len - max));
    }
    let mut buf = Vec::new();
    let _ = f.take(max).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn python(sb: &Sandbox, code: &str) -> RunResult {
        python_named(sb, "prog.py", code)
    }

    fn python_named(sb: &Sandbox, name: &str, code: &str) -> RunResult {
        sb.run_with_files(
            Path::new("/usr/bin/python3"),
            &["-I", name],
            &[(name, code)],
            &Limits::default(),
        )
    }

    #[test]
    fn a_passing_and_a_failing_program() {
        let sb = Sandbox::new();
        assert_eq!(python(&sb, "assert 1 + 1 == 2\n").verdict, Verdict::Passed);
        let r = python(&sb, "assert 1 + 1 == 3, 'arithmetic'\n");
        assert_eq!(r.verdict, Verdict::Failed(1));
        assert!(
            r.output.contains("AssertionError: arithmetic"),
            "{}",
            r.output
        );
    }

    #[test]
    fn the_environment_is_clean() {
        std::env::set_var("NIB_SANDBOX_SECRET", "leak");
        let sb = Sandbox::new();
        let r = python(
            &sb,
            "import os\nassert 'NIB_SANDBOX_SECRET' not in os.environ, os.environ\nassert os.getcwd() == os.environ['HOME']\n",
        );
        assert_eq!(r.verdict, Verdict::Passed, "{}", r.output);
    }

    #[test]
    fn a_loop_is_stopped_at_the_timeout() {
        let sb = Sandbox::new();
        let r = python(&sb, "while True:\n    pass\n");
        assert_eq!(r.verdict, Verdict::TimedOut);
        assert!(r.elapsed < Duration::from_secs(5), "{:?}", r.elapsed);
    }

    #[test]
    fn ten_gigabytes_cannot_be_allocated() {
        let sb = Sandbox::new();
        let r = python(&sb, "x = bytearray(10 * 1024**3)\nprint('allocated')\n");
        assert_eq!(r.verdict, Verdict::Failed(1), "{}", r.output);
        assert!(r.output.contains("MemoryError"), "{}", r.output);
    }

    #[test]
    fn a_fork_bomb_is_contained_and_killed() {
        let sb = Sandbox::new();
        let name = format!("bomb{}.py", std::process::id());
        // Children leave the process group and outlive the parent; all must die.
        let code = "import os, time\nfor _ in range(100000):\n    try:\n        if os.fork() == 0:\n            os.setsid()\n            time.sleep(60)\n            os._exit(0)\n    except OSError:\n        pass\nwhile True:\n    pass\n";
        let r = python_named(&sb, &name, code);
        assert_eq!(r.verdict, Verdict::TimedOut, "{}", r.output);
        // Nothing the bomb started is left running.
        std::thread::sleep(Duration::from_millis(200));
        let left = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
            .filter(|e| {
                std::fs::read(e.path().join("cmdline"))
                    .map(|c| String::from_utf8_lossy(&c).contains(&name))
                    .unwrap_or(false)
                    && std::fs::read_to_string(e.path().join("status"))
                        .map(|s| !s.contains("State:\tZ"))
                        .unwrap_or(false)
            })
            .count();
        // Without root the children cannot all be found (they may leave the group); the
        // process limit still bounds them.
        if sb.own_user {
            assert_eq!(left, 0, "processes of the fork bomb survived");
        } else {
            eprintln!("not root: {left} fork-bomb children left to end by themselves");
        }
    }

    #[test]
    fn the_network_is_out_of_reach() {
        let sb = Sandbox::new();
        assert!(
            sb.network_isolated,
            "this machine cannot make a network namespace (needs root or unprivileged user namespaces)"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let code = format!(
            "import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\ns.sendall(b'hello')\n"
        );
        let r = python(&sb, &code);
        assert_ne!(r.verdict, Verdict::Passed, "{}", r.output);
        assert!(
            r.output.contains("Error"),
            "the connection must fail: {}",
            r.output
        );
        assert!(
            listener.accept().is_err(),
            "the sandboxed program reached a socket outside"
        );
    }
}
