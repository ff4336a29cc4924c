//! `portfwd daemon`: loads the datapath, applies the config, follows the host's interfaces and
//! addresses, and serves the control socket until SIGINT/SIGTERM.
//!
//! - `host`: the host's interfaces and addresses, from netlink;
//! - `control`: the control socket;
//! - this module: the daemon's state and how requests, config and host changes change it.
mod control;
mod host;

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use portfwd_common::maps::MAX_FORWARDS;
use rtnetlink::MulticastGroup;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Mutex,
};

use crate::{
    api::{self, ForwardEntry, InterfaceStatus, Request, Response, VerdictCount},
    config::{self, Config, ConfigError},
    dataplane::Dataplane,
    error::Error,
    spec::{Forward, Listen, Target},
};

/// How `portfwd daemon` was started.
pub struct Options {
    pub config: PathBuf,
    pub socket: PathBuf,
}

/// A published forward and the counter slot it uses.
struct Active {
    fwd: Forward,
    slot: u32,
}

/// Everything the daemon has applied.
pub struct State {
    dp: Dataplane,
    config_path: PathBuf,
    interfaces: Vec<String>,
    forwards: Vec<Active>,
    free_slots: Vec<u32>,
    next_slot: u32,
    host: host::Snapshot,
    host_addrs: BTreeSet<Ipv4Addr>,
}

impl State {
    fn new(dp: Dataplane, config_path: PathBuf, interfaces: Vec<String>) -> Self {
        Self {
            dp,
            config_path,
            interfaces,
            forwards: Vec::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            host: host::Snapshot::default(),
            host_addrs: BTreeSet::new(),
        }
    }

    fn alloc_slot(&mut self) -> Result<u32, Error> {
        if let Some(s) = self.free_slots.pop() {
            return Ok(s);
        }
        if self.next_slot >= MAX_FORWARDS {
            return Err(Error::TooManyForwards(MAX_FORWARDS));
        }
        self.next_slot += 1;
        Ok(self.next_slot - 1)
    }

    fn publish(&mut self, fwd: Forward) -> Result<(), Error> {
        if let Some(a) = self
            .forwards
            .iter()
            .find(|a| a.fwd.listen.conflicts_with(&fwd.listen))
        {
            return Err(Error::AlreadyPublished {
                listen: a.fwd.listen.to_string(),
                to: a.fwd.to.to_string(),
            });
        }
        let slot = self.alloc_slot()?;
        if let Err(e) = self.dp.maps.insert_forward(&fwd, slot) {
            self.free_slots.push(slot);
            return Err(e);
        }
        self.forwards.push(Active { fwd, slot });
        Ok(())
    }

    fn unpublish(&mut self, listen: &Listen) -> Result<Active, Error> {
        let pos = self
            .forwards
            .iter()
            .position(|a| &a.fwd.listen == listen)
            .ok_or_else(|| Error::NotPublished(listen.to_string()))?;
        self.dp.maps.remove_forward(listen)?;
        let active = self.forwards.remove(pos);
        self.free_slots.push(active.slot);
        Ok(active)
    }

    fn config(&self) -> Config {
        Config {
            interfaces: self.interfaces.clone(),
            forwards: self.forwards.iter().map(|a| a.fwd).collect(),
        }
    }

    /// Applies a validated config: forwards that are gone or changed are removed first, then
    /// new ones added, then interfaces re-evaluated.
    fn apply_config(&mut self, cfg: &Config) -> Result<(), Error> {
        let stale: Vec<Listen> = self
            .forwards
            .iter()
            .filter(|a| !cfg.forwards.contains(&a.fwd))
            .map(|a| a.fwd.listen)
            .collect();
        for listen in &stale {
            self.unpublish(listen)?;
        }
        for fwd in &cfg.forwards {
            if !self.forwards.iter().any(|a| &a.fwd == fwd) {
                self.publish(*fwd)?;
            }
        }
        self.interfaces = cfg.interfaces.clone();
        let host = self.host.clone();
        self.apply_host(host);
        Ok(())
    }

    /// Attaches to every interface that is up and not loopback, detaches from the rest, marks
    /// which ones expose published ports, and mirrors the host's addresses.
    fn apply_host(&mut self, snap: host::Snapshot) {
        let wanted: Vec<&host::Link> = snap.links.iter().filter(|l| l.up && !l.loopback).collect();
        for l in &wanted {
            let exposed =
                self.interfaces.is_empty() || self.interfaces.iter().any(|n| n == &l.name);
            let fresh = !self.dp.attachments.is_attached(l.index, &l.name);
            match self.dp.attach(l.index, &l.name) {
                Ok(()) => {
                    if let Err(e) = self.dp.maps.set_iface(l.index, exposed) {
                        tracing::error!("{e}");
                    }
                    if fresh {
                        tracing::info!(interface = %l.name, ifindex = l.index, exposed, "attached (tc ingress)");
                    }
                }
                Err(e) => tracing::error!("{e}"),
            }
        }
        for (index, name) in self.dp.attachments.list() {
            if !wanted.iter().any(|l| l.index == index && l.name == name) {
                self.dp.detach(index);
                let _ = self.dp.maps.remove_iface(index);
                tracing::info!(interface = %name, ifindex = index, "detached (interface down or gone)");
            }
        }
        for name in &self.interfaces {
            if !snap.links.iter().any(|l| &l.name == name) {
                tracing::warn!(interface = %name, "configured interface does not exist (yet)");
            }
        }

        let addrs: BTreeSet<Ipv4Addr> = snap
            .addrs
            .iter()
            .copied()
            .filter(|a| !a.is_loopback())
            .collect();
        for a in self.host_addrs.difference(&addrs) {
            if let Err(e) = self.dp.maps.remove_host_addr(*a) {
                tracing::error!("{e}");
            }
            tracing::info!(address = %a, "host address removed");
        }
        for a in addrs.difference(&self.host_addrs) {
            if let Err(e) = self.dp.maps.set_host_addr(*a) {
                tracing::error!("{e}");
            }
            tracing::info!(address = %a, "host address added");
        }
        self.host_addrs = addrs;
        self.host = snap;
    }

