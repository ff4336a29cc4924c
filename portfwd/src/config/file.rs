//! The config file on disk: [`load`] reads and checks it, [`save`] validates a config and
//! replaces the file atomically with the text the editor makes of it.

use std::{
    fs::{self, File, OpenOptions, Permissions},
    io::{self, Write as _},
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering},
};

use super::{
    edit::render_inner,
    model::{Config, ConfigError},
    schema::parse_str,
};

/// Reads and validates the config file at `path`. An empty file (or one with only comments)
/// is an empty config; a missing file is [`ConfigError::NotFound`].
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    match fs::read_to_string(path) {
        Ok(text) => parse_str(&text, path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(ConfigError::NotFound {
            path: path.to_owned(),
        }),
        Err(error) => Err(ConfigError::Io {
            path: path.to_owned(),
            action: "read",
            error,
        }),
    }
}

/// Writes `config` to `path`, keeping the file's comments where it can (the `edit` module
/// says exactly what is kept; [`render`](super::render) gives the text).
///
/// The config is validated first ([`ConfigError::Unsaved`]). The write is atomic: the text
/// goes to a temporary file in the same directory, which is fsynced and renamed over `path`,
/// then the directory is fsynced. The parent directory is created if missing. An existing
/// file's permission bits (and, when allowed, owner and group) are kept; a new file gets
/// 0644. If `path` is a symlink, its target is replaced and the link kept.
pub fn save(path: &Path, config: &Config) -> Result<(), ConfigError> {
    config.validate().map_err(|reason| ConfigError::Unsaved {
        path: path.to_owned(),
        reason,
    })?;
    let target = resolve_symlink(path);
    let existing = read_existing(&target)?;
    let (text, edited) = render_inner(existing.as_deref(), config);
    if existing.is_some() && !edited {
        tracing::warn!(
            config = %target.display(),
            "rewriting the config file in canonical form; only its leading comments are kept"
        );
    }
    write_atomic(&target, text.as_bytes())
}

/// The text of the file to be replaced, `None` when there is nothing to keep: a new file, or
/// one that is not text.
fn read_existing(path: &Path) -> Result<Option<String>, ConfigError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::InvalidData
            ) =>
        {
            Ok(None)
        }
        Err(error) => Err(ConfigError::Io {
            path: path.to_owned(),
            action: "read",
            error,
        }),
    }
}

/// The file a symlink points to (so that saving replaces the target, not the link).
fn resolve_symlink(path: &Path) -> PathBuf {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::canonicalize(path).unwrap_or_else(|_| path.to_owned())
        }
        _ => path.to_owned(),
    }
}

/// Replaces `path` by `contents` (see [`save`]).
fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), ConfigError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let io_error = |action, error| ConfigError::Io {
        path: path.to_owned(),
        action,
        error,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io_error(
            "write",
            io::Error::new(io::ErrorKind::InvalidInput, "not a file name"),
        )
    })?;
    fs::create_dir_all(dir).map_err(|e| io_error("create the directory of", e))?;
    let old = match fs::metadata(path) {
        Ok(meta) => Some(meta),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("read", e)),
    };
    let mode = old
        .as_ref()
        .map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let tmp = dir.join(format!(
        ".{}.{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));

    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(old) = &old {
            let new = file.metadata()?;
            if (new.uid(), new.gid()) != (old.uid(), old.gid())
                && let Err(e) = std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))
            {
                tracing::debug!(file = %path.display(), "cannot keep the owner of the config file: {e}");
            }
        }
        file.set_permissions(Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", e));
    }
    // Make the rename itself durable. Some file systems cannot sync a directory; the data is
    // already safe, so this is not an error.
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::debug!(dir = %dir.display(), "cannot sync the config directory: {e}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::config::tests::fwd;

    /// A fresh empty directory under the system temp dir.
    fn scratch_dir(name: &str) -> PathBuf {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "portfwd-config-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn load_errors() {
        let dir = scratch_dir("load");
        let missing = dir.join("missing.yaml");
        let e = load(&missing).unwrap_err();
        assert!(
            matches!(&e, ConfigError::NotFound { path } if *path == missing),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{}: no such file", missing.display())
        );

        let bad = dir.join("bad.yaml");
        fs::write(
            &bad,
            "# comment\nforwards:\n  - listen: \"80\"\n    to: \"1.2.3.4\"\n",
        )
        .unwrap();
        match load(&bad).unwrap_err() {
            ConfigError::Invalid {
                path,
                line,
                column,
                field,
                ..
            } => {
                assert_eq!(
                    (path, line, column, field.as_str()),
                    (bad.clone(), 4, 9, "forwards[0].to")
                );
            }
            e => panic!("{e:?}"),
        }
        let e = load(&dir).unwrap_err();
        assert!(matches!(e, ConfigError::Io { action: "read", .. }), "{e:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_is_atomic_and_keeps_permissions() {
        let dir = scratch_dir("save");
        let path = dir.join("etc/portfwd/portfwd.yaml");
        let one = Config {
            interfaces: vec![],
            forwards: vec![fwd("8080 -> 172.17.0.2:3000")],
            ..Config::default()
        };
        // A new file, in a directory that does not exist yet.
        save(&path, &one).unwrap();
        assert_eq!(load(&path).unwrap(), one);
        assert_eq!(mode(&path), 0o644);

        // An existing file keeps its mode and its comments.
        fs::write(&path, "# mine\ninterfaces: []\nforwards: []\n").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        save(&path, &one).unwrap();
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# mine\ninterfaces: []\nforwards:\n"),
            "{text}"
        );
        assert_eq!(load(&path).unwrap(), one);

        // save(load(x)) leaves the file as it was.
        save(&path, &load(&path).unwrap()).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);

        // No temporary files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["portfwd.yaml"]);

        // A symlink stays a symlink; its target is rewritten.
        let link = dir.join("link.yaml");
        symlink(&path, &link).unwrap();
        save(&link, &Config::default()).unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(load(&path).unwrap(), Config::default());
        assert_eq!(mode(&path), 0o600);

        // An invalid config is refused and the file left alone.
        let before = fs::read_to_string(&path).unwrap();
        let bad = Config {
            interfaces: vec![],
            forwards: vec![fwd("80 -> 1.2.3.4:1"), fwd("80 -> 1.2.3.4:2")],
            ..Config::default()
        };
        let e = save(&path, &bad).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "{}: not saved: forwards[1].listen: 80/tcp is already published by forwards[0]",
                path.display()
            )
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), before);

        // A failed write reports the file and leaves nothing behind.
        let e = save(&dir.join("etc/portfwd/portfwd.yaml/sub.yaml"), &one).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e:?}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
