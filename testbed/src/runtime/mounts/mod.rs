//! The mount plan of a container: what its private mount namespace must
//! show (the hosts file on `/etc/hosts`, each volume on its `mountPath`, its
//! working directory), turned into [`Step`]s for the child.
//!
//! # Mount paths that do not exist on the host
//!
//! Containers see the host's filesystem, so a `mountPath` such as `/data`
//! usually does not exist. Creating it on the host is not acceptable (a
//! testbed must not leave directories in `/`), and mounting an empty tmpfs
//! over the nearest existing parent would hide that parent's contents (for
//! `/data`: everything). What testbed does instead, only inside the
//! container's own mount namespace:
//!
//! 1. take the nearest existing ancestor `D` of the missing path (`/` for
//!    `/data`), list its entries (before `fork`);
//! 2. mount a tmpfs on a scratch directory (`STATE_DIR/mnt`), give it `D`'s
//!    mode and owner, and mirror `D` into it: each subdirectory and file of
//!    `D` is recursively bind-mounted onto a placeholder of the same name,
//!    each symbolic link recreated with the same target;
//! 3. create the missing directories (or file) in the tmpfs;
//! 4. put the tmpfs where `D` is: `chroot` into it when `D` is `/`, a
//!    move-mount onto `D` otherwise.
//!
//! The container so sees exactly what the host has in `D` (same files,
//! read-write, submounts included), plus the new mount point. The host never
//! changes. The differences a container can notice: new entries it creates
//! directly in `D` live in its tmpfs and vanish when it exits; entries of `D`
//! cannot be renamed or removed (they are mount points); entries created in
//! `D` on the host after the container started are not visible to it.
//!
//! A path below another mount of the same container (a volume at `/data`
//! and another at `/data/sub`, or a working directory inside a volume) is
//! created in that volume's directory, which belongs to the testbed. A path
//! that exists with the wrong type (a file where a directory is mounted) is
//! an error.

use super::child::{cstring, Script, Step};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

mod mirror;

use mirror::mirror;

/// The type of a mount point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
}

impl Kind {
    fn noun(self) -> &'static str {
        match self {
            Kind::Dir => "a directory",
            Kind::File => "a file",
        }
    }
}

/// One thing the container's mount namespace must have.
#[derive(Clone, Debug)]
pub struct Want {
    /// The path inside the container (absolute).
    pub target: String,
    /// Directory or file.
    pub kind: Kind,
    /// What is bind-mounted there; `None` only makes sure the path exists
    /// (a working directory).
    pub source: Option<String>,
}

/// Why a mount plan cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The path is relative or has `..`.
    #[error("`{0}` must be an absolute path without `..`")]
    NotAbsolute(String),
    /// The path exists with the other type.
    #[error("cannot mount {want} on `{path}`: it exists and is not {want}")]
    WrongKind {
        /// The path.
        path: String,
        /// What was to be mounted.
        want: &'static str,
    },
    /// An ancestor of the path is not a directory.
    #[error("cannot create `{path}`: `{ancestor}` is not a directory")]
    NotADirectory {
        /// The path.
        path: String,
        /// The ancestor.
        ancestor: String,
    },
    /// What is to be mounted does not exist.
    #[error("`{source_path}` (to be mounted on `{target}`) does not exist as {kind}; prepare the state directory first")]
    MissingSource {
        /// The source.
        source_path: String,
        /// The target.
        target: String,
        /// Its expected type.
        kind: &'static str,
    },
    /// A path contains a NUL byte.
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
    /// A file system operation failed.
    #[error("cannot {what} `{path}`: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: String,
        /// The cause.
        source: io::Error,
    },
}

/// A container's mounts as steps for the child.
#[derive(Debug)]
pub(crate) struct MountPlan {
    /// The steps, to run in the child after `unshare(CLONE_NEWNS)` and
    /// making `/` private.
    pub script: Script,
}

/// A bind mount: target, source and type.
type Bind = (PathBuf, PathBuf, Kind);

/// The missing paths to create, by the nearest existing directory they are
/// made under (relative to it), with their types.
type Mirrors = BTreeMap<PathBuf, Vec<(PathBuf, Kind)>>;

/// Plans `wants` (bind mounts and paths that must exist). `stage` is an
/// existing empty directory used as the scratch mount point; `state` the
/// testbed's state directory, the only place on the host where missing
/// paths may be created (inside volumes).
pub(crate) fn plan(wants: &[Want], stage: &Path, state: &Path) -> Result<MountPlan, MountError> {
    let mut wants: Vec<(PathBuf, &Want)> = wants
        .iter()
        .map(|w| normalize(&w.target).map(|t| (t, w)))
        .collect::<Result<_, _>>()?;
    // Parents before children, so a volume inside another lands on top;
    // stable, so a working directory comes after the volume at its path.
    wants.sort_by_key(|(t, _)| t.components().count());

    let mut binds: Vec<Bind> = Vec::new();
    let mut mirrors: Mirrors = BTreeMap::new();
    for (target, want) in &wants {
        make_target(target, want.kind, &binds, &mut mirrors, state)?;
        if let Some(source) = &want.source {
            let source = checked_source(source, want.kind, target)?;
            binds.push((target.clone(), source, want.kind));
        }
    }

    let mut script = Script::default();
    // Ancestors sort before their descendants, so a mirror of `/opt` is made
    // inside the mirror of `/`.
    for (dir, created) in &mirrors {
        mirror(&mut script, dir, created, stage)?;
    }
    for (target, source, kind) in &binds {
        bind_step(&mut script, target, source, *kind)?;
    }
    Ok(MountPlan { script })
}

