//! Reloading the config. SIGHUP, `portfwd reload` and a change to the file (watched) all end
//! in [`State::reload`]:
//!
//! 1. The file is loaded and validated completely ([`config::load`]: an error names the file,
//!    line and field). Then everything else that can be known before touching the datapath is
//!    checked: room for the forwards, `socket_group` exists, the new metrics address can be
//!    bound (it is bound here). Any failure rejects the reload and nothing has changed.
//! 2. Under the state lock (so no control request sees a half state), the new forwards are
//!    staged: written complete beside the running ones, under the inactive generation of the
//!    forwarding tables ([`super::staging`]); then interfaces and mode are applied. Forwards
//!    that stay exactly as they were keep their counters.
//! 3. The staged forwards go live in one step for the datapath: every packet is translated by
//!    the old config or by the new one, never by part of each, and a forward present in both
//!    never stops forwarding. If a map update or a required attachment fails before that, the
//!    staged forwards are dropped and the interfaces set back: the forwards, their counter
//!    slots and the interfaces are as they were before the reload.
//!
//! File changes are watched on the file's directory (so editors' and `config::save`'s
//! write-and-rename are seen), debounced, and ignored when the file says what is already
//! running: that is the case after the daemon's own writes from `portfwd add`/`del`.
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use notify::Watcher as _;
use portfwd_common::maps::MAX_FORWARDS;
use tokio::sync::{Mutex, mpsc};

use super::{access::Access, state::State};
use crate::{
    config::{self, Config},
    error::{Error, chain},
    metrics,
    publish::{Forward, Listen},
};

/// What asked for the reload (for the log).
#[derive(Clone, Copy, Debug)]
pub enum Trigger {
    Signal,
    Request,
    FileChange,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Request => "portfwd reload",
            Trigger::FileChange => "config file changed",
        }
    }
}

/// The forwards' difference between what runs and a new config.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Diff {
    /// Listen sides no longer published.
    pub removed: Vec<Listen>,
    /// Same listen side, another target: (old, new).
    pub changed: Vec<(Forward, Forward)>,
    /// New listen sides.
    pub added: Vec<Forward>,
}

impl Diff {
    pub fn between(running: &[Forward], wanted: &[Forward]) -> Diff {
        let mut d = Diff::default();
        for old in running {
            match wanted.iter().find(|f| f.listen == old.listen) {
                None => d.removed.push(old.listen),
                Some(new) if new != old => d.changed.push((old.clone(), new.clone())),
                Some(_) => {}
            }
        }
        for new in wanted {
            if !running.iter().any(|f| f.listen == new.listen) {
                d.added.push(new.clone());
            }
        }
        d
    }

    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.changed.is_empty() && self.added.is_empty()
    }
}

/// Whether two configs mean the same running state (forwards in any order).
pub fn same_config(a: &Config, b: &Config) -> bool {
    let sorted = |c: &Config| {
        let mut f: Vec<String> = c.forwards.iter().map(|f| f.to_string()).collect();
        f.sort();
        f
    };
    Config {
        forwards: Vec::new(),
        ..a.clone()
    } == Config {
        forwards: Vec::new(),
        ..b.clone()
    } && sorted(a) == sorted(b)
}

/// `FILE:LINE` of top-level `key:` in the config file, or `FILE` when it cannot be found.
fn location_of(path: &Path, key: &str) -> String {
    let line = std::fs::read_to_string(path).ok().and_then(|text| {
        text.lines()
            .position(|l| {
                l.strip_prefix(key)
                    .is_some_and(|rest| rest.trim_start().starts_with(':'))
            })
            .map(|i| i + 1)
    });
    match line {
        Some(n) => format!("{}:{n}", path.display()),
        None => path.display().to_string(),
    }
}

impl State {
    /// Re-reads the config file and applies it, all or nothing. Returns a one-line summary.
    pub(super) fn reload(&mut self, trigger: Trigger) -> Result<String, Error> {
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
        let result = config::load(&self.config_path)
            .map_err(Error::from)
            .and_then(|cfg| self.apply_reload(&cfg));
        // The forwards changed (or were rolled back) without publish/unpublish.
        self.sync_reserved_ports();
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        match result {
            Ok(summary) => {
                tracing::info!(config = %self.config_path.display(), trigger = trigger.name(), "reloaded: {summary}");
                Ok(summary)
            }
            Err(e) => {
                let e = Error::ReloadRejected(Box::new(e));
                tracing::error!(trigger = trigger.name(), "{}", chain(&e));
                Err(e)
            }
        }
    }

