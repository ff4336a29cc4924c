//! The node's files: conflists rewritten atomically with a backup, and the plugin binary
//! installed atomically.
//!
//! Runtimes watch the CNI config directory (containerd and CRI-O reload on every change) and
//! load every `.conf`, `.conflist` and `.json` file in it (libcni's `ConfFiles`). So nothing
//! half-written may ever carry those names: the new text goes to a hidden temporary file in the
//! same directory (`.NAME.portfwd-tmp`), is flushed, and is renamed over the old one, which a
//! reader sees either whole before or whole after. The previous content is kept beside it,
//! written the same way before the rename, under a name no runtime loads: `NAME.portfwd-bak`
//! before an install, `NAME.portfwd-rollback-bak` before a roll back (so that a roll back
//! keeps the original's backup, portmap's own keys included).
use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
};

use super::{Change, ConflistError, Outcome, PORTFWD_CNI, rewrite};

/// Appended to a conflist's name for its backup: the content before the last install.
pub const BACKUP_SUFFIX: &str = ".portfwd-bak";
/// The same before the last roll back.
pub const ROLLBACK_BACKUP_SUFFIX: &str = ".portfwd-rollback-bak";
const TEMP_SUFFIX: &str = ".portfwd-tmp";

/// What happened to one file.
#[derive(Debug)]
pub struct FileOutcome {
    pub path: PathBuf,
    pub result: Result<Outcome, FileError>,
}

/// Why a file was left as it was.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Conflist(#[from] ConflistError),
    #[error("a symbolic link to {0}: rewrite the file it points to, or replace the link")]
    Symlink(PathBuf),
    #[error("{action}: {source}")]
    Io {
        action: String,
        #[source]
        source: io::Error,
    },
}

fn io_error(action: impl Into<String>) -> impl FnOnce(io::Error) -> FileError {
    let action = action.into();
    move |source| FileError::Io { action, source }
}

/// Rewrites one conflist in place as `change` asks (see [`rewrite`]); a changed file is first
/// backed up ([`BACKUP_SUFFIX`], [`ROLLBACK_BACKUP_SUFFIX`]). With `dry_run` nothing is
/// written.
pub fn rewrite_file(
    path: &Path,
    change: &Change,
    allowed_versions: &[String],
    dry_run: bool,
) -> Result<Outcome, FileError> {
    // Renaming over a link would replace the link, and leave the file it points to (whoever
    // manages it) as it was.
    let link =
        fs::symlink_metadata(path).map_err(io_error(format!("reading {}", path.display())))?;
    if link.file_type().is_symlink() {
        let target =
            fs::read_link(path).map_err(io_error(format!("reading {}", path.display())))?;
        return Err(FileError::Symlink(target));
    }
    let old = fs::read_to_string(path).map_err(io_error(format!("reading {}", path.display())))?;
    let new = rewrite(&old, change, allowed_versions)?;
    if let (Some(text), false) = (&new.text, dry_run) {
        let mode = fs::metadata(path)
            .map_err(io_error(format!("reading {}", path.display())))?
            .permissions()
            .mode();
        let suffix = match change {
            Change::Install { .. } => BACKUP_SUFFIX,
            Change::Rollback => ROLLBACK_BACKUP_SUFFIX,
        };
        write_atomic(&with_suffix(path, suffix), old.as_bytes(), mode)?;
        write_atomic(path, text.as_bytes(), mode)?;
    }
    Ok(new.outcome)
}

/// Rewrites every `*.conflist` of `dir`, in name order (the order runtimes pick them in).
/// `Err` only when the directory cannot be read; each file has its own result.
pub fn rewrite_dir(
    dir: &Path,
    change: &Change,
    allowed_versions: &[String],
    dry_run: bool,
) -> Result<Vec<FileOutcome>, FileError> {
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(format!("reading {}", dir.display())))? {
        let path = entry
            .map_err(io_error(format!("reading {}", dir.display())))?
            .path();
        if path.extension().is_some_and(|e| e == "conflist") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    Ok(paths
        .into_iter()
        .map(|path| FileOutcome {
            result: rewrite_file(&path, change, allowed_versions, dry_run),
            path,
        })
        .collect())
}

/// Installs `binary` as `bin_dir/portfwd-cni` (mode 0755): copied to a temporary file in
/// `bin_dir`, then renamed over the old one, so that a runtime starting the plugin meanwhile
/// runs either the old binary or the new one, whole. Returns the installed path.
pub fn install_binary(binary: &Path, bin_dir: &Path) -> Result<PathBuf, FileError> {
    let content = fs::read(binary).map_err(io_error(format!("reading {}", binary.display())))?;
    let target = bin_dir.join(PORTFWD_CNI);
    write_atomic(&target, &content, 0o755)?;
    Ok(target)
}

/// `path` with `suffix` appended to its file name.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

