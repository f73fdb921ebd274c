//! The process's own metrics, read from `/proc/self` at scrape time under the names every
//! Prometheus client uses: `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
//! `process_cpu_seconds_total`, `process_open_fds`, `process_start_time_seconds`. Outside
//! Linux (no `/proc`) there are none.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/self/stat` (`USER_HZ`, 100 on every Linux target).
const TICKS_PER_SECOND: f64 = 100.0;

pub(super) fn render() -> String {
    let mut out = String::new();
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = |field: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1024)
    };
    if let Some(rss) = kib("VmRSS:") {
        gauge(
            &mut out,
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            rss as f64,
        );
    }
    if let Some(virt) = kib("VmSize:") {
        gauge(
            &mut out,
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            virt as f64,
        );
    }
    if let Some((cpu, start)) = cpu_and_start() {
        let _ = writeln!(
            out,
            "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds."
        );
        let _ = writeln!(out, "# TYPE process_cpu_seconds_total counter");
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        if let Some(start) = start {
            gauge(
                &mut out,
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds.",
                start,
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            &mut out,
            "process_open_fds",
            "Number of open file descriptors.",
            fds.count() as f64,
        );
    }
    out
}

fn gauge(out: &mut String, name: &str, help: &str, value: f64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

/// CPU seconds used, and the start time (from the boot time in `/proc/stat`).
fn cpu_and_start() -> Option<(f64, Option<f64>)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing paren.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 (utime, stime) and 22 (starttime) of proc(5); `after` starts at 3.
    let tick = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = (tick(14)? + tick(15)?) / TICKS_PER_SECOND;
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    });
    let start = boot
        .zip(tick(22))
        .map(|(boot, ticks)| boot + ticks / TICKS_PER_SECOND);
    Some((cpu, start))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process() {
        let text = super::render();
        if std::path::Path::new("/proc/self/stat").exists() {
            assert!(text.contains("process_resident_memory_bytes "), "{text}");
            assert!(text.contains("process_cpu_seconds_total "), "{text}");
            assert!(text.contains("process_open_fds "), "{text}");
            assert!(text.contains("process_start_time_seconds "), "{text}");
        }
    }
}
