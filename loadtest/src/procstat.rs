//! CPU time and resident memory of the processes under test, from `/proc`.

use std::io;

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let (utime, stime) = parse_stat_times(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc/PID/stat"))?;
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok((utime + stime) as f64 / hz)
}

/// `utime` and `stime` (fields 14 and 15) from a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_stat_times(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    // After the name: field 3 (state) is the first; utime is field 14 → index 11.
    let utime = fields.nth(11)?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Resident set size in KiB.
pub fn rss_kib(pid: u32) -> io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no VmRSS"))
}

/// Sum over several processes (e.g. nginx's master and worker).
pub fn total<F: Fn(u32) -> io::Result<T>, T: std::iter::Sum>(pids: &[u32], f: F) -> io::Result<T> {
    pids.iter().map(|&p| f(p)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_an_awkward_name() {
        let line = "4242 (we ird) name)) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 \
                    3 0 100 1000000 200 18446744073709551615";
        assert_eq!(parse_stat_times(line), Some((1234, 567)));
        assert_eq!(parse_stat_times("garbage"), None);
    }

    #[test]
    fn own_process_uses_cpu_and_memory() {
        let me = std::process::id();
        let before = cpu_seconds(me).unwrap();
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(cpu_seconds(me).unwrap() > before, "{x}");
        assert!(rss_kib(me).unwrap() > 100);
        assert!(total(&[me, me], rss_kib).unwrap() >= 2 * 100);
    }
}
