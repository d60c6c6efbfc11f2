//! Commands for REMOTE over ssh, with real argv and one master connection.
//!
//! Two kinds of target share this: the VM guest (pmtu's own key, known_hosts and control
//! socket in the lab's state dir, never ~/.ssh; ssh run inside LOCAL's namespace, where the
//! guest's link is) and a real REMOTE named by REMOTE_SSH (split into words as a shell would;
//! a value that starts with `-` is refused, since `-oProxyCommand=...` would run a command here
//! as root). Either way `--` ends ssh's options before the command, and the command's words
//! are quoted for REMOTE's shell. A ControlMaster connection makes each command one round
//! trip over an open session instead of a new login (1-3 s under TCG, about 0.2 s over the
//! master).
use std::{
    fs,
    io::Read as _,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

/// The name the guest's host key is known by (independent of its address).
pub const GUEST_ALIAS: &str = "pmtu-remote";
/// Where masters for real remotes keep their sockets.
pub const REMOTE_CONTROL_DIR: &str = "/run/pmtu/ssh";

/// How to reach one REMOTE.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ssh {
    /// pmtu's options, before the destination.
    options: Vec<String>,
    /// The destination and any options the user gave after it (REMOTE_SSH's words).
    target: Vec<String>,
    /// The network namespace ssh runs in; `None`: this process's.
    netns: Option<String>,
    control_path: PathBuf,
}

/// The key files of a guest, in the lab's state dir.
#[derive(Clone, Debug)]
pub struct GuestKeys {
    pub dir: PathBuf,
    /// pmtu's private key (`id_ed25519`) and its public half in authorized_keys form.
    pub identity: PathBuf,
    pub authorized_keys: String,
    /// The guest's private host key, for its initramfs.
    pub host_key: Vec<u8>,
    pub known_hosts: PathBuf,
}

impl GuestKeys {
    /// Makes a client key and a host key in `dir` (with `ssh-keygen`) and a known_hosts that
    /// trusts exactly that host key under [`GUEST_ALIAS`].
    pub fn generate(dir: &Path) -> Result<GuestKeys> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let identity = dir.join("id_ed25519");
        let host = dir.join("ssh_host_ed25519_key");
        for key in [&identity, &host] {
            for f in [key.clone(), key.with_extension("pub")] {
                let _ = fs::remove_file(f);
            }
            let out = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "pmtu", "-f"])
                .arg(key)
                .stdin(Stdio::null())
                .output()
                .context(
                    "running ssh-keygen: `cargo xtask setup` installs openssh-client (or \
                     `apt-get install openssh-client`)",
                )?;
            if !out.status.success() {
                bail!(
                    "ssh-keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        let public = |key: &Path| -> Result<String> {
            let text = fs::read_to_string(key.with_extension("pub"))
                .with_context(|| format!("reading {}.pub", key.display()))?;
            let mut words = text.split_whitespace();
            match (words.next(), words.next()) {
                (Some(kind), Some(blob)) => Ok(format!("{kind} {blob}")),
                _ => bail!("{}.pub is not an ssh public key", key.display()),
            }
        };
        let known_hosts = dir.join("known_hosts");
        fs::write(&known_hosts, format!("{GUEST_ALIAS} {}\n", public(&host)?))
            .with_context(|| format!("writing {}", known_hosts.display()))?;
        Ok(GuestKeys {
            dir: dir.to_path_buf(),
            authorized_keys: format!("{} pmtu\n", public(&identity)?),
            host_key: fs::read(&host).with_context(|| format!("reading {}", host.display()))?,
            identity,
            known_hosts,
        })
    }
}

