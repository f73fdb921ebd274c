//! Child processes and what `/proc` says about them: CPU time, resident memory, and
//! whether anything heavy (a compiler) shares the machine.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};

/// Clock ticks per second of `/proc/*/stat` (USER_HZ; 100 on every Linux we run on).
const TICKS_PER_SEC: f64 = 100.0;

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Proc {
    pub child: Child,
    pub pid: u32,
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Proc {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        command
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = child.id().expect("pid of a running child");
        Proc {
            child,
            pid,
            log: log.to_path_buf(),
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(mut self, grace: Duration) {
        signal(self.pid, "TERM");
        if tokio::time::timeout(grace, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }

    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid)
    }

    /// Peak resident set (VmHWM).
    pub fn peak_rss_kb(&self) -> u64 {
        status_kb(self.pid, "VmHWM:")
    }

    pub fn rss_kb(&self) -> u64 {
        status_kb(self.pid, "VmRSS:")
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The last lines of the process's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

pub fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// User + system CPU time of a process (0 once it is gone).
pub fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name (which may contain spaces) start at field 3.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    Duration::from_secs_f64(ticks as f64 / TICKS_PER_SEC)
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn all_pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of a process and its direct children (PostgreSQL: the postmaster and its
/// backends).
pub fn tree_cpu_time(root: u32) -> Duration {
    all_pids()
        .into_iter()
        .filter(|&pid| pid == root || parent_of(pid) == Some(root))
        .map(cpu_time)
        .sum()
}

fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Busy and total jiffies of the whole machine (`/proc/stat`).
pub fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    let values: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Heavy processes sharing the machine (compilers, other load), by command name.
pub fn heavy_neighbours() -> Vec<String> {
    let me = std::process::id();
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            let comm = comm.trim();
            [
                "rustc",
                "cargo",
                "cc1",
                "cc1plus",
                "ld",
                "clippy-driver",
                "cargo-nextest",
            ]
            .contains(&comm)
            .then(|| format!("{comm}({pid})"))
        })
        .collect()
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Waits until no compiler runs (up to `max_wait`); returns what was still running.
pub async fn wait_for_quiet(max_wait: Duration) -> Vec<String> {
    let started = Instant::now();
    let mut announced = false;
    loop {
        let heavy = heavy_neighbours();
        if heavy.is_empty() || started.elapsed() >= max_wait {
            return heavy;
        }
        if !announced {
            eprintln!(
                "waiting for other heavy processes to finish: {}",
                heavy.join(", ")
            );
            announced = true;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

pub fn uid() -> u32 {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(1000)
}
