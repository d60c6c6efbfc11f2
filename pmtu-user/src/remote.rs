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
use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

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
                let argv = self.ssh_argv(script);
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                netns::run(local_netns.as_deref(), "ssh", &argv)
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