impl Ssh {
    /// The VM guest at `addr`, reached from namespace `netns`, with the keys in `keys.dir`.
    pub fn guest(keys: &GuestKeys, addr: IpAddr, netns: Option<&str>) -> Ssh {
        let control_path = keys.dir.join("control");
        let opt = |o: String| ["-o".to_string(), o];
        let mut options = vec!["-F".to_string(), "none".to_string()];
        for o in [
            "BatchMode=yes".to_string(),
            "User=root".to_string(),
            "IdentitiesOnly=yes".to_string(),
            format!("IdentityFile={}", keys.identity.display()),
            format!("UserKnownHostsFile={}", keys.known_hosts.display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            "StrictHostKeyChecking=yes".to_string(),
            format!("HostKeyAlias={GUEST_ALIAS}"),
            format!("ControlPath={}", control_path.display()),
            "ConnectTimeout=10".to_string(),
            "ServerAliveInterval=5".to_string(),
            "LogLevel=ERROR".to_string(),
        ] {
            options.extend(opt(o));
        }
        Ssh {
            options,
            target: vec![addr.to_string()],
            netns: netns.map(String::from),
            control_path,
        }
    }

    /// A real REMOTE from REMOTE_SSH (`user@host`, optionally followed by ssh options such as
    /// `-p 2222`), with a master connection kept for a minute under `control_dir`.
    pub fn remote(remote_ssh: &str, control_dir: &Path, netns: Option<&str>) -> Result<Ssh> {
        let target = split_remote_ssh(remote_ssh)?;
        let control_path = control_dir.join("%C");
        let mut options = Vec::new();
        for o in [
            "BatchMode=yes".to_string(),
            "ConnectTimeout=5".to_string(),
            "ControlMaster=auto".to_string(),
            format!("ControlPath={}", control_path.display()),
            "ControlPersist=60".to_string(),
        ] {
            options.extend(["-o".to_string(), o]);
        }
        Ok(Ssh {
            options,
            target,
            netns: netns.map(String::from),
            control_path,
        })
    }

    pub fn control_path(&self) -> &Path {
        &self.control_path
    }

    /// ssh's argv (without `ssh` itself) for one command, each word quoted for REMOTE's shell.
    pub fn command_argv(&self, program: &str, args: &[&str]) -> Vec<String> {
        let mut words = vec![program];
        words.extend_from_slice(args);
        self.script_argv(&shell_words::join(words))
    }

    /// ssh's argv for a shell script that REMOTE's shell runs as it is (several commands in
    /// one round trip).
    pub fn script_argv(&self, script: &str) -> Vec<String> {
        let mut argv = self.options.clone();
        argv.extend(self.target.iter().cloned());
        argv.push("--".to_string());
        argv.push(script.to_string());
        argv
    }

    fn command(&self, argv: &[String]) -> Result<Command> {
        let mut cmd = crate::netns::command(self.netns.as_deref(), "ssh")?;
        cmd.args(argv).stdin(Stdio::null());
        Ok(cmd)
    }

    /// Runs one command on REMOTE; on failure the error carries its stderr.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let what = shell_words::join(std::iter::once(program).chain(args.iter().copied()));
        self.exec(&self.command_argv(program, args), &what)
    }

    /// Runs a shell script on REMOTE (one round trip).
    pub fn run_script(&self, script: &str) -> Result<String> {
        self.exec(&self.script_argv(script), script)
    }

