//! What /proc says about a process.
use std::fs;

/// Fields of /proc/PID/stat that tell a process from a later one that reuses its PID.
pub struct ProcStat {
    pub state: char,
    pub pgrp: i32,
    pub start_time: u64,
}

/// Fields of /proc/PID/stat; `None` when there is no such process.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// A process's command line, split at NULs; `None` when it is gone.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// This process's effective capability set (CapEff of /proc/self/status, bit N = capability N).
pub fn effective_capabilities() -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_of_self() {
        let me = std::process::id() as i32;
        let stat = proc_stat(me).unwrap();
        // Running, or sleeping while the test harness waits for other threads; never a zombie.
        assert!(
            matches!(stat.state, 'R' | 'S' | 'D'),
            "state {}",
            stat.state
        );
        assert!(stat.start_time > 0);
        assert!(proc_stat(i32::MAX).is_none());
        assert!(cmdline(me).is_some_and(|argv| !argv.is_empty()));
        assert!(cmdline(i32::MAX).is_none());
        assert!(effective_capabilities().is_some());
    }
}
