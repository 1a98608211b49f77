//! Telling whether a killed process is gone, still exiting, or not exiting
//! at all, and deciding from that how long `down` waits. The reading is one
//! `/proc/PID/stat`; the decision is a pure function.

use std::time::Duration;

/// Where a process stands after SIGKILL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcState {
    /// It has exited (gone, or a zombie waiting for its parent).
    Gone,
    /// It is in the kernel's exit path (`PF_EXITING`): it will be gone.
    Exiting,
    /// It has not begun to exit (the signal is pending, e.g. while it is
    /// in an uninterruptible sleep).
    Alive,
}

/// The kernel's `PF_EXITING` task flag (`include/linux/sched.h`).
const PF_EXITING: u64 = 0x4;

/// Reads where process `pid` stands.
pub fn state_of(pid: i32) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Gone;
    };
    parse_stat(&stat)
}

/// Where a process stands, from the text of its `/proc/PID/stat`.
pub fn parse_stat(stat: &str) -> ProcState {
    // The command (field 2) is in parentheses and may hold anything.
    let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 1..)) else {
        return ProcState::Gone;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next().unwrap_or("X");
    // Field 9 is the flags; `rest` starts at field 3.
    let flags: u64 = fields.nth(5).and_then(|f| f.parse().ok()).unwrap_or(0);
    match state {
        "Z" | "X" | "x" => ProcState::Gone,
        _ if flags & PF_EXITING != 0 => ProcState::Exiting,
        _ => ProcState::Alive,
    }
}

/// How long a killed process may take to begin exiting before it counts as
/// surviving SIGKILL.
pub const START_EXIT: Duration = Duration::from_secs(10);

/// How long the exits may make no progress at all (no process gone) before
/// `down` gives up on those left.
pub const NO_PROGRESS: Duration = Duration::from_secs(60);

/// What to do after a look at the killed processes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every one has exited.
    Done,
    /// Some are still exiting, or may still begin to: look again.
    Wait,
    /// These will not exit.
    Stuck(Vec<i32>),
}

/// Decides, given each killed process's state, the time since SIGKILL and
/// the time since the last process went away.
pub fn judge(states: &[(i32, ProcState)], since_kill: Duration, since_change: Duration) -> Verdict {
    let left: Vec<i32> = states
        .iter()
        .filter(|(_, s)| *s != ProcState::Gone)
        .map(|(p, _)| *p)
        .collect();
    if left.is_empty() {
        return Verdict::Done;
    }
    if since_change >= NO_PROGRESS {
        return Verdict::Stuck(left);
    }
    let not_exiting: Vec<i32> = states
        .iter()
        .filter(|(_, s)| *s == ProcState::Alive)
        .map(|(p, _)| *p)
        .collect();
    if since_kill >= START_EXIT && !not_exiting.is_empty() {
        return Verdict::Stuck(not_exiting);
    }
    Verdict::Wait
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProcState::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn stat_lines_are_read_whatever_the_command_is_called() {
        let line = |cmd: &str, state: &str, flags: u64| {
            format!(
                "1234 ({cmd}) {state} 1 1234 1234 0 -1 {flags} 100 0 0 0 5 3 0 0 20 0 1 0 4242 0"
            )
        };
        assert_eq!(parse_stat(&line("sleep", "S", 0x400000)), Alive);
        assert_eq!(parse_stat(&line("sleep", "D", 0x400004)), Exiting);
        assert_eq!(parse_stat(&line("a) Z (b", "R", 0x0)), Alive);
        assert_eq!(parse_stat(&line("x", "Z", 0x4)), Gone);
        assert_eq!(parse_stat("garbage"), Gone);
        assert_eq!(parse_stat(""), Gone);
        assert_eq!(state_of(std::process::id() as i32), Alive);
        assert_eq!(state_of(i32::MAX), Gone);
    }

    #[test]
    fn down_waits_while_processes_exit_and_names_only_real_survivors() {
        assert_eq!(judge(&[], S, S), Verdict::Done);
        assert_eq!(judge(&[(1, Gone), (2, Gone)], S, S), Verdict::Done);
        // Thousands still exiting a minute after SIGKILL, but some went
        // away recently: keep waiting.
        let many: Vec<(i32, ProcState)> = (0..5000).map(|p| (p, Exiting)).collect();
        assert_eq!(judge(&many, 50 * S, S), Verdict::Wait);
        // Not begun to exit yet, shortly after SIGKILL: wait.
        assert_eq!(judge(&[(1, Alive), (2, Exiting)], 2 * S, S), Verdict::Wait);
        // Still not exiting long after: only that one is stuck.
        assert_eq!(
            judge(&[(1, Alive), (2, Exiting), (3, Gone)], START_EXIT, S),
            Verdict::Stuck(vec![1])
        );
        // Exiting, but nothing has moved for a minute: give up on them.
        assert_eq!(
            judge(&[(1, Exiting), (2, Gone)], 5 * NO_PROGRESS, NO_PROGRESS),
            Verdict::Stuck(vec![1])
        );
    }
}
