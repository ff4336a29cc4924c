//! `portfwd daemon`: loads the datapath, applies the config, follows the host's interfaces and
//! addresses, and serves the control socket until SIGINT/SIGTERM.
//!
//! - `state`: what the daemon has applied, and how config and host changes change it;
//! - `slots`: the forwards' counter slots;
//! - `host`: the host's interfaces and addresses, from netlink;
//! - `access`: who may use the control socket;
//! - `control`: the control socket and the requests it carries;
//! - `reload`: applying a changed config file, all or nothing;
//! - `staging`: replacing the set of forwards in one step for the datapath (two generations);
//! - `reserved_ports`: keeping published ports out of the kernel's ephemeral port choice;
//! - `derived`: forwards derived from containers (Docker's, by name, CNI's) kept in line;
//! - `docker`: following Docker's published ports (the config's `docker:` section);
//! - `cni`: the forwards of CNI attachments, asked for by `portfwd-cni`;
//! - `saved`: state of the daemon's own in files beside its socket (Docker's containers, CNI's
//!   forwards);
//! - `pools`: forwards with several backends: their backends, tables, health checks and
//!   draining;
//! - `follow`: existing UDP flows (host sockets, flow-table entries) following forward changes;
//! - this module: starting up, the event loop, and shutting down.
mod access;
mod cni;
mod control;
mod derived;
mod docker;
mod follow;
mod host;
mod pools;
mod reload;
mod reserved_ports;
mod saved;
mod slots;
mod staging;
mod state;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use rtnetlink::MulticastGroup;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Mutex,
};

use self::{access::Access, state::State};
use crate::{
    config::{self, AttachMode, Config, ConfigError},
    datapath::{Datapath, FlowSizes},
    error::{Error, chain},
    metrics,
};

/// How `portfwd daemon` was started.
pub struct Options {
    pub config: PathBuf,
    pub socket: PathBuf,
    /// `--mode`: overrides the config's `mode:`.
    pub mode: Option<AttachMode>,
    /// `--pin-dir`: overrides the config's `pin_dir:`.
    pub pin_dir: Option<PathBuf>,
    /// `--max-flows`: overrides the config's `max_flows:`.
    pub max_flows: Option<u32>,
    /// `--cleanup`: remove everything pinned under the pin directory and exit.
    pub cleanup: bool,
}

/// The metrics endpoint's view of the daemon: its status, read under the state lock.
fn metrics_source(state: &Arc<Mutex<State>>) -> metrics::Source {
    let weak = Arc::downgrade(state);
    Arc::new(move || {
        let weak = weak.clone();
        Box::pin(async move {
            let state = weak.upgrade().ok_or(Error::Stopping)?;
            let st = state.lock().await;
            st.status_report()
        })
    })
}

