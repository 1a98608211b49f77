//! `down --keep-logs DIR`: before a testbed's state directory goes, its
//! logs (every container's and daemon's `*.log` and rotated `*.log.1`) and
//! the controller's `events.jsonl` are copied to `DIR/<testbed>/`, at the
//! same relative paths, readable by everyone (0755/0644).

use std::fs;
use std::io;
use std::path::Path;

/// Whether a file of the state directory is a log worth keeping.
pub fn is_log(name: &str) -> bool {
    name.ends_with(".log")
        || name.ends_with(".log.1")
        || name.starts_with(super::layout::EVENTS_FILE)
}

/// Copies the logs under `state` to `to` (made if missing), keeping their
/// relative paths; symbolic links are not followed. Returns how many files
/// were copied.
pub fn keep_logs(state: &Path, to: &Path) -> io::Result<usize> {
    fn walk(dir: &Path, rel: &Path, to: &Path, n: &mut usize) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let name = entry.file_name();
            let rel = rel.join(&name);
            if kind.is_dir() {
                walk(&entry.path(), &rel, to, n)?;
            } else if kind.is_file() && is_log(&name.to_string_lossy()) {
                let target = to.join(&rel);
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::copy(entry.path(), &target)?;
                *n += 1;
            }
        }
        Ok(())
    }
    let mut n = 0;
    fs::create_dir_all(to)?;
    walk(state, Path::new(""), to, &mut n)?;
    super::publish_tree(to)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn logs_and_events_are_copied_at_their_paths_and_nothing_else() {
        let state = tempfile::tempdir().unwrap();
        let s = state.path();
        fs::create_dir_all(s.join("pods/default/web/logs")).unwrap();
        fs::write(s.join("pods/default/web/logs/c.log"), "hello\n").unwrap();
        fs::write(s.join("pods/default/web/logs/c.log.1"), "older\n").unwrap();
        fs::write(s.join("supervisor.log"), "sup\n").unwrap();
        fs::write(s.join("events.jsonl"), "{}\n").unwrap();
        fs::write(s.join("plan.json"), "{}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", s.join("evil.log")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let to = out.path().join("kept/tb");
        assert_eq!(keep_logs(s, &to).unwrap(), 4);
        assert_eq!(
            fs::read_to_string(to.join("pods/default/web/logs/c.log")).unwrap(),
            "hello\n"
        );
        assert!(to.join("pods/default/web/logs/c.log.1").is_file());
        assert!(to.join("supervisor.log").is_file());
        assert!(to.join("events.jsonl").is_file());
        assert!(!to.join("plan.json").exists(), "only logs");
        assert!(!to.join("evil.log").exists(), "links are not followed");
        let mode = fs::metadata(to.join("supervisor.log"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
