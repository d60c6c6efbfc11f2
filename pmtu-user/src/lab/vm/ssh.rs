//! ssh to the guest: pmtu's own key, the guest's host key in a known_hosts of its own, and a
//! configuration file with them and a control socket, all in the lab's state dir (never
//! ~/.ssh). REMOTE_SSH for the guest is `pmtu-remote -F <state>/ssh/config`, so the suite, `pmtu
//! lab exec` and a person (`ip netns exec <lab>-local ssh -F <state>/ssh/config pmtu-remote`)
//! all reach it the same way, over one master connection opened at boot: under TCG a login
//! costs 1-3 s, a command over the master about 0.2 s.
use std::{
    fs,
    io::Read as _,
    net::IpAddr,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};

/// The name the guest's host key is known by (independent of its address).
pub const GUEST_ALIAS: &str = "pmtu-remote";

/// ssh to the guest: pmtu's settings in a configuration file of the lab's state dir.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSsh {
    settings: Vec<(&'static str, String)>,
    /// The configuration file.
    config: PathBuf,
    control_path: PathBuf,
    /// The network namespace ssh runs in; `None`: this process's.
    netns: Option<String>,
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

impl GuestSsh {
    /// The guest at `addr` (REMOTE_ADDR), reached from namespace `netns`, with the keys in
    /// `keys.dir`; the configuration file goes to `keys.dir/config`.
    pub fn new(keys: &GuestKeys, addr: IpAddr, netns: Option<&str>) -> GuestSsh {
        GuestSsh {
            settings: vec![
                ("HostName", addr.to_string()),
                ("User", "root".to_string()),
                ("BatchMode", "yes".to_string()),
                ("IdentitiesOnly", "yes".to_string()),
                ("IdentityFile", keys.identity.display().to_string()),
                ("UserKnownHostsFile", keys.known_hosts.display().to_string()),
                ("GlobalKnownHostsFile", "/dev/null".to_string()),
                ("StrictHostKeyChecking", "yes".to_string()),
                ("HostKeyAlias", GUEST_ALIAS.to_string()),
                // The cheapest key exchange for the emulated guest (the default adds a
                // post-quantum one).
                ("KexAlgorithms", "curve25519-sha256".to_string()),
                (
                    "ControlPath",
                    keys.dir.join("control").display().to_string(),
                ),
                ("ConnectTimeout", "10".to_string()),
                ("ServerAliveInterval", "5".to_string()),
                ("LogLevel", "ERROR".to_string()),
            ],
            config: keys.dir.join("config"),
            control_path: keys.dir.join("control"),
            netns: netns.map(String::from),
        }
    }

    /// The configuration file's text: one `Host pmtu-remote` block.
    pub fn config_text(&self) -> String {
        let mut out = format!("# pmtu's guest: `ssh -F THIS_FILE {GUEST_ALIAS}` from LOCAL's namespace\nHost {GUEST_ALIAS}\n");
        for (k, v) in &self.settings {
            out.push_str(&format!("  {k} {v}\n"));
        }
        out
    }

    pub fn write_config(&self) -> Result<()> {
        fs::write(&self.config, self.config_text())
            .with_context(|| format!("writing {}", self.config.display()))
    }

    /// REMOTE_SSH for the guest: the alias and the configuration (never ~/.ssh: with `-F`
    /// ssh reads no other file).
    pub fn remote_ssh(&self) -> String {
        format!("{GUEST_ALIAS} -F {}", self.config.display())
    }

    fn command(&self, extra: &[&str]) -> Result<Command> {
        let mut cmd = crate::net::netns::command(self.netns.as_deref(), "ssh")?;
        cmd.arg("-F")
            .arg(&self.config)
            .args(extra)
            .arg(GUEST_ALIAS)
            .stdin(Stdio::null());
        Ok(cmd)
    }

    /// Opens the master connection (`ssh -M -N`, in a session of its own) and waits until it
    /// takes commands. Written config first ([`GuestSsh::write_config`]).
    pub fn start_master(&self, log: &Path, timeout: Duration) -> Result<Master> {
        let _ = fs::remove_file(&self.control_path);
        let log_file =
            fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd =
            self.command(&["-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N"])?;
        cmd.stdout(Stdio::null()).stderr(log_file);
        // SAFETY: setsid is async-signal-safe.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                nix::unistd::setsid()?;
                Ok(())
            });
        }
        let child = cmd.spawn().context(
            "starting ssh: `cargo xtask setup` installs openssh-client (or `apt-get install \
             openssh-client`)",
        )?;
        let mut master = Master {
            child: Some(child),
            control_path: self.control_path.clone(),
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = master
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                master.child = None;
                let mut text = String::new();
                let _ = fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
                bail!("ssh to the guest failed ({status}): {}", text.trim());
            }
            if self.control_path.exists() && self.check_master() {
                return Ok(master);
            }
            if crate::signals::requested() {
                bail!("interrupted while logging in on the guest");
            }
            if Instant::now() >= deadline {
                bail!(
                    "ssh to the guest did not log in within {} s",
                    timeout.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_master(&self) -> bool {
        self.command(&["-O", "check"])
            .and_then(|mut c| {
                Ok(c.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()?
                    .success())
            })
            .unwrap_or(false)
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

    #[test]
    fn the_guest_config_never_reads_the_users_files() {
        let keys = GuestKeys {
            dir: PathBuf::from("/run/pmtu/vm/ssh"),
            identity: PathBuf::from("/run/pmtu/vm/ssh/id_ed25519"),
            authorized_keys: String::new(),
            host_key: Vec::new(),
            known_hosts: PathBuf::from("/run/pmtu/vm/ssh/known_hosts"),
        };
        let ssh = GuestSsh::new(&keys, "192.0.2.2".parse().unwrap(), Some("vm-local"));
        let config = ssh.config_text();
        for want in [
            "Host pmtu-remote\n",
            "  HostName 192.0.2.2\n",
            "  IdentityFile /run/pmtu/vm/ssh/id_ed25519\n",
            "  UserKnownHostsFile /run/pmtu/vm/ssh/known_hosts\n",
            "  StrictHostKeyChecking yes\n",
            "  ControlPath /run/pmtu/vm/ssh/control\n",
        ] {
            assert!(config.contains(want), "{want}: {config}");
        }
        assert!(!config.contains(".ssh"), "{config}");
        assert_eq!(ssh.remote_ssh(), "pmtu-remote -F /run/pmtu/vm/ssh/config");
        // What the remote layer accepts: the destination first.
        assert!(crate::remote::ssh_words(&ssh.remote_ssh()).is_ok());
    }
}