    /// Applies `cfg` (already validated by [`config::load`]) as described in the module docs.
    pub(super) fn apply_reload(&mut self, cfg: &Config) -> Result<String, Error> {
        // 1. Everything that can fail before a change.
        let running = self.config_forwards();
        let diff = Diff::between(&running, &cfg.forwards);
        let wanted = self.wanted(cfg);
        if wanted.len() > MAX_FORWARDS as usize {
            return Err(Error::TooManyForwards(MAX_FORWARDS));
        }
        let access = Access::resolve(cfg.socket_group.as_deref()).map_err(|e| Error::Setting {
            location: location_of(&self.config_path, "socket_group"),
            field: "socket_group",
            source: e.into(),
        })?;
        let running_metrics = self.metrics.as_ref().map(|m| m.addr);
        let new_listener = match cfg.metrics {
            Some(addr) if Some(addr) != running_metrics => {
                Some(metrics::bind(addr).map_err(|e| Error::Setting {
                    location: location_of(&self.config_path, "metrics"),
                    field: "metrics",
                    source: e.into(),
                })?)
            }
            _ => None,
        };
        if access != self.access {
            access.apply_to(&self.socket)?;
        }

        // 2. The new forwards, staged beside the running ones (unless they are the same).
        let unchanged = wanted.len() == self.forwards.len()
            && wanted
                .iter()
                .all(|(f, o)| self.forwards.iter().any(|a| &a.fwd == f && &a.origin == o));
        let staged = if unchanged {
            None
        } else {
            match self.stage(&wanted) {
                Ok(staged) => Some(staged),
                Err(e) => {
                    let _ = self.access.apply_to(&self.socket);
                    return Err(e);
                }
            }
        };
        // Interfaces and mode: on failure, back to the old settings, the staged forwards
        // dropped.
        let old_cfg = std::mem::replace(
            &mut self.cfg,
            Config {
                forwards: Vec::new(),
                ..cfg.clone()
            },
        );
        let settings_changed = old_cfg.interfaces != cfg.interfaces || old_cfg.mode != cfg.mode;
        let failed = if settings_changed {
            self.apply_host(self.host.clone()).into_iter().next()
        } else {
            None
        };
        // 3. The forwards go live in one step.
        let failed = match (failed, staged) {
            (Some(e), staged) => {
                if let Some(staged) = staged {
                    self.discard(staged);
                }
                Some(e)
            }
            (None, Some(staged)) => self.go_live(staged).err(),
            (None, None) => None,
        };
        if let Some(e) = failed {
            self.cfg = old_cfg;
            if settings_changed {
                let _ = self.apply_host(self.host.clone());
            }
            let _ = self.access.apply_to(&self.socket);
            return Err(e);
        }

        // 4. Commit (nothing below can fail).
        self.follow_reload(&running, &diff);
        self.configure_docker(cfg.docker.as_ref());
        self.access = access;
        match (cfg.metrics, new_listener) {
            (None, _) => self.metrics = None,
            (Some(_), Some(listener)) => {
                self.metrics = None;
                match self.metrics_source.clone() {
                    Some(source) => match metrics::spawn(listener, source) {
                        Ok(ep) => self.metrics = Some(ep),
                        Err(e) => tracing::error!("{}", chain(&e)),
                    },
                    None => tracing::error!("metrics: no source (daemon not started)"),
                }
            }
            (Some(_), None) => {}
        }
        if old_cfg.pin_dir != cfg.pin_dir {
            tracing::warn!(
                pin_dir = %cfg.pin_dir.display(),
                "pin_dir changed: it takes effect when the daemon restarts"
            );
        }
        if old_cfg.max_flows != cfg.max_flows {
            let shown = |n: Option<u32>| n.map_or("default".to_owned(), |n| n.to_string());
            tracing::warn!(
                from = %shown(old_cfg.max_flows),
                to = %shown(cfg.max_flows),
                "max_flows changed: it takes effect when the daemon restarts (the flows are \
                 carried over to tables of the new size)"
            );
        }
        let mut summary = if diff.is_empty() {
            "forwards unchanged".to_owned()
        } else {
            format!(
                "forwards: {} added, {} removed, {} changed",
                diff.added.len(),
                diff.removed.len(),
                diff.changed.len()
            )
        };
        if settings_changed {
            summary.push_str("; interfaces re-evaluated");
        }
        Ok(summary)
    }
}

/// The symlink a Kubernetes ConfigMap volume swaps to update its files at once.
const CONFIGMAP_DATA: &str = "..data";

