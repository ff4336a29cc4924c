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
use portfwd_common::maps::{Hook, MAX_FORWARDS};
use rtnetlink::MulticastGroup;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::Mutex,
};

use crate::{
    api::{self, ForwardEntry, InterfaceStatus, Request, Response, VerdictCount},
    config::{self, AttachMode, Config, ConfigError},
    dataplane::{Dataplane, XdpPolicy, cgroup::SocketHooks},
    error::Error,
    spec::{Forward, Listen, Target},
};

/// How `portfwd daemon` was started.
pub struct Options {
    pub config: PathBuf,
    pub socket: PathBuf,
    /// `--mode`: overrides the config's `mode:`.
    pub mode: Option<AttachMode>,
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
    /// The applied config; its `forwards` are kept in `forwards` below.
    cfg: Config,
    mode_override: Option<AttachMode>,
    forwards: Vec<Active>,
    free_slots: Vec<u32>,
    next_slot: u32,
    host: host::Snapshot,
    host_addrs: BTreeSet<Ipv4Addr>,
    /// Host-local access: the socket hooks, or why they could not be attached.
    socket_hooks: Result<SocketHooks, String>,
}

impl State {
    fn new(dp: Dataplane, config_path: PathBuf, mode_override: Option<AttachMode>) -> Self {
        Self {
            dp,
            config_path,
            cfg: Config::default(),
            mode_override,
            forwards: Vec::new(),
            free_slots: Vec::new(),
            next_slot: 0,
            host: host::Snapshot::default(),
            host_addrs: BTreeSet::new(),
            socket_hooks: Err("not attached yet".into()),
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
            forwards: self.forwards.iter().map(|a| a.fwd).collect(),
            ..self.cfg.clone()
        }
    }

    fn mode(&self) -> AttachMode {
        self.mode_override.unwrap_or(self.cfg.mode)
    }

    fn exposed(&self, name: &str) -> bool {
        self.cfg.interfaces.is_empty() || self.cfg.interfaces.iter().any(|n| n == name)
    }

    /// Applies a validated config: forwards that are gone or changed are removed first, then
    /// new ones added, then interfaces re-evaluated. Returns the interfaces that failed to
    /// attach as the mode requires.
    fn apply_config(&mut self, cfg: &Config) -> Result<Vec<Error>, Error> {
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
        self.cfg = Config {
            forwards: Vec::new(),
            ..cfg.clone()
        };
        let host = self.host.clone();
        Ok(self.apply_host(host))
    }

    /// What to put in front of tc on `link`, by mode:
    /// - tc: nothing;
    /// - xdp: native XDP, required on interfaces that expose published ports;
    /// - auto: native XDP on hardware NICs that support it. Not on veth: frames reaching a veth
    ///   from its peer are skbs converted for XDP (often copied), measured slower than tc.
    fn xdp_policy(&self, link: &host::Link) -> XdpPolicy {
        match self.mode() {
            AttachMode::Tc => XdpPolicy::Off,
            AttachMode::Xdp if self.exposed(&link.name) => XdpPolicy::Required,
            AttachMode::Xdp => XdpPolicy::IfSupported,
            AttachMode::Auto if link.is_hardware() => XdpPolicy::IfSupported,
            AttachMode::Auto => XdpPolicy::Off,
        }
    }

