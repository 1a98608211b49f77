//! The mirror of a directory on a scratch tmpfs, with missing mount points
//! added (steps 2 to 4 of the parent module's description).

use super::{c, disp, Kind, MountError};
use crate::runtime::child::{Script, Step};
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Adds the steps that mirror `dir` on a tmpfs with `created` added.
pub(super) fn mirror(
    script: &mut Script,
    dir: &Path,
    created: &[(PathBuf, Kind)],
    stage: &Path,
) -> Result<(), MountError> {
    let data = tmpfs_options(dir)?;
    let entries = entries(dir, stage)?;
    script.push(
        Step::Mount {
            source: Some(c("tmpfs")?),
            target: c(stage)?,
            fstype: Some(c("tmpfs")?),
            flags: 0,
            data: Some(c(data)?),
        },
        format!(
            "mounting a tmpfs on {} to mirror {}",
            disp(stage),
            disp(dir)
        ),
    );
    for src in &entries {
        mirror_entry(script, src, stage)?;
    }
    for (rel, kind) in created {
        create(script, dir, rel, *kind, stage)?;
    }
    put_in_place(script, dir, stage)
}

/// The options of a tmpfs with the mode and owner of `dir`.
fn tmpfs_options(dir: &Path) -> Result<String, MountError> {
    let meta = fs::metadata(dir).map_err(|source| MountError::Io {
        what: "look at",
        path: disp(dir),
        source,
    })?;
    Ok(format!(
        "mode={:o},uid={},gid={}",
        meta.permissions().mode() & 0o7777,
        meta.uid(),
        meta.gid()
    ))
}

/// The entries of `dir`, sorted, the one holding the scratch directory
/// `stage` first.
fn entries(dir: &Path, stage: &Path) -> Result<Vec<PathBuf>, MountError> {
    let mut entries: Vec<(bool, PathBuf)> = fs::read_dir(dir)
        .map_err(|source| MountError::Io {
            what: "list",
            path: disp(dir),
            source,
        })?
        .filter_map(|e| e.ok())
        .map(|e| {
            let path = e.path();
            // The entry holding the scratch directory goes first, while the
            // scratch tmpfs is still empty: a recursive bind copies it too.
            (!stage.starts_with(&path), path)
        })
        .collect();
    entries.sort();
    Ok(entries.into_iter().map(|(_, path)| path).collect())
}

/// Adds the steps that show the entry `src` of the mirrored directory in
/// the mirror on `stage`: a symbolic link is recreated, anything else
/// bind-mounted onto a placeholder of its type. An entry gone since it was
/// listed is skipped.
fn mirror_entry(script: &mut Script, src: &Path, stage: &Path) -> Result<(), MountError> {
    let Some(name) = src.file_name() else {
        return Ok(());
    };
    let dst = stage.join(name);
    let Ok(meta) = fs::symlink_metadata(src) else {
        return Ok(()); // gone since it was listed
    };
    if meta.file_type().is_symlink() {
        let Ok(to) = fs::read_link(src) else {
            return Ok(());
        };
        script.push(
            Step::Symlink {
                target: c(&to)?,
                path: c(&dst)?,
            },
            format!("recreating the link {} -> {}", disp(src), disp(&to)),
        );
        return Ok(());
    }
    let placeholder = if meta.is_dir() {
        Step::Mkdir {
            path: c(&dst)?,
            mode: 0o755,
        }
    } else {
        Step::Touch { path: c(&dst)? }
    };
    script.push(placeholder, format!("creating {}", disp(&dst)));
    script.push(
        Step::Mount {
            source: Some(c(src)?),
            target: c(&dst)?,
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REC,
            data: None,
        },
        format!("bind-mounting {} on {}", disp(src), disp(&dst)),
    );
    Ok(())
}

/// Adds the steps that create the missing path `rel` (below the mirrored
/// `dir`) in the mirror on `stage`: its directories, and at the end a
/// directory or file as `kind` says.
fn create(
    script: &mut Script,
    dir: &Path,
    rel: &Path,
    kind: Kind,
    stage: &Path,
) -> Result<(), MountError> {
    let mut at = stage.to_path_buf();
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let last = i + 1 == parts.len();
        let step = if last && kind == Kind::File {
            Step::Touch { path: c(&at)? }
        } else {
            Step::Mkdir {
                path: c(&at)?,
                mode: 0o755,
            }
        };
        script.push(
            step,
            format!(
                "creating {}",
                disp(&dir.join(at.strip_prefix(stage).unwrap_or(&at)))
            ),
        );
    }
    Ok(())
}

/// Adds the steps that put the mirror on `stage` where `dir` is (a
/// `chroot` for `/`, a move-mount otherwise), then empty `stage` again.
fn put_in_place(script: &mut Script, dir: &Path, stage: &Path) -> Result<(), MountError> {
    if dir == Path::new("/") {
        script.push(
            Step::Chdir { path: c(stage)? },
            format!("entering {}", disp(stage)),
        );
        script.push(
            Step::Chroot { path: c(".")? },
            "changing the root to the mirror of /",
        );
        script.push(Step::Chdir { path: c("/")? }, "entering /");
    } else {
        script.push(
            Step::Mount {
                source: Some(c(stage)?),
                target: c(dir)?,
                fstype: None,
                flags: libc::MS_MOVE,
                data: None,
            },
            format!("moving the mirror of {} into place", disp(dir)),
        );
    }
    // A recursive bind of the scratch directory's ancestor left a copy of
    // the scratch mount there; remove it so the next mirror starts empty.
    script.push(
        Step::UmountQuiet { target: c(stage)? },
        format!("unmounting {}", disp(stage)),
    );
    Ok(())
}