/// Reads the config at startup: a missing file is an empty config (the first `portfwd add`
/// creates it); an invalid one stops the daemon before anything is applied.
fn initial_config(path: &Path) -> Result<Config, Error> {
    match config::load(path) {
        Ok(c) => Ok(c),
        Err(ConfigError::NotFound { .. }) => {
            tracing::warn!(config = %path.display(), "config file not found; starting with no forwards");
            Ok(Config::default())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs the daemon until SIGINT or SIGTERM (or, with `--cleanup`, removes the pins and exits).
pub async fn run(opts: Options) -> anyhow::Result<()> {
    // `--cleanup --pin-dir DIR` needs no config (which may be what is broken).
    let cfg = if opts.cleanup && opts.pin_dir.is_some() {
        Config::default()
    } else {
        initial_config(&opts.config)?
    };
    let pin_dir = opts.pin_dir.clone().unwrap_or_else(|| cfg.pin_dir.clone());
    config::check_pin_dir(&pin_dir)
        .map_err(|m| anyhow::anyhow!("--pin-dir {}: {m}", pin_dir.display()))?;
    if opts.cleanup {
        return cleanup(&opts.socket, &pin_dir);
    }
    // Taken over before anything else: a signal that arrives while the daemon starts (as soon
    // as its socket answers, say) waits for the loop below instead of killing the process
    // with its datapath half set up.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let access = Access::resolve(cfg.socket_group.as_deref()).map_err(|e| Error::Setting {
        location: opts.config.display().to_string(),
        field: "socket_group",
        source: e.into(),
    })?;
    let metrics_listener = cfg.metrics.map(metrics::bind).transpose()?;
    // The socket first: it refuses to start while another daemon serves it, before anything
    // pinned (possibly that daemon's datapath) is touched.
    let listener = control::bind(&opts.socket, &access)?;
    let _socket_file = control::SocketFile(opts.socket.clone());
    let sizes = FlowSizes::new(opts.max_flows.or(cfg.max_flows));
    let mut dp = Datapath::load_pinned(&pin_dir, sizes)?;
    let adopted = dp.adopt_pinned_links();
    if !adopted.is_empty() {
        tracing::info!(
            links = adopted.len(),
            pin_dir = %pin_dir.display(),
            "took over the attachments of a previous daemon (programs swapped in place)"
        );
    }

    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let (mconn, _, mut events) = rtnetlink::new_multicast_connection(&[
        MulticastGroup::Link,
        MulticastGroup::Ipv4Ifaddr,
        MulticastGroup::Ipv6Ifaddr,
    ])?;
    tokio::spawn(mconn);

    let state = Arc::new(Mutex::new(State::new(
        dp,
        opts.config.clone(),
        opts.socket.clone(),
        opts.mode,
    )));
    {
        let snap = host::snapshot(&handle).await?;
        let mut st = state.lock().await;
        st.access = access;
        st.metrics_source = Some(metrics_source(&state));
        if let (Some(listener), Some(source)) = (metrics_listener, st.metrics_source.clone()) {
            st.metrics = Some(metrics::spawn(listener, source)?);
        }
        st.host = snap;
        st.weak_self = Arc::downgrade(&state);
        st.restore_docker(cfg.docker.as_ref());
        st.adopt_pinned(&cfg)?;
        st.attach_socket_hooks();
        if let Some(e) = st.apply_config(&cfg)?.into_iter().next() {
            // The mode cannot be honoured: stop rather than run half-attached.
            st.detach_socket_hooks();
            st.release_reserved_ports();
            st.dp.detach_all();
            return Err(e.into());
        }
        st.prune_pinned_interfaces();
        st.configure_docker(cfg.docker.as_ref());
        // Host sockets connected to a published address while no daemon served it.
        let published = st.config().forwards;
        st.follow(
            &published
                .iter()
                .map(follow::Change::Added)
                .collect::<Vec<_>>(),
        );
    }
    tracing::info!(
        config = %opts.config.display(),
        socket = %opts.socket.display(),
        pin_dir = %pin_dir.display(),
        forwards = cfg.forwards.len(),
        mode = %opts.mode.unwrap_or(cfg.mode),
        "portfwd daemon ready"
    );
    // Programs attached and the config applied: tell systemd (Type=notify).
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    // Without a watcher (no config directory yet), reload still works through SIGHUP and
    // `portfwd reload`; the idle sender keeps the channel open.
    let (idle_tx, idle_rx) = tokio::sync::mpsc::channel(1);
    let (_watcher, _idle_tx, mut config_changes) = match reload::watch(&opts.config) {
        Ok((w, rx)) => (Some(w), None, rx),
        Err(e) => {
            tracing::warn!("not watching the config file: {}", chain(&e));
            (None, Some(idle_tx), idle_rx)
        }
    };

    let server = tokio::spawn(control::serve(listener, state.clone()));
    let mut resync_timer = tokio::time::interval(Duration::from_secs(30));

    loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => {
                let _ = state.lock().await.reload(reload::Trigger::Signal);
            }
            Some(()) = config_changes.recv() => {
                reload::on_file_change(&state, &mut config_changes).await;
            }
            ev = events.next() => {
                if ev.is_none() {
                    anyhow::bail!("the netlink event stream closed");
                }
                // Let a burst of events (an interface with several addresses) settle, then dump.
                tokio::time::sleep(Duration::from_millis(20)).await;
                while let Ok(Some(_)) = tokio::time::timeout(Duration::ZERO, events.next()).await {}
                resync(&handle, &state).await;
            }
            _ = resync_timer.tick() => resync(&handle, &state).await,
        }
    }

    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    server.abort();
    {
        let mut st = state.lock().await;
        st.detach_socket_hooks();
        st.dp.detach_all();
    }
    tracing::info!(
        pin_dir = %pin_dir.display(),
        "detached everywhere; the maps stay pinned so that a restart resumes flows and counters \
         (`portfwd daemon --cleanup` removes them); bye"
    );
    Ok(())
}

/// `portfwd daemon --cleanup`: removes every link (which detaches its program) and map pinned
/// under `pin_dir`. Refuses while a daemon answers on `socket`, which would lose its datapath.
fn cleanup(socket: &Path, pin_dir: &Path) -> anyhow::Result<()> {
    if std::os::unix::net::UnixStream::connect(socket).is_ok() {
        anyhow::bail!(
            "a daemon is running (it answers on {}): stop it first, then run --cleanup",
            socket.display()
        );
    }
    // What was done is said on stdout; a reader that has gone away (`| head -0`) changes
    // nothing, so a failed write is not an error (and never a panic, as `println!` would make it).
    let mut out = std::io::stdout();
    if !pin_dir.exists() {
        let _ = writeln!(out, "nothing pinned at {}", pin_dir.display());
        return Ok(());
    }
    let removed = crate::datapath::pin::cleanup(pin_dir)?;
    let _ = writeln!(
        out,
        "removed {} pins under {} (programs detached, maps freed)",
        removed.len(),
        pin_dir.display()
    );
    Ok(())
}

async fn resync(handle: &rtnetlink::Handle, state: &Arc<Mutex<State>>) {
    match host::snapshot(handle).await {
        Ok(snap) => {
            // Failures are logged and shown by `portfwd status`; the daemon keeps serving the
            // interfaces that work.
            let _ = state.lock().await.apply_host(snap);
        }
        Err(e) => tracing::error!("reading interfaces and addresses: {}", chain(&e)),
    }
}
