//! CPU time and context switches of processes and threads, read from /proc, for the
//! benchmarks that report them. Each bench pulls this in with `#[path]`; not every bench
//! uses every helper.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// utime + stime from a `stat` file of /proc, in seconds.
pub fn cpu_seconds_of(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds per thread name of a process (threads that share a name are summed).
pub fn cpu_by_thread(pid: u32) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        let cpu = cpu_seconds_of(&task.path().join("stat").to_string_lossy());
        *out.entry(name.trim().to_owned()).or_insert(0.0) += cpu;
    }
    out
}

/// Context switches (voluntary + involuntary) of all of a process's threads so far: each
/// one is a thread going to sleep or being put off its core, which costs far more CPU on
/// this kind of virtual machine than the work between them.
pub fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .map(|task| {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Read and write calls on files and pipes (not sockets) of a whole process so far, from
/// `/proc/PID/io` (`syscr`, `syscw`): the journal's and SQLite's writes among them.
pub fn file_calls(pid: u32) -> (u64, u64) {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        io.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("syscr:"), field("syscw:"))
}
