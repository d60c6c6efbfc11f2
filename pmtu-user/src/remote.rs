//! How commands reach REMOTE: inside its network namespace (a lab), or over ssh (a real REMOTE
//! or a guest), started from LOCAL's namespace so the connection leaves through LOCAL_IF.
//!
//! REMOTE_SSH is split into words as a shell would split it (`root@host -p 2222`); a first word
//! that starts with `-` is refused (it would be read as an ssh option, e.g. a ProxyCommand run
//! here as root), and `--` always separates ssh's words from REMOTE's command.
use anyhow::{anyhow, bail, Context as _, Result};

use crate::net::netns;

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
            Self::Ssh { words, local_netns } => {
                let mut argv: Vec<&str> = vec!["-o", "BatchMode=yes", "-o", "ConnectTimeout=5"];
                argv.extend(words.iter().map(String::as_str));
                argv.push("--");
                argv.push(program);
                argv.extend_from_slice(args);
                netns::run(local_netns.as_deref(), "ssh", &argv)
                    .with_context(|| format!("on REMOTE over ssh: `{program}`"))
            }
        }
    }
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
}
