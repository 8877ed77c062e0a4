//! CPU time and peak resident memory of a process, read from `/proc`.

/// CPU time (user + system) that process `pid` has used so far, in nanoseconds, from fields 14
/// and 15 of `/proc/PID/stat`. `None` when the process is gone or `/proc` is unreadable.
pub fn cpu_ns(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so utime (14) is f[11] and stime (15) is f[12].
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let hz = clock_ticks();
    Some((utime + stime).saturating_mul(1_000_000_000) / hz)
}

/// Peak resident set size (`VmHWM` of `/proc/PID/status`) in bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

/// Resets the peak RSS of `pid` to its current RSS (`echo 5 > /proc/PID/clear_refs`), so the
/// next [`peak_rss`] covers only what follows. Returns false when the kernel refused.
pub fn reset_peak_rss(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), b"5").is_ok()
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn clock_ticks() -> u64 {
    // Linux has reported USER_HZ = 100 in /proc on every architecture for decades.
    100
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        let t0 = cpu_ns(me).expect("own stat");
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_ns(me).unwrap() >= t0);
        assert!(peak_rss(me).unwrap() > 0);
        assert!(cpu_ns(u32::MAX).is_none());
    }
}