/// Makes sure mount point `target` will exist as `kind`: inside the volume
/// of an earlier bind when one covers it, on the host when it exists there,
/// otherwise by a mirror of its nearest existing ancestor (added to
/// `mirrors`).
fn make_target(
    target: &Path,
    kind: Kind,
    binds: &[Bind],
    mirrors: &mut Mirrors,
    state: &Path,
) -> Result<(), MountError> {
    let under_bind = binds
        .iter()
        .filter(|(t, _, _)| target.starts_with(t))
        .max_by_key(|(t, _, _)| t.components().count());
    match under_bind {
        Some((bt, bs, bkind)) => {
            if *bkind == Kind::File && !(bt == target && kind == Kind::File) {
                return Err(MountError::NotADirectory {
                    path: disp(target),
                    ancestor: disp(bt),
                });
            }
            let rel = target.strip_prefix(bt).unwrap_or(Path::new(""));
            ensure_in_volume(&bs.join(rel), kind, state, target)
        }
        None => match fs::metadata(target) {
            Ok(m) => check_kind(&m, kind, target),
            Err(e) if missing(&e) => {
                let (dir, rel) = nearest_existing(target)?;
                mirrors.entry(dir).or_default().push((rel, kind));
                Ok(())
            }
            Err(source) => Err(MountError::Io {
                what: "look at",
                path: disp(target),
                source,
            }),
        },
    }
}

/// The source of a bind on `target`, which must exist as `kind`.
fn checked_source(source: &str, kind: Kind, target: &Path) -> Result<PathBuf, MountError> {
    let source = PathBuf::from(source);
    let ok = fs::metadata(&source).is_ok_and(|m| match kind {
        Kind::Dir => m.is_dir(),
        Kind::File => !m.is_dir(),
    });
    if !ok {
        return Err(MountError::MissingSource {
            source_path: disp(&source),
            target: disp(target),
            kind: kind.noun(),
        });
    }
    Ok(source)
}

/// The step bind-mounting `source` on `target` (recursively for a
/// directory).
fn bind_step(
    script: &mut Script,
    target: &Path,
    source: &Path,
    kind: Kind,
) -> Result<(), MountError> {
    let flags = match kind {
        Kind::Dir => libc::MS_BIND | libc::MS_REC,
        Kind::File => libc::MS_BIND,
    };
    script.push(
        Step::Mount {
            source: Some(c(source)?),
            target: c(target)?,
            fstype: None,
            flags,
            data: None,
        },
        format!("bind-mounting {} on {}", disp(source), disp(target)),
    );
    Ok(())
}

/// Makes sure `host` (inside a volume of the testbed) exists as `kind`,
/// creating it when it lies inside the state directory.
fn ensure_in_volume(
    host: &Path,
    kind: Kind,
    state: &Path,
    target: &Path,
) -> Result<(), MountError> {
    match fs::metadata(host) {
        Ok(m) => return check_kind(&m, kind, target),
        Err(e) if missing(&e) => {}
        Err(source) => {
            return Err(MountError::Io {
                what: "look at",
                path: disp(host),
                source,
            })
        }
    }
    if !host.starts_with(state) {
        return Err(MountError::NotADirectory {
            path: disp(target),
            ancestor: disp(host),
        });
    }
    let io = |what, source| MountError::Io {
        what,
        path: disp(host),
        source,
    };
    match kind {
        Kind::Dir => fs::create_dir_all(host).map_err(|e| io("create", e)),
        Kind::File => {
            if let Some(parent) = host.parent() {
                fs::create_dir_all(parent).map_err(|e| io("create", e))?;
            }
            fs::File::create(host)
                .map(drop)
                .map_err(|e| io("create", e))
        }
    }
}

/// Whether a lookup failed because the path does not exist (or an
/// ancestor is not a directory, which the caller then reports).
fn missing(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR)
}

/// Whether `meta` is of type `kind`; an error naming `path` if not.
fn check_kind(meta: &fs::Metadata, kind: Kind, path: &Path) -> Result<(), MountError> {
    if meta.is_dir() == (kind == Kind::Dir) {
        Ok(())
    } else {
        Err(MountError::WrongKind {
            path: disp(path),
            want: kind.noun(),
        })
    }
}

