//! How commands reach REMOTE: inside its network namespace (a lab), or over ssh (a real REMOTE
//! or a guest), started from LOCAL's namespace so the connection leaves through LOCAL_IF.
//!
//! REMOTE_SSH is split into words as a shell would split it (`root@host -p 2222`); a first word
//! that starts with `-` is refused (it would be read as an ssh option, e.g. a ProxyCommand run
//! here as root), `--` always separates ssh's words from REMOTE's command, and the command's
//! words are quoted for REMOTE's shell. One master connection carries every command
//! (ControlMaster, kept a minute after the last one): a login costs far more than a command
//! over an open connection. A REMOTE_SSH that brings its own configuration (`-F FILE`, as a VM
//! lab's does) uses that file's settings as they are.
//!
//! Over that connection one `sh` per destination stays open for the whole run ([`Session`]):
//! each script is written to it and its output, error output and status read back, so a
//! command costs one round trip instead of an ssh client, a channel, a login shell and a fork
//! (about 0.15 s each on an emulated guest). When the session fails, the command runs on a
//! channel of its own instead.
use std::{
    collections::HashMap,
    fs,
    io::{BufRead as _, BufReader, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Stdio},
    sync::Mutex,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::net::netns;

/// Where the master connections to real REMOTEs keep their sockets (one per destination).
pub const CONTROL_DIR: &str = "/run/pmtu/ssh";

/// Where REMOTE's commands run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Remote {
    /// A network namespace of this machine.
    Netns(String),
    /// `ssh WORDS -- COMMAND`, run inside `local_netns` (None: this process's namespace).
    Ssh {
        words: Vec<String>,
        local_netns: Option<String>,
    },
}

impl Remote {
    /// From the configuration: REMOTE_NETNS wins; else REMOTE_SSH; else there is no way.
    pub fn new(
        remote_netns: Option<&str>,
        remote_ssh: Option<&str>,
        local_netns: Option<&str>,
    ) -> Result<Self> {
        match (remote_netns, remote_ssh) {
            (Some(ns), _) => Ok(Self::Netns(ns.to_string())),
            (None, Some(login)) => Ok(Self::Ssh {
                words: ssh_words(login)?,
                local_netns: local_netns.map(str::to_string),
            }),
            (None, None) => Err(anyhow!(
                "neither REMOTE_NETNS nor REMOTE_SSH is set: there is no way to run commands on \
                 REMOTE (set REMOTE_SSH, e.g. REMOTE_SSH='root@192.0.2.2')"
            )),
        }
    }

    /// Runs `program args` on REMOTE and returns its standard output; a command that fails is
    /// reported as that failure (its exit status and standard error), nothing more.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        match self {
            Self::Netns(ns) => netns::run(Some(ns), program, args),
            Self::Ssh { .. } => {
                let words = std::iter::once(program).chain(args.iter().copied());
                self.run_script(&shell_words::join(words))
                    .with_context(|| format!("on REMOTE over ssh: `{program}`"))
            }
        }
    }

    /// Runs a shell script on REMOTE (`sh -c` in its namespace, or REMOTE's login shell over
    /// ssh): several commands in one round trip.
    pub fn run_script(&self, script: &str) -> Result<String> {
        match self {
            Self::Netns(ns) => netns::run(Some(ns), "sh", &["-c", script]),
            Self::Ssh { local_netns, .. } => {
                if !self.brings_config() {
                    ensure_control_dir()?;
                }
                if let Some(result) = self.run_in_session(script) {
                    return result;
                }
                let argv = self.ssh_argv(script);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                netns::run(local_netns.as_deref(), "ssh", &argv)
            }
        }
    }

    /// The script through this destination's session; `None` when there is no working
    /// session (then the caller runs it on a channel of its own).
    fn run_in_session(&self, script: &str) -> Option<Result<String>> {
        let Self::Ssh { words, local_netns } = self else {
            return None;
        };
        let key = format!("{local_netns:?} {words:?}");
        let mut guard = SESSIONS.lock().unwrap_or_else(|p| p.into_inner());
        let sessions = guard.get_or_insert_with(HashMap::new);
        if !sessions.contains_key(&key) {
            match Session::open(self) {
                Ok(session) => {
                    sessions.insert(key.clone(), session);
                }
                Err(e) => {
                    log::debug!("no shell session on REMOTE: {e:#}");
                    return None;
                }
            }
        }
        let session = sessions.get_mut(&key)?;
        match session.run(script) {
            Ok((0, stdout, _)) => Some(Ok(stdout)),
            Ok((status, _, stderr)) => Some(Err(anyhow!(
                "`{script}` on REMOTE failed (exit status: {status}): {}",
                stderr.trim()
            ))),
            Err(e) => {
                log::debug!("the shell session on REMOTE broke: {e:#}");
                if let Some(mut dead) = sessions.remove(&key) {
                    dead.close();
                }
                None
            }
        }
    }

    /// Whether REMOTE_SSH names its own ssh configuration (`-F FILE`).
    fn brings_config(&self) -> bool {
        matches!(self, Self::Ssh { words, .. } if words.iter().any(|w| w == "-F" || w.starts_with("-F")))
    }

    /// ssh's arguments for one script: pmtu's options, REMOTE_SSH's words, `--`, the script.
    pub fn ssh_argv(&self, script: &str) -> Vec<String> {
        let Self::Ssh { words, .. } = self else {
            return Vec::new();
        };
        let mut argv: Vec<String> = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"]
            .map(String::from)
            .to_vec();
        if !self.brings_config() {
            for o in [
                "ControlMaster=auto".to_string(),
                format!("ControlPath={CONTROL_DIR}/%C"),
                "ControlPersist=60".to_string(),
            ] {
                argv.extend(["-o".to_string(), o]);
            }
        }
        argv.extend(words.iter().cloned());
        argv.push("--".to_string());
        argv.push(script.to_string());
        argv
    }
}