    fn exec(&self, argv: &[String], what: &str) -> Result<String> {
        let out = self
            .command(argv)?
            .output()
            .context("running ssh: `apt-get install openssh-client`")?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            // 255: ssh itself failed (connection, authentication); else the command's status.
            if out.status.code() == Some(255) {
                bail!("ssh to REMOTE failed: {}", stderr.trim());
            }
            bail!(
                "`{what}` on REMOTE failed ({}): {}",
                out.status,
                stderr.trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Opens the master connection (`ssh -M -N`) as a child of this process and waits until it
    /// takes commands. The connection ends when the [`Master`] is dropped.
    pub fn start_master(&self, log: &Path, timeout: Duration) -> Result<Master> {
        let _ = fs::remove_file(&self.control_path);
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut argv = self.options.clone();
        argv.extend(
            ["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N"].map(String::from),
        );
        argv.extend(self.target.iter().cloned());
        let mut cmd = self.command(&argv)?;
        cmd.stdout(Stdio::null()).stderr(log_file);
        let child = cmd.spawn().context("starting ssh")?;
        let mut master = Master {
            child: Some(child),
            control_path: self.control_path.clone(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = master.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                master.child = None;
                let mut text = String::new();
                let _ = fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
                bail!(
                    "ssh to REMOTE ({}) failed ({status}): {}",
                    self.target.join(" "),
                    text.trim()
                );
            }
            if self.control_path.exists() && self.check_master() {
                return Ok(master);
            }
            if Instant::now() >= deadline {
                bail!(
                    "ssh to REMOTE ({}) did not log in within {} s",
                    self.target.join(" "),
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_master(&self) -> bool {
        let mut argv = self.options.clone();
        argv.extend(["-O", "check"].map(String::from));
        argv.extend(self.target.iter().cloned());
        self.command(&argv)
            .and_then(|mut c| {
                Ok(c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success())
            })
            .unwrap_or(false)
    }

    /// An ssh_config with the same settings, for a person: `ssh -F FILE pmtu-remote`.
    pub fn config_text(&self) -> String {
        let mut out = format!("Host {GUEST_ALIAS}\n");
        if let Some(host) = self.target.first() {
            out.push_str(&format!("  HostName {host}\n"));
        }
        for pair in self.options.chunks(2) {
            if let [flag, value] = pair {
                if flag == "-o" {
                    if let Some((k, v)) = value.split_once('=') {
                        out.push_str(&format!("  {k} {v}\n"));
                    }
                }
            }
        }
        out
    }
}

/// REMOTE_SSH as words, the way a shell splits them; refused when empty, unbalanced, or
/// starting with `-` (an option where the destination belongs).
pub fn split_remote_ssh(value: &str) -> Result<Vec<String>> {
    let words = shell_words::split(value)
        .map_err(|e| anyhow!("REMOTE_SSH='{value}': cannot split it into words: {e}"))?;
    match words.first() {
        None => bail!("REMOTE_SSH is empty: give the login, e.g. root@192.0.2.2"),
        Some(first) if first.starts_with('-') => bail!(
            "REMOTE_SSH='{value}': it must start with the destination (user@host), not an \
             option; options may follow it, e.g. 'root@host -p 2222'"
        ),
        Some(_) => Ok(words),
    }
}

/// The master connection; dropping it closes the connection.
pub struct Master {
    child: Option<Child>,
    control_path: PathBuf,
}

impl Master {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Keeps the connection open when this is dropped (its pidfile finds it later).
    pub fn detach(&mut self) {
        self.child = None;
        self.control_path = PathBuf::new();
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.control_path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.control_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &str) -> GuestKeys {
        GuestKeys {
            dir: PathBuf::from(dir),
            identity: PathBuf::from(format!("{dir}/id_ed25519")),
            authorized_keys: String::new(),
            host_key: Vec::new(),
            known_hosts: PathBuf::from(format!("{dir}/known_hosts")),
        }
    }

    #[test]
    fn remote_ssh_is_split_like_a_shell_and_options_first_are_refused() {
        assert_eq!(
            split_remote_ssh("root@host -p 2222").unwrap(),
            ["root@host", "-p", "2222"]
        );
        assert_eq!(
            split_remote_ssh("'root@host' -o 'User=a b'").unwrap(),
            ["root@host", "-o", "User=a b"]
        );
        for bad in ["-oProxyCommand=touch /tmp/x", " -p 22 host", "", "   ", "root@'host"] {
            assert!(split_remote_ssh(bad).is_err(), "{bad}");
        }
        let err = split_remote_ssh("-oProxyCommand=x").unwrap_err().to_string();
        assert!(err.contains("must start with the destination"), "{err}");
    }

    #[test]
    fn commands_end_options_and_are_quoted_for_the_remote_shell() {
        let ssh = Ssh::remote("root@host -p 2222", Path::new("/run/pmtu/ssh"), None).unwrap();
        let argv = ssh.command_argv("ip", &["route", "get", "198.51.100.22; reboot"]);
        let dd = argv.iter().position(|a| a == "--").unwrap();
        assert_eq!(argv[dd - 3..dd], ["root@host", "-p", "2222"]);
        assert_eq!(argv[dd + 1], "ip route get '198.51.100.22; reboot'");
        assert_eq!(argv.len(), dd + 2);
        assert!(argv.contains(&"ControlPath=/run/pmtu/ssh/%C".to_string()));
        assert!(argv.contains(&"ControlMaster=auto".to_string()));
    }

    #[test]
    fn guest_options_never_read_the_users_files() {
        let ssh = Ssh::guest(&keys("/run/pmtu/vm/ssh"), "192.0.2.2".parse().unwrap(), Some("vm-local"));
        let argv = ssh.script_argv("ip route flush cache && ip -6 route flush cache");
        assert_eq!(argv[..2], ["-F", "none"]);
        for want in [
            "IdentityFile=/run/pmtu/vm/ssh/id_ed25519",
            "UserKnownHostsFile=/run/pmtu/vm/ssh/known_hosts",
            "StrictHostKeyChecking=yes",
            "ControlPath=/run/pmtu/vm/ssh/control",
        ] {
            assert!(argv.iter().any(|a| a == want), "{want}: {argv:?}");
        }
        assert!(!argv.iter().any(|a| a.contains(".ssh")), "{argv:?}");
        assert_eq!(
            argv[argv.len() - 3..],
            ["192.0.2.2", "--", "ip route flush cache && ip -6 route flush cache"]
        );
        let config = ssh.config_text();
        assert!(config.contains("  HostName 192.0.2.2\n"), "{config}");
        assert!(config.contains("  HostKeyAlias pmtu-remote\n"), "{config}");
    }
}