/// The nearest existing ancestor of the missing `path` (canonical, so
/// symbolic links in it are resolved) and the rest of `path` below it.
fn nearest_existing(path: &Path) -> Result<(PathBuf, PathBuf), MountError> {
    for anc in path.ancestors().skip(1) {
        match fs::metadata(anc) {
            Ok(m) if m.is_dir() => {
                let rel = path.strip_prefix(anc).unwrap_or(path).to_path_buf();
                let dir = fs::canonicalize(anc).map_err(|source| MountError::Io {
                    what: "resolve",
                    path: disp(anc),
                    source,
                })?;
                return Ok((dir, rel));
            }
            Ok(_) => {
                return Err(MountError::NotADirectory {
                    path: disp(path),
                    ancestor: disp(anc),
                })
            }
            Err(_) if fs::symlink_metadata(anc).is_ok() => {
                // A dangling symbolic link: creating below it would fail.
                return Err(MountError::NotADirectory {
                    path: disp(path),
                    ancestor: disp(anc),
                });
            }
            Err(_) => {}
        }
    }
    Err(MountError::NotAbsolute(disp(path)))
}

/// `path` without `.` components; refuses relative paths and `..`.
pub(crate) fn normalize(path: &str) -> Result<PathBuf, MountError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(MountError::NotAbsolute(path.to_string()));
    }
    let mut out = PathBuf::from("/");
    for comp in p.components() {
        match comp {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(MountError::NotAbsolute(path.to_string()))
            }
        }
    }
    Ok(out)
}

/// `p` as a C string; an error if it holds a NUL byte.
fn c(p: impl AsRef<std::ffi::OsStr>) -> Result<CString, MountError> {
    use std::os::unix::ffi::OsStrExt;
    let p = p.as_ref();
    cstring(p.as_bytes()).ok_or_else(|| MountError::Nul(p.to_string_lossy().into_owned()))
}

/// `p` for messages.
fn disp(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::testutil::TempDir;

    fn want(target: &str, kind: Kind, source: Option<&str>) -> Want {
        Want {
            target: target.into(),
            kind,
            source: source.map(Into::into),
        }
    }

    #[test]
    fn existing_targets_are_plain_binds_and_missing_ones_mirror_their_parent() {
        let dir = TempDir::new();
        let state = dir.path().join("state");
        let stage = state.join("mnt");
        let vol = state.join("vol");
        fs::create_dir_all(&stage).unwrap();
        fs::create_dir_all(&vol).unwrap();
        fs::create_dir_all(dir.path().join("exists")).unwrap();
        let exists = dir.path().join("exists").display().to_string();
        let missing = dir.path().join("missing/deeper").display().to_string();
        let vol_s = vol.display().to_string();
        let p = plan(
            &[
                want(&exists, Kind::Dir, Some(&vol_s)),
                want(&missing, Kind::Dir, Some(&vol_s)),
            ],
            &stage,
            &state,
        )
        .expect("plan");
        let (steps, descriptions) = p.script.split();
        let text = descriptions.join("\n");
        assert!(
            text.contains(&format!("mirror {}", dir.path().display())),
            "{text}"
        );
        assert!(
            text.contains(&format!("bind-mounting {vol_s} on {exists}")),
            "{text}"
        );
        assert!(
            text.contains(&format!("moving the mirror of {}", dir.path().display())),
            "{text}"
        );
        assert!(
            matches!(steps.last(), Some(Step::Mount { flags, .. }) if *flags & libc::MS_BIND != 0)
        );
        // Nothing was created on the host.
        assert!(!dir.path().join("missing").exists());
    }

    #[test]
    fn paths_inside_a_volume_are_created_in_the_volume_and_bad_ones_refused() {
        let dir = TempDir::new();
        let state = dir.path().join("state");
        let stage = state.join("mnt");
        let vol = state.join("vol");
        fs::create_dir_all(&stage).unwrap();
        fs::create_dir_all(&vol).unwrap();
        let vol_s = vol.display().to_string();
        let root = dir.path().display().to_string();
        plan(
            &[
                want(&format!("{root}/exists-not/sub"), Kind::Dir, None),
                want(&format!("{root}/exists-not"), Kind::Dir, Some(&vol_s)),
            ],
            &stage,
            &state,
        )
        .expect("plan");
        assert!(
            vol.join("sub").is_dir(),
            "working dir inside the volume is created there"
        );

        fs::write(dir.path().join("file"), "").unwrap();
        let err = plan(
            &[want(&format!("{root}/file"), Kind::Dir, Some(&vol_s))],
            &stage,
            &state,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("exists and is not a directory"), "{err}");
        let err = plan(
            &[want(&format!("{root}/file/x"), Kind::Dir, Some(&vol_s))],
            &stage,
            &state,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("is not a directory"), "{err}");
        let err = plan(&[want("relative", Kind::Dir, None)], &stage, &state).unwrap_err();
        assert!(matches!(err, MountError::NotAbsolute(_)));
        let err = plan(&[want("/a/../b", Kind::Dir, None)], &stage, &state).unwrap_err();
        assert!(matches!(err, MountError::NotAbsolute(_)));
        let err = plan(
            &[want(
                &format!("{root}/x"),
                Kind::Dir,
                Some("/nonexistent-tbrt"),
            )],
            &stage,
            &state,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }
}