/// The open sessions, by destination.
static SESSIONS: Mutex<Option<HashMap<String, Session>>> = Mutex::new(None);

/// Ends every session (a lab that goes down ends the connections to its REMOTE first).
pub fn close_sessions() {
    let mut guard = SESSIONS.lock().unwrap_or_else(|p| p.into_inner());
    for (_, mut session) in guard.iter_mut().flat_map(|s| s.drain()) {
        session.close();
    }
}

/// One `sh` on REMOTE reading scripts from its standard input.
pub struct Session {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next: u64,
}

impl Session {
    fn open(remote: &Remote) -> Result<Session> {
        let Remote::Ssh { local_netns, .. } = remote else {
            bail!("a session is for ssh");
        };
        let mut child = netns::command(local_netns.as_deref(), "ssh")?
            .args(remote.ssh_argv("exec sh"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("starting ssh")?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("ssh without pipes");
        };
        let mut session = Session {
            child,
            stdin,
            stdout: BufReader::new(stdout),
            next: 0,
        };
        // One file for the commands' standard error, removed when the shell ends.
        session
            .stdin
            .write_all(
                b"__pmtu_err=\"${TMPDIR:-/tmp}/.pmtu-err.$$\"; trap 'rm -f \"$__pmtu_err\"' EXIT; \
                  trap 'rm -f \"$__pmtu_err\"; exit 1' HUP INT TERM PIPE\n",
            )
            .context("writing to the shell session")?;
        // A first round trip proves the shell answers.
        match session.run("true") {
            Ok((0, _, _)) => Ok(session),
            other => {
                session.close();
                bail!("the shell session does not answer: {other:?}")
            }
        }
    }

    /// Runs `script` in a subshell of the session: (status, stdout, stderr).
    fn run(&mut self, script: &str) -> Result<(i32, String, String)> {
        self.next += 1;
        let end = format!("__pmtu_end_{}_{}", std::process::id(), self.next);
        // The output is read up to the marker that follows it on a line of its own, so output
        // without a final newline stays exact; standard error comes back through the session's
        // file, read by the shell itself (a program started on an emulated REMOTE costs more
        // than the round trip).
        let wrapped = format!(
            "( {script}\n) </dev/null 2>\"$__pmtu_err\"; __pmtu_s=$?; \
             printf '\\n{end} %d\\n' \"$__pmtu_s\"; \
             while IFS= read -r __pmtu_l || [ -n \"$__pmtu_l\" ]; do printf '%s\\n' \"$__pmtu_l\"; \
             done <\"$__pmtu_err\"; printf '\\n{end}\\n'\n"
        );
        self.stdin
            .write_all(wrapped.as_bytes())
            .and_then(|()| self.stdin.flush())
            .context("writing to the shell session")?;
        let out = self.read_until(format!("\n{end} ").as_bytes())?;
        let status_line = self.read_until(b"\n")?;
        let status: i32 = String::from_utf8_lossy(&status_line)
            .trim()
            .parse()
            .context("reading a status from the shell session")?;
        let err = self.read_until(format!("\n{end}\n").as_bytes())?;
        Ok((
            status,
            String::from_utf8_lossy(&out).into_owned(),
            String::from_utf8_lossy(&err).into_owned(),
        ))
    }

    /// Reads up to `marker` and returns what came before it.
    fn read_until(&mut self, marker: &[u8]) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        loop {
            let last = *marker.last().unwrap_or(&b'\n');
            let n = self
                .stdout
                .read_until(last, &mut buf)
                .context("reading from the shell session")?;
            if n == 0 {
                bail!("the shell session ended");
            }
            if buf.ends_with(marker) {
                buf.truncate(buf.len() - marker.len());
                return Ok(buf);
            }
        }
    }