/// Writes `content` to `path` through a hidden temporary file in the same directory and a
/// rename; `mode` is the new file's permission bits.
fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<(), FileError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}{TEMP_SUFFIX}"));
    let write = || -> io::Result<()> {
        let mut file = fs::File::create(&temp)?;
        file.write_all(content)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // The rename itself, on disk.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temp);
        io_error(format!("writing {}", path.display()))(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp directory, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("portfwd-cni-{tag}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const CONTAINERD: &str =
        include_str!("../../tests/fixtures/conflist/10-containerd-net.conflist");

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_rewrite_keeps_a_backup_and_the_mode_and_leaves_no_temporary_file() {
        let dir = TempDir::new("files-rewrite");
        let conf = dir.0.join("10-containerd-net.conflist");
        fs::write(&conf, CONTAINERD).unwrap();
        fs::set_permissions(&conf, fs::Permissions::from_mode(0o640)).unwrap();
        fs::write(dir.0.join("99-loopback.conf"), "{}").unwrap();
        let install = Change::Install {
            socket: None,
            append: false,
        };

        let outcomes = rewrite_dir(&dir.0, &install, &[], false).unwrap();
        assert_eq!(outcomes.len(), 1, "only .conflist files: {outcomes:?}");
        assert!(matches!(outcomes[0].result, Ok(Outcome::Replaced { .. })));
        assert_eq!(
            names(&dir.0),
            [
                "10-containerd-net.conflist",
                "10-containerd-net.conflist.portfwd-bak",
                "99-loopback.conf"
            ]
        );
        assert_eq!(
            fs::read_to_string(dir.0.join("10-containerd-net.conflist.portfwd-bak")).unwrap(),
            CONTAINERD
        );
        assert!(
            fs::read_to_string(&conf)
                .unwrap()
                .contains("\"portfwd-cni\"")
        );
        assert_eq!(
            fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
            0o640
        );

        // Again: nothing is written (the backup still holds the original).
        let before = fs::metadata(&conf).unwrap().modified().unwrap();
        let again = rewrite_dir(&dir.0, &install, &[], false).unwrap();
        assert!(matches!(
            again[0].result,
            Ok(Outcome::AlreadyInstalled { .. })
        ));
        assert_eq!(fs::metadata(&conf).unwrap().modified().unwrap(), before);
        assert_eq!(
            fs::read_to_string(dir.0.join("10-containerd-net.conflist.portfwd-bak")).unwrap(),
            CONTAINERD
        );

        // A roll back keeps the install's backup and writes its own.
        let installed = fs::read_to_string(&conf).unwrap();
        let back = rewrite_dir(&dir.0, &Change::Rollback, &[], false).unwrap();
        assert!(matches!(back[0].result, Ok(Outcome::RolledBack { .. })));
        assert_eq!(
            fs::read_to_string(
                dir.0
                    .join("10-containerd-net.conflist.portfwd-rollback-bak")
            )
            .unwrap(),
            installed
        );
        assert_eq!(
            fs::read_to_string(dir.0.join("10-containerd-net.conflist.portfwd-bak")).unwrap(),
            CONTAINERD
        );
    }

    #[test]
    fn a_dry_run_writes_nothing_and_a_broken_file_stays_as_it_was() {
        let dir = TempDir::new("files-dry");
        let conf = dir.0.join("10-containerd-net.conflist");
        fs::write(&conf, CONTAINERD).unwrap();
        let broken = dir.0.join("20-broken.conflist");
        fs::write(&broken, "{\"plugins\": [").unwrap();
        let install = Change::Install {
            socket: None,
            append: false,
        };
        let outcomes = rewrite_dir(&dir.0, &install, &[], true).unwrap();
        assert!(matches!(outcomes[0].result, Ok(Outcome::Replaced { .. })));
        assert!(matches!(
            outcomes[1].result,
            Err(FileError::Conflist(ConflistError::Json(_)))
        ));
        assert_eq!(fs::read_to_string(&conf).unwrap(), CONTAINERD);
        assert_eq!(
            names(&dir.0),
            ["10-containerd-net.conflist", "20-broken.conflist"]
        );
    }

    #[test]
    fn a_symbolic_link_is_left_as_it_is() {
        let dir = TempDir::new("files-link");
        let managed = dir.0.join("managed.json");
        fs::write(&managed, CONTAINERD).unwrap();
        let link = dir.0.join("10-net.conflist");
        std::os::unix::fs::symlink(&managed, &link).unwrap();
        let install = Change::Install {
            socket: None,
            append: false,
        };
        let outcomes = rewrite_dir(&dir.0, &install, &[], false).unwrap();
        assert!(
            matches!(&outcomes[0].result, Err(FileError::Symlink(t)) if *t == managed),
            "{outcomes:?}"
        );
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&managed).unwrap(), CONTAINERD);
    }

    #[test]
    fn the_binary_is_installed_executable_over_an_old_one() {
        let dir = TempDir::new("files-bin");
        let src = dir.0.join("new-binary");
        fs::write(&src, b"new").unwrap();
        let bin = dir.0.join("bin");
        fs::create_dir(&bin).unwrap();
        fs::write(bin.join(PORTFWD_CNI), b"old").unwrap();
        let installed = install_binary(&src, &bin).unwrap();
        assert_eq!(installed, bin.join(PORTFWD_CNI));
        assert_eq!(fs::read(&installed).unwrap(), b"new");
        assert_eq!(
            fs::metadata(&installed).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(names(&bin), [PORTFWD_CNI]);
    }
}