    /// Attaches to every interface that is up and not loopback, detaches from the rest, marks
    /// which ones expose published ports, and mirrors the host's addresses. Returns the
    /// interfaces where the mode's requirements could not be met.
    fn apply_host(&mut self, snap: host::Snapshot) -> Vec<Error> {
        let mut failures = Vec::new();
        let wanted: Vec<&host::Link> = snap.links.iter().filter(|l| l.up && !l.loopback).collect();
        for l in &wanted {
            let exposed = self.exposed(&l.name);
            let fresh = !self.dp.attachments.is_attached(l.index, &l.name);
            let policy = self.xdp_policy(l);
            let result = self.dp.attach(l.index, &l.name, policy);
            // XDP may hand a translation to this interface only if it takes XDP frames:
            // a hardware NIC with our XDP program attached natively.
            let xdp_egress = matches!(result, Ok(true)) && l.is_hardware();
            if let Err(e) = self.dp.maps.set_xdp_egress(l.index, xdp_egress) {
                tracing::error!("{e}");
            }
            match result {
                Ok(xdp) => {
                    if let Err(e) = self.dp.maps.set_iface(l.index, exposed) {
                        tracing::error!("{e}");
                    }
                    if fresh {
                        let hooks = if xdp { "xdp+tc" } else { "tc" };
                        tracing::info!(interface = %l.name, ifindex = l.index, exposed, hooks, "attached");
                    }
                }
                Err(e) => {
                    tracing::error!("{e}");
                    failures.push(e);
                }
            }
        }
        for (index, name, _) in self.dp.attachments.list() {
            if !wanted.iter().any(|l| l.index == index && l.name == name) {
                self.dp.detach(index);
                let _ = self.dp.maps.remove_iface(index);
                let _ = self.dp.maps.set_xdp_egress(index, false);
                tracing::info!(interface = %name, ifindex = index, "detached (interface down or gone)");
            }
        }
        for name in &self.cfg.interfaces {
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
        failures
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
        let counters = self.dp.maps.verdicts().and_then(|all| {
            let mut by_hook = std::collections::BTreeMap::new();
            for hook in Hook::ALL {
                let per: std::collections::BTreeMap<String, u64> = self
                    .dp
                    .maps
                    .verdicts_of(hook)?
                    .into_iter()
                    .map(|(r, n)| (r.name().to_owned(), n))
                    .collect();
                by_hook.insert(hook.name().to_owned(), per);
            }
            Ok((all, by_hook))
        });
        let (verdicts, verdicts_by_hook) = match counters {
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
                .map(|(ifindex, name, xdp)| InterfaceStatus {
                    exposed: self.exposed(&name),
                    name,
                    ifindex,
                    attach: if xdp { "xdp+tc" } else { "tc" }.into(),
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
            verdicts_by_hook,
            host_local: self.host_local_status(),
        })
    }

    /// Attaches the socket hooks. Without them published ports still work from other machines
    /// and containers, so a failure is reported (log, `portfwd status`) rather than fatal.
    fn attach_socket_hooks(&mut self) {
        self.socket_hooks = SocketHooks::attach(&mut self.dp, None).map_err(|e| e.to_string());
        match &self.socket_hooks {
            Ok(h) => {
                tracing::info!(cgroup = %h.cgroup().display(), netns_cookie = h.netns_cookie(), "socket hooks attached: host-local access on")
            }
            Err(e) => tracing::error!("host-local access off: {e}"),
        }
    }

    fn detach_socket_hooks(&mut self) {
        if let Ok(h) = &mut self.socket_hooks {
            h.detach(&mut self.dp);
        }
        self.socket_hooks = Err("detached".into());
    }

    fn host_local_status(&self) -> api::HostLocalStatus {
        match &self.socket_hooks {
            Ok(h) => api::HostLocalStatus {
                attached: true,
                cgroup: Some(h.cgroup().to_owned()),
                error: None,
                verdicts: match h.verdicts() {
                    Ok(v) => v
                        .into_iter()
                        .map(|(v, n)| (v.name().to_owned(), n))
                        .collect(),
                    Err(e) => {
                        tracing::error!("{e}");
                        Default::default()
                    }
                },
            },
            Err(e) => api::HostLocalStatus {
                error: Some(e.clone()),
                ..Default::default()
            },
        }
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

    let state = Arc::new(Mutex::new(State::new(dp, opts.config.clone(), opts.mode)));
    {
        let snap = host::snapshot(&handle).await?;
        let mut st = state.lock().await;
        st.host = snap;
        st.attach_socket_hooks();
        if let Some(e) = st.apply_config(&cfg)?.into_iter().next() {
            // The mode cannot be honoured: stop rather than run half-attached.
            st.detach_socket_hooks();
            st.dp.detach_all();
            return Err(e.into());
        }
    }
    tracing::info!(
        config = %opts.config.display(),
        socket = %opts.socket.display(),
        forwards = cfg.forwards.len(),
        mode = %opts.mode.unwrap_or(cfg.mode),
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
    {
        let mut st = state.lock().await;
        st.detach_socket_hooks();
        st.dp.detach_all();
    }
    tracing::info!("detached everywhere; bye");
    Ok(())
}

async fn resync(handle: &rtnetlink::Handle, state: &Arc<Mutex<State>>) {
    match host::snapshot(handle).await {
        Ok(snap) => {
            // Failures are logged and shown by `portfwd status`; the daemon keeps serving the
            // interfaces that work.
            let _ = state.lock().await.apply_host(snap);
        }
        Err(e) => tracing::error!("reading interfaces and addresses: {e}"),
    }
}

/// SIGHUP: re-reads the config file. An invalid file is reported and nothing changes.
async fn reload(state: &Arc<Mutex<State>>) {
    let mut st = state.lock().await;
    let path = st.config_path.clone();
    match config::load(&path) {
        Ok(cfg) => match st.apply_config(&cfg) {
            Ok(_) => tracing::info!(config = %path.display(), "reloaded"),
            Err(e) => tracing::error!("reload: {e}"),
        },
        Err(e) => tracing::error!("reload rejected, nothing changed: {e}"),
    }
}
