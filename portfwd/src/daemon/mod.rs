//! `portfwd daemon`: loads the datapath, applies the config, follows the host's interfaces and
//! addresses, and serves the control socket until SIGINT/SIGTERM.
//!
//! - `host`: the host's interfaces and addresses, from netlink;
//! - `control`: the control socket and who may use it;
//! - `reload`: applying a changed config file, all or nothing;
//! - this module: the daemon's state and how requests, config and host changes change it.
mod control;
mod host;
mod reload;

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv6Addr},
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
    api::{self, ForwardEntry, InterfaceStatus, MapFill, Request, Response, VerdictCount},
    config::{self, AttachMode, Config, ConfigError},
    dataplane::{Dataplane, XdpPolicy, cgroup::SocketHooks},
    error::Error,
    metrics,
    publish::{AllowPrefix, Forward, Listen, Target},
};

/// How `portfwd daemon` was started.
pub struct Options {
    pub config: PathBuf,
    pub socket: PathBuf,
    /// `--mode`: overrides the config's `mode:`.
    pub mode: Option<AttachMode>,
    /// `--pin-dir`: overrides the config's `pin_dir:`.
    pub pin_dir: Option<PathBuf>,
    /// `--cleanup`: remove everything pinned under the pin directory and exit.
    pub cleanup: bool,
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
    host_addrs: BTreeSet<IpAddr>,
    /// The control socket's path, and who besides root may use it.
    socket: PathBuf,
    access: control::Access,
    /// The Prometheus endpoint while one is configured, and where it reads its numbers.
    metrics: Option<metrics::Endpoint>,
    metrics_source: Option<metrics::Source>,
    /// The last error logged for an invalid config file seen by the watcher (logged once).
    last_watch_error: Option<String>,
    /// Host-local access: the socket hooks, or why they could not be attached.
    socket_hooks: Result<SocketHooks, String>,
}