/// Watches the config file; sends one `()` per burst of changes to it (including a ConfigMap
/// volume's update, which swaps its `..data` symlink).
pub fn watch(path: &Path) -> Result<(notify::RecommendedWatcher, mpsc::Receiver<()>), Error> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_owned());
    let (tx, rx) = mpsc::channel(1);
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        if matches!(ev.kind, notify::EventKind::Access(_)) {
            return;
        }
        // A Kubernetes ConfigMap volume updates the file by swapping the `..data` symlink
        // its entries point through: the file's own name never appears in the event.
        let ours = |p: &PathBuf| {
            p.file_name() == name.as_deref() || p.file_name() == Some(CONFIGMAP_DATA.as_ref())
        };
        if ev.paths.iter().any(ours) {
            // A full channel already holds a wake-up: this change will be seen by it.
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| Error::Config(watch_error(path, e)))?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Error::Config(watch_error(path, e)))?;
    Ok((watcher, rx))
}

fn watch_error(path: &Path, e: notify::Error) -> config::ConfigError {
    config::ConfigError::Io {
        path: path.to_owned(),
        action: "watch",
        error: std::io::Error::other(e),
    }
}

/// How long a burst of changes must be quiet before the file is read.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// After a change to the file: waits for the burst to settle, then reloads unless the file
/// says what already runs. An invalid file is logged once per distinct error.
pub async fn on_file_change(state: &Arc<Mutex<State>>, rx: &mut mpsc::Receiver<()>) {
    loop {
        tokio::time::sleep(DEBOUNCE).await;
        if rx.try_recv().is_err() {
            break;
        }
    }
    let mut st = state.lock().await;
    match config::load(&st.config_path) {
        Ok(cfg) if same_config(&cfg, &st.config()) => {
            st.last_watch_error = None;
        }
        Ok(_) => {
            st.last_watch_error = None;
            let _ = st.reload(Trigger::FileChange);
        }
        Err(config::ConfigError::NotFound { .. }) => {
            tracing::warn!(config = %st.config_path.display(), "config file removed; running forwards kept");
        }
        Err(e) => {
            let msg = e.to_string();
            if st.last_watch_error.as_deref() != Some(&msg) {
                tracing::error!("config file changed but is invalid; nothing changed: {msg}");
                st.last_watch_error = Some(msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str, to: &str) -> Forward {
        Forward::new(s.parse().unwrap(), to.parse().unwrap()).unwrap()
    }

    #[test]
    fn diff_sorts_forwards_into_removed_changed_added() {
        let running = [f("8080", "10.0.0.2:80"), f("8081", "10.0.0.2:81")];
        let wanted = [f("8081", "10.0.0.3:81"), f("53/udp", "10.0.0.2:53")];
        let d = Diff::between(&running, &wanted);
        assert_eq!(d.removed, vec!["8080".parse().unwrap()]);
        assert_eq!(d.changed, vec![(running[1].clone(), wanted[0].clone())]);
        assert_eq!(d.added, vec![wanted[1].clone()]);
        assert!(Diff::between(&running, &running).is_empty());
    }

    #[test]
    fn same_config_ignores_forward_order_only() {
        let a = Config {
            forwards: vec![f("8080", "10.0.0.2:80"), f("8081", "10.0.0.2:81")],
            ..Config::default()
        };
        let mut b = a.clone();
        b.forwards.reverse();
        assert!(same_config(&a, &b));
        b.socket_group = Some("portfwd".into());
        assert!(!same_config(&a, &b));
    }

    /// A ConfigMap volume: `portfwd.yaml -> ..data/portfwd.yaml`, `..data -> ..2026_1`; an
    /// update writes `..2026_2/` and renames a new `..data` over the old one.
    #[test]
    fn a_configmap_update_is_seen() {
        use std::os::unix::fs::symlink;
        let dir = std::env::temp_dir().join(format!("portfwd-cm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for v in ["..2026_1", "..2026_2"] {
            std::fs::create_dir_all(dir.join(v)).unwrap();
            std::fs::write(dir.join(v).join("portfwd.yaml"), format!("# {v}\n")).unwrap();
        }
        symlink("..2026_1", dir.join("..data")).unwrap();
        symlink("..data/portfwd.yaml", dir.join("portfwd.yaml")).unwrap();
        let (_watcher, mut rx) = watch(&dir.join("portfwd.yaml")).unwrap();
        symlink("..2026_2", dir.join("..data_tmp")).unwrap();
        std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while rx.try_recv().is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the swap was not seen"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(dir.join("portfwd.yaml")).unwrap();
        assert_eq!(text, "# ..2026_2\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn settings_are_located_by_key() {
        let dir = std::env::temp_dir().join(format!("portfwd-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("c.yaml");
        std::fs::write(&p, "# c\nmode: tc\nsocket_group : nosuch\n").unwrap();
        assert_eq!(
            location_of(&p, "socket_group"),
            format!("{}:3", p.display())
        );
        assert_eq!(location_of(&p, "metrics"), p.display().to_string());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
