//! What each process of a run costs, read from /proc: CPU time (user +
//! system, summed over the process and its descendants, so PostgreSQL's
//! backends count) and resident memory.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Clock ticks per second of /proc's CPU times.
fn ticks_per_second() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (parent pid, user + system ticks) of one /proc/<pid>/stat line.
fn parse_stat(stat: &str) -> Option<(u32, u64)> {
    // The command name is in parentheses and may hold spaces: fields start after the last ')'.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // After the name: state(3) ppid(4) ... utime(14) stime(15), numbered from 1 with pid and name.
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// CPU seconds used so far by `pid` alone (not its children).
pub fn own_cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    parse_stat(&stat).map_or(0.0, |(_, ticks)| ticks as f64 / ticks_per_second())
}

/// CPU seconds used so far by `pid` and every live descendant.
pub fn cpu_seconds(pid: u32) -> f64 {
    let mut processes: HashMap<u32, (u32, u64)> = HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(id) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some(parsed) = std::fs::read_to_string(entry.path().join("stat")).ok().as_deref().and_then(parse_stat) {
            processes.insert(id, parsed);
        }
    }
    let in_tree = |mut id: u32| {
        while id > 1 {
            if id == pid {
                return true;
            }
            id = processes.get(&id).map_or(0, |(parent, _)| *parent);
        }
        false
    };
    let ticks: u64 = processes.iter().filter(|(id, _)| in_tree(**id)).map(|(_, (_, ticks))| ticks).sum();
    ticks as f64 / ticks_per_second()
}

/// Resident memory of `pid` in bytes (0 if it is gone).
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_with_spaces_in_the_name_parses() {
        let line = "4242 (tokio rt) S 17 4242 17 0 -1 4194560 900 0 0 0 250 31 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_stat(line), Some((17, 281)));
    }

    #[test]
    fn this_process_is_measured() {
        let busy_until = std::time::Instant::now() + std::time::Duration::from_millis(300);
        let mut spin = 0u64;
        while std::time::Instant::now() < busy_until {
            spin = spin.wrapping_add(1);
        }
        assert!(spin > 0);
        assert!(own_cpu_seconds(std::process::id()) >= 0.2);
        assert!(cpu_seconds(std::process::id()) >= own_cpu_seconds(std::process::id()));
        assert!(rss_bytes(std::process::id()) > 0);
    }
}