impl State {
    fn new(
        dp: Dataplane,
        config_path: PathBuf,
        socket: PathBuf,
        mode_override: Option<AttachMode>,
    ) -> Self {
        Self {
            dp,
            config_path,
            socket,
            access: control::Access::default(),
            metrics: None,
            metrics_source: None,
            last_watch_error: None,
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
            if a.fwd.listen != fwd.listen {
                return Err(Error::Overlaps {
                    listen: fwd.listen.to_string(),
                    existing: a.fwd.listen.to_string(),
                    to: a.fwd.to.to_string(),
                });
            }
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
        let a = &self.forwards[pos];
        self.dp.maps.remove_forward(&a.fwd, a.slot)?;
        let active = self.forwards.remove(pos);
        self.free_slots.push(active.slot);
        Ok(active)
    }

    /// Takes over the forwards a previous daemon left in the pinned maps, before `cfg` is
    /// applied: an entry that `cfg` still wants keeps its counter slot (so its counters carry
    /// on), any other entry is removed. The host addresses in the map are taken as applied, so
    /// the first host sync only adds and removes the difference.
    fn adopt_pinned(&mut self, cfg: &Config) {
        let (slots, removed) = self.dp.maps.adopt(&cfg.forwards);
        for (fwd, slot) in cfg.forwards.iter().zip(slots) {
            if let Some(slot) = slot {
                tracing::info!(listen = %fwd.listen, to = %fwd.to, "kept pinned forward");
                self.forwards.push(Active {
                    fwd: fwd.clone(),
                    slot,
                });
            }
        }
        if removed > 0 {
            tracing::info!(
                entries = removed,
                "removed a pinned forward the config no longer has"
            );
        }
        let used: BTreeSet<u32> = self.forwards.iter().map(|a| a.slot).collect();
        self.next_slot = used.last().map_or(0, |s| s + 1);
        self.free_slots = (0..self.next_slot)
            .filter(|s| !used.contains(s))
            .rev()
            .collect();
        self.host_addrs = self.dp.maps.host_addr_entries().into_iter().collect();
    }

    /// Removes interface entries a previous daemon left for interfaces this one does not serve.
    fn prune_pinned_interfaces(&mut self) {
        let attached: BTreeSet<u32> = self
            .dp
            .attachments
            .list()
            .into_iter()
            .map(|(index, _, _)| index)
            .collect();
        let (ifaces, egress) = self.dp.maps.iface_indexes();
        for index in ifaces.into_iter().filter(|i| !attached.contains(i)) {
            let _ = self.dp.maps.remove_iface(index);
        }
        for index in egress.into_iter().filter(|i| !attached.contains(i)) {
            let _ = self.dp.maps.set_xdp_egress(index, false);
        }
    }

    fn config(&self) -> Config {
        Config {
            forwards: self.forwards.iter().map(|a| a.fwd.clone()).collect(),
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
                self.publish(fwd.clone())?;
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
    /// - xdp: native XDP, required on interfaces that expose published ports, and where
    ///   supported on other hardware NICs (not on other software devices);
    /// - auto: native XDP on hardware NICs that support it. Not on veth: frames reaching a veth
    ///   from its peer are skbs converted for XDP (often copied), measured slower than tc.
    fn xdp_policy(&self, link: &host::Link) -> XdpPolicy {
        match self.mode() {
            AttachMode::Tc => XdpPolicy::Off,
            AttachMode::Xdp if self.exposed(&link.name) => XdpPolicy::Required,
            // Not on other veths (a container's host-side end): there XDP only converts frames
            // for tc and costs GRO (measured: one TCP stream 24.7 -> 3.0 Gbit/s).
            AttachMode::Xdp if link.is_hardware() => XdpPolicy::IfSupported,
            AttachMode::Xdp => XdpPolicy::Off,
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
                    if let Err(e) = self.dp.maps.set_iface(l.index, exposed, l.veth_bridge()) {
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

        let addrs: BTreeSet<IpAddr> = snap
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
            Request::Add { listen, to, allow } => self.add(&listen, &to, &allow),
            Request::Del { listen } => self.del(&listen),
            Request::List => return self.list(),
            Request::Status => return self.status(),
            Request::Reload => self
                .reload(reload::Trigger::Request)
                .map(|summary| format!("reloaded {}: {summary}", self.config_path.display())),
        };
        match result {
            Ok(message) => Response::Done { message },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        }
    }

    fn add(&mut self, listen: &str, to: &str, allow: &[String]) -> Result<String, Error> {
        let allow = allow
            .iter()
            .map(|p| p.parse::<AllowPrefix>())
            .collect::<Result<Vec<_>, _>>()?;
        let fwd =
            Forward::new(listen.parse::<Listen>()?, to.parse::<Target>()?)?.with_allow(allow)?;
        self.publish(fwd.clone())?;
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            // Keep the running state and the file in step: undo.
            let _ = self.unpublish(&fwd.listen);
            return Err(e.into());
        }
        tracing::info!(forward = %fwd, "published");
        Ok(format!("published {fwd}"))
    }

    fn del(&mut self, listen: &str) -> Result<String, Error> {
        let mut listen = listen.parse::<Listen>()?;
        // A bare port names the IPv4 forward on it, or the IPv6 one (`[::]`) when only that is
        // published: a bare port takes its target's family when it is added. `0.0.0.0:PORT`
        // names the IPv4 one only.
        let v6_any = Listen {
            addr: Some(Ipv6Addr::UNSPECIFIED.into()),
            ..listen
        };
        let published = |l: &Listen| self.forwards.iter().any(|a| a.fwd.listen == *l);
        if listen.addr.is_none() && !published(&listen) && published(&v6_any) {
            listen = v6_any;
        }
        let listen = listen.normalized();
        let active = self.unpublish(&listen)?;
        if let Err(e) = config::save(&self.config_path, &self.config()) {
            let _ = self.publish(active.fwd.clone());
            return Err(e.into());
        }
        tracing::info!(listen = %active.fwd.listen, to = %active.fwd.to, "unpublished");
        Ok(format!(
            "unpublished {} (was -> {})",
            active.fwd.listen, active.fwd.to
        ))
    }

    fn list(&self) -> Response {
        match self.forward_entries() {
            Ok(forwards) => Response::Forwards { forwards },
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        }
    }

    /// Every forward with its counters.
    fn forward_entries(&self) -> Result<Vec<ForwardEntry>, Error> {
        let mut forwards = Vec::new();
        for a in &self.forwards {
            let s = self.dp.maps.forward_stats(a.slot)?;
            forwards.push(ForwardEntry {
                listen: a.fwd.listen.to_string(),
                protocol: a.fwd.listen.protocol.to_string(),
                to: a.fwd.to.to_string(),
                allow: a.fwd.allow.iter().map(|p| p.to_string()).collect(),
                packets_to_target: s.to_target_packets,
                bytes_to_target: s.to_target_bytes,
                packets_to_client: s.to_client_packets,
                bytes_to_client: s.to_client_bytes,
                new_flows: s.new_flows,
            });
        }
        Ok(forwards)
    }

    fn status(&self) -> Response {
        match self.status_report() {
            Ok(s) => Response::Status(Box::new(s)),
            Err(e) => Response::Error {
                message: e.to_string(),
            },
        }
    }

    /// What `portfwd status` shows and the metrics endpoint serves.
    fn status_report(&self) -> Result<api::Status, Error> {
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
        let (verdicts, verdicts_by_hook) = counters?;
        // One walk of each table: with a full flow table that is a system call per entry, and
        // every metrics scrape asks for this.
        let maps: Vec<MapFill> = self
            .dp
            .maps
            .fill(self.forwards.len() as u64)?
            .into_iter()
            .map(|(name, entries, max_entries)| MapFill {
                name: name.to_owned(),
                entries,
                max_entries,
            })
            .collect();
        let flows = maps
            .iter()
            .filter(|m| crate::dataplane::Maps::is_flow_map(&m.name))
            .map(|m| m.entries as usize)
            .sum();
        Ok(api::Status {
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
            flows,
            verdicts: verdicts
                .into_iter()
                .map(|(r, packets)| VerdictCount {
                    reason: r.name().into(),
                    packets,
                })
                .collect(),
            verdicts_by_hook,
            forward_counters: self.forward_entries()?,
            maps,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            metrics: self.metrics.as_ref().map(|m| m.addr.to_string()),
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

/// The metrics endpoint's view of the daemon: its status, read under the state lock.
fn metrics_source(state: &Arc<Mutex<State>>) -> metrics::Source {
    let weak = Arc::downgrade(state);
    Arc::new(move || {
        let weak = weak.clone();
        Box::pin(async move {
            let state = weak.upgrade().ok_or("the daemon is stopping")?;
            let st = state.lock().await;
            st.status_report().map_err(|e| e.to_string())
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
    let access = control::Access::resolve(cfg.socket_group.as_deref()).map_err(|message| {
        Error::Setting {
            location: opts.config.display().to_string(),
            field: "socket_group",
            message,
        }
    })?;
    let metrics_listener = cfg.metrics.map(metrics::bind).transpose()?;
    // The socket first: it refuses to start while another daemon serves it, before anything
    // pinned (possibly that daemon's datapath) is touched.
    let listener = control::bind(&opts.socket, &access)?;
    let _socket_file = control::SocketFile(opts.socket.clone());
    let mut dp = Dataplane::load_pinned(&pin_dir)?;
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
    let (mconn, _, mut events) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link, MulticastGroup::Ipv4Ifaddr])?;
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
        st.adopt_pinned(&cfg);
        st.attach_socket_hooks();
        if let Some(e) = st.apply_config(&cfg)?.into_iter().next() {
            // The mode cannot be honoured: stop rather than run half-attached.
            st.detach_socket_hooks();
            st.dp.detach_all();
            return Err(e.into());
        }
        st.prune_pinned_interfaces();
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
            tracing::warn!("not watching the config file: {e}");
            (None, Some(idle_tx), idle_rx)
        }
    };

    let server = tokio::spawn(control::serve(listener, state.clone()));
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
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
    if !pin_dir.exists() {
        println!("nothing pinned at {}", pin_dir.display());
        return Ok(());
    }
    let removed = crate::dataplane::pin::cleanup(pin_dir)?;
    println!(
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
        Err(e) => tracing::error!("reading interfaces and addresses: {e}"),
    }
}