    /// Handles one control request.
    fn handle(&mut self, req: Request) -> Response {
        let result = match req {
            Request::Add { listen, to } => self.add(&listen, &to),
            Request::Del { listen } => self.del(&listen),
            Request::List => return self.list(),
            Request::Status => return self.status(),
        };
        match result {
            Ok(message) => Response::Done { message },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        }
    }

    fn add(&mut self, listen: &str, to: &str) -> Result<String, Error> {
        let fwd = Forward {
            listen: listen.parse::<Listen>()?,
            to: to.parse::<Target>()?,
        };
        self.publish(fwd)?;
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            // Keep the running state and the file in step: undo.
            let _ = self.unpublish(&fwd.listen);
            return Err(e.into());
        }
        tracing::info!(listen = %fwd.listen, to = %fwd.to, "published");
        Ok(format!("published {} -> {}", fwd.listen, fwd.to))
    }

    fn del(&mut self, listen: &str) -> Result<String, Error> {
        let listen = listen.parse::<Listen>()?;
        let active = self.unpublish(&listen)?;
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            let _ = self.publish(active.fwd);
            return Err(e.into());
        }
        tracing::info!(listen = %active.fwd.listen, to = %active.fwd.to, "unpublished");
        Ok(format!(
            "unpublished {} (was -> {})",
            active.fwd.listen, active.fwd.to
        ))
    }

    fn list(&self) -> Response {
        let mut forwards = Vec::new();
        for a in &self.forwards {
            let s = match self.dp.maps.forward_stats(a.slot) {
                Ok(s) => s,
                Err(e) => {
                    return Response::Error {
                        message: e.to_string(),
                    };
                }
            };
            forwards.push(ForwardEntry {
                listen: a.fwd.listen.to_string(),
                protocol: a.fwd.listen.protocol.to_string(),
                to: a.fwd.to.to_string(),
                packets_to_target: s.to_target_packets,
                bytes_to_target: s.to_target_bytes,
                packets_to_client: s.to_client_packets,
                bytes_to_client: s.to_client_bytes,
                new_flows: s.new_flows,
            });
        }
        Response::Forwards { forwards }
    }

    fn status(&self) -> Response {
        let verdicts = match self.dp.maps.verdicts() {
            Ok(v) => v,
            Err(e) => {
                return Response::Error {
                    message: e.to_string(),
                };
            }
        };
        Response::Status(api::Status {
            config: self.config_path.clone(),
            interfaces: self
                .dp
                .attachments
                .list()
                .into_iter()
                .map(|(ifindex, name)| InterfaceStatus {
                    exposed: self.interfaces.is_empty() || self.interfaces.contains(&name),
                    name,
                    ifindex,
                    attach: "tc".into(),
                })
                .collect(),
            host_addresses: self.host_addrs.iter().map(|a| a.to_string()).collect(),
            forwards: self.forwards.len(),
            flows: self.dp.maps.flow_count(),
            verdicts: verdicts
                .into_iter()
                .map(|(r, packets)| VerdictCount {
                    reason: r.name().into(),
                    packets,
                })
                .collect(),
        })
    }
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

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let cfg = initial_config(&opts.config)?;
    let dp = Dataplane::load()?;
    let listener = control::bind(&opts.socket)?;
    let _socket_file = control::SocketFile(opts.socket.clone());

    let (conn, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(conn);
    let (mconn, _, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr])?;
    tokio::spawn(mconn);

    let state = Arc::new(Mutex::new(State::new(
        dp,
        opts.config.clone(),
        cfg.interfaces.clone(),
    )));
    {
        let snap = host::snapshot(&handle).await?;
        let mut st = state.lock().await;
        st.host = snap;
        st.apply_config(&cfg)?;
    }
    tracing::info!(
        config = %opts.config.display(),
        socket = %opts.socket.display(),
        forwards = cfg.forwards.len(),
        "portfwd daemon ready"
    );

    let server = tokio::spawn(control::serve(listener, state.clone()));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut resync_timer = tokio::time::interval(Duration::from_secs(30));

    loop {
        tokio::select! {
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sighup.recv() => reload(&state).await,
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

    server.abort();
    state.lock().await.dp.detach_all();
    tracing::info!("detached everywhere; bye");
    Ok(())
}

async fn resync(handle: &rtnetlink::Handle, state: &Arc<Mutex<State>>) {
    match host::snapshot(handle).await {
        Ok(snap) => state.lock().await.apply_host(snap),
        Err(e) => tracing::error!("reading interfaces and addresses: {e}"),
    }
}

/// SIGHUP: re-reads the config file. An invalid file is reported and nothing changes.
async fn reload(state: &Arc<Mutex<State>>) {
    let mut st = state.lock().await;
    let path = st.config_path.clone();
    match config::load(&path) {
        Ok(cfg) => match st.apply_config(&cfg) {
            Ok(()) => tracing::info!(config = %path.display(), "reloaded"),
            Err(e) => tracing::error!("reload: {e}"),
        },
        Err(e) => tracing::error!("reload rejected, nothing changed: {e}"),
    }
}
