//! Signals to child processes (the devnet and tests supervise validators).

/// Sends `signal` (e.g. `libc::SIGTERM`) to process `pid`. Returns false if
/// the process does not exist or may not be signalled.
pub fn send_signal(pid: u32, signal: i32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    unsafe { libc::kill(pid, signal) == 0 }
}