    fn close(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control sockets' directory, private to root.
fn ensure_control_dir() -> Result<()> {
    let dir = Path::new(CONTROL_DIR);
    fs::create_dir_all(dir).with_context(|| format!("creating {CONTROL_DIR}"))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {CONTROL_DIR} private"))
}

/// REMOTE_SSH as ssh's words.
pub fn ssh_words(login: &str) -> Result<Vec<String>> {
    let words = shell_words::split(login)
        .with_context(|| format!("REMOTE_SSH='{login}' is not valid shell quoting"))?;
    match words.first() {
        None => bail!("REMOTE_SSH is empty: give the login, e.g. REMOTE_SSH='root@192.0.2.2'"),
        Some(w) if w.starts_with('-') => bail!(
            "REMOTE_SSH='{login}' starts with an option (`{w}`): put the login first, e.g. \
             REMOTE_SSH='root@host -p 2222'"
        ),
        Some(_) => Ok(words),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ssh_is_split_like_a_shell_and_options_first_are_refused() {
        assert_eq!(
            ssh_words("root@host -p 2222").unwrap(),
            ["root@host", "-p", "2222"]
        );
        assert_eq!(
            ssh_words("root@host -o 'ProxyJump a b'").unwrap(),
            ["root@host", "-o", "ProxyJump a b"]
        );
        for bad in [
            "-oProxyCommand=touch /tmp/x",
            " -p 22 host",
            "",
            "root@host 'unclosed",
        ] {
            assert!(ssh_words(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn netns_wins_over_ssh_and_nothing_is_an_error() {
        assert_eq!(
            Remote::new(Some("x-remote"), Some("root@h"), None).unwrap(),
            Remote::Netns("x-remote".into())
        );
        assert_eq!(
            Remote::new(None, Some("root@h -p 2"), Some("x-local")).unwrap(),
            Remote::Ssh {
                words: vec!["root@h".into(), "-p".into(), "2".into()],
                local_netns: Some("x-local".into())
            }
        );
        assert!(Remote::new(None, None, None).is_err());
    }

    #[test]
    fn ssh_commands_are_quoted_and_share_a_master() {
        let r = Remote::new(None, Some("root@host -p 2222"), None).unwrap();
        let argv = r.ssh_argv(&shell_words::join([
            "ip",
            "route",
            "get",
            "198.51.100.22; reboot",
        ]));
        let dd = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(argv[dd - 3..dd], ["root@host", "-p", "2222"]);
        assert_eq!(argv[dd + 1..], ["ip route get '198.51.100.22; reboot'"]);
        for want in [
            "ControlMaster=auto",
            "ControlPath=/run/pmtu/ssh/%C",
            "BatchMode=yes",
        ] {
            assert!(argv.iter().any(|a| a == want), "{want}: {argv:?}");
        }
        // A REMOTE_SSH with its own configuration (a VM lab's) keeps its own control socket.
        let vm = Remote::new(None, Some("pmtu-remote -F /run/pmtu/vm/ssh/config"), None).unwrap();
        let argv = vm.ssh_argv("uname -r");
        assert!(!argv.iter().any(|a| a.starts_with("Control")), "{argv:?}");
        assert_eq!(
            argv[argv.len() - 5..],
            [
                "pmtu-remote",
                "-F",
                "/run/pmtu/vm/ssh/config",
                "--",
                "uname -r"
            ]
        );
    }
}
