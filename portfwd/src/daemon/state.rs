//! The daemon's state: what it has applied (forwards and their counter slots, the config, the
//! host's interfaces and addresses, the socket hooks) and how config and host changes change
//! it. Control requests ([`super::control`]) and reloads ([`super::reload`]) go through here.
use std::{
    collections::BTreeSet,
    net::IpAddr,
    path::{Path, PathBuf},
    sync::Weak,
};

use portfwd_common::maps::Hook;

use tokio::sync::Mutex;

use super::{
    access::Access,
    cni::CniForwards,
    docker::DockerFollow,
    host,
    pools::Pools,
    reserved_ports::{self, PortSet, Reservation},
    slots::Slots,
};
use crate::{
    api::{self, CniOwner, FlowTableStatus, ForwardEntry, InterfaceStatus, MapFill, VerdictCount},
    config::{AttachMode, Config},
    datapath::{Datapath, XdpPolicy, cgroup::SocketHooks},
    error::{Error, chain},
    metrics,
    publish::{Forward, Listen, Targets},
};

/// A published forward, the counter slot it uses, and who made it.
pub(super) struct Active {
    pub(super) fwd: Forward,
    pub(super) slot: u32,
    pub(super) origin: Origin,
}

/// Who made a forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Origin {
    /// The config file (or `portfwd add`, which writes it).
    Config,
    /// A port Docker publishes for a container: derived state, never written to the config.
    Docker { id: String, name: String },
    /// A forward of the config to a container by name (`to: "web:3000"`), resolved to the
    /// container's address while it runs.
    Container { name: String },
    /// A port mapping of a CNI attachment (`portfwd-cni`): the daemon's own state, kept across
    /// its restarts, never written to the config.
    Cni(CniOwner),
}

impl Origin {
    /// `config` or `docker:NAME`, as `portfwd list` shows it.
    pub(super) fn label(&self) -> String {
        match self {
            Origin::Config | Origin::Container { .. } => api::CONFIG_ORIGIN.to_owned(),
            Origin::Docker { name, .. } => format!("docker:{name}"),
            Origin::Cni(owner) => owner.label(),
        }
    }

    pub(super) fn container(&self) -> Option<&str> {
        match self {
            Origin::Config | Origin::Cni(_) => None,
            Origin::Docker { name, .. } | Origin::Container { name } => Some(name),
        }
    }

    /// Whether the forward is derived from containers (Docker's, by name, CNI's) rather
    /// than one of the config's forwards to an address.
    pub(super) fn is_derived(&self) -> bool {
        !matches!(self, Origin::Config)
    }
}

/// Everything the daemon has applied.
pub(super) struct State {
    pub(super) dp: Datapath,
    pub(super) config_path: PathBuf,
    /// The applied config; its `forwards` are kept in `forwards` below.
    pub(super) cfg: Config,
    pub(super) mode_override: Option<AttachMode>,
    pub(super) forwards: Vec<Active>,
    pub(super) slots: Slots,
    pub(super) host: host::Snapshot,
    pub(super) host_addrs: BTreeSet<IpAddr>,
    /// The control socket's path, and who besides root may use it.
    pub(super) socket: PathBuf,
    pub(super) access: Access,
    /// The Prometheus endpoint while one is configured, and where it reads its numbers.
    pub(super) metrics: Option<metrics::Endpoint>,
    pub(super) metrics_source: Option<metrics::Source>,
    /// The last error logged for an invalid config file seen by the watcher (logged once).
    pub(super) last_watch_error: Option<String>,
    /// Host-local access: the socket hooks, or why they could not be attached.
    pub(super) socket_hooks: HostLocal,
    /// The published ports reserved from the kernel's ephemeral port choice, or `None` when the
    /// sysctl could not be read (logged once).
    pub(super) reserved_ports: Option<Reservation>,
    /// Counter slots of forwards a previous daemon left that the config does not have: held
    /// until the config's forwards replace them (see [`super::staging`]).
    pub(super) orphan_slots: Vec<u32>,
    /// Following Docker, while the config has a `docker:` section.
    pub(super) docker: Option<DockerFollow>,
    /// The forwards of CNI attachments (`portfwd-cni`).
    pub(super) cni: CniForwards,
    /// Forwards with several backends: backends, tables, health checks, draining.
    pub(super) pools: Pools,
    /// The state itself, for the tasks it starts (the Docker follower).
    pub(super) weak_self: Weak<Mutex<State>>,
}

impl State {
    pub(super) fn new(
        dp: Datapath,
        config_path: PathBuf,
        socket: PathBuf,
        mode_override: Option<AttachMode>,
    ) -> Self {
        let cni = CniForwards::load(&state_dir(&socket));
        Self {
            dp,
            config_path,
            socket,
            access: Access::default(),
            metrics: None,
            metrics_source: None,
            last_watch_error: None,
            cfg: Config::default(),
            mode_override,
            forwards: Vec::new(),
            slots: Slots::default(),
            host: host::Snapshot::default(),
            host_addrs: BTreeSet::new(),
            socket_hooks: HostLocal::Off("not attached yet".into()),
            orphan_slots: Vec::new(),
            docker: None,
            cni,
            pools: Pools::default(),
            weak_self: Weak::new(),
            reserved_ports: Reservation::open(reserved_ports::SYSCTL_PATH)
                .map_err(|e| tracing::warn!(error = %chain(&e), "published ports are not reserved"))
                .ok(),
        }
    }

    /// Reserves the published ports from the kernel's ephemeral port choice (see
    /// [`reserved_ports`]); a failure is logged, the forwards work regardless.
    pub(super) fn sync_reserved_ports(&mut self) {
        let published = PortSet::of_forwards(self.forwards.iter().map(|a| &a.fwd));
        if let Some(r) = &mut self.reserved_ports
            && let Err(e) = r.set(published)
        {
            tracing::warn!(error = %chain(&e), "could not update the reserved ports");
        }
    }

    /// Gives back the ports the daemon reserved (on a clean stop).
    pub(super) fn release_reserved_ports(&mut self) {
        if let Some(r) = &mut self.reserved_ports
            && let Err(e) = r.restore()
        {
            tracing::warn!(error = %chain(&e), "could not restore the reserved ports");
        }
    }

    pub(super) fn publish(&mut self, fwd: Forward, origin: Origin) -> Result<(), Error> {
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
        let slot = self.slots.alloc()?;
        let active = Active { fwd, slot, origin };
        // A pool's table before the forward that reads it.
        let pooled = self
            .pools
            .prepare(&mut self.dp.maps, std::slice::from_ref(&active));
        if let Err(e) = pooled.and_then(|()| self.dp.maps.insert_forward(&active.fwd, slot)) {
            self.slots.free(slot);
            self.retire_pools();
            return Err(e);
        }
        self.forwards.push(active);
        self.after_pools_change();
        self.sync_reserved_ports();
        Ok(())
    }

    pub(super) fn unpublish(&mut self, listen: &Listen) -> Result<Active, Error> {
        let pos = self
            .forwards
            .iter()
            .position(|a| &a.fwd.listen == listen)
            .ok_or_else(|| Error::NotPublished(listen.to_string()))?;
        let a = &self.forwards[pos];
        self.dp.maps.remove_forward(&a.fwd, a.slot)?;
        let active = self.forwards.remove(pos);
        self.slots.free(active.slot);
        self.retire_pools();
        self.sync_reserved_ports();
        Ok(active)
    }

    /// Takes over the forwards a previous daemon left in the active generation of the pinned
    /// maps, before `cfg` is applied: an entry that `cfg` still wants keeps its counter slot
    /// (so its counters carry on). Nothing is removed here: the previous daemon's forwards go
    /// on being served until [`State::apply_config`] replaces them in one step. The host
    /// addresses in the map are taken as applied, so the first host sync only adds and removes
    /// the difference.
    pub(super) fn adopt_pinned(&mut self, cfg: &Config) -> Result<(), Error> {
        let wanted = self.wanted(cfg);
        let forwards: Vec<Forward> = wanted.iter().map(|(f, _)| f.clone()).collect();
        let adopted = self.dp.maps.adopt(&forwards)?;
        for ((fwd, origin), slot) in wanted.into_iter().zip(adopted.slots) {
            if let Some(slot) = slot {
                tracing::info!(listen = %fwd.listen, to = %fwd.to, origin = %origin.label(), "kept pinned forward");
                self.forwards.push(Active { fwd, slot, origin });
            }
        }
        if adopted.stale_entries > 0 {
            tracing::info!(
                entries = adopted.stale_entries,
                "removed a pinned forward the config no longer has (as the config goes live)"
            );
        }
        self.slots.adopt(
            self.forwards
                .iter()
                .map(|a| a.slot)
                .chain(adopted.stale_slots.iter().copied()),
        );
        let pinned_slots = self.forwards.iter().map(|a| a.slot);
        let pinned_slots = pinned_slots.chain(adopted.stale_slots.iter().copied());
        self.pools.adopt(&self.dp.maps.pools, pinned_slots);
        self.orphan_slots = adopted.stale_slots;
        self.host_addrs = self.dp.maps.host_addr_entries().into_iter().collect();
        Ok(())
    }

    /// Removes interface entries a previous daemon left for interfaces this one does not serve.
    pub(super) fn prune_pinned_interfaces(&mut self) {
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

    /// The running config: the settings and the forwards of the config (not Docker's).
    pub(super) fn config(&self) -> Config {
        Config {
            forwards: self.config_forwards(),
            ..self.cfg.clone()
        }
    }

    /// The forwards of the config that run.
    pub(super) fn config_forwards(&self) -> Vec<Forward> {
        self.forwards
            .iter()
            .filter(|a| a.origin == Origin::Config)
            .map(|a| a.fwd.clone())
            .collect()
    }

    /// Every forward to run with `cfg`, in order of precedence: the config's forwards to
    /// addresses, those to containers by name that run, those of CNI attachments, then
    /// Docker's bindings. A forward that collides with one ahead of it is not run (and said
    /// so: CNI's are logged, Docker's shown by `portfwd status`).
    pub(super) fn wanted(&mut self, cfg: &Config) -> Vec<(Forward, Origin)> {
        let mut all: Vec<(Forward, Origin)> = cfg
            .forwards
            .iter()
            .map(|f| (f.clone(), Origin::Config))
            .collect();
        if let Some(d) = &self.docker {
            all.extend(d.named(&cfg.named));
        }
        let cni = self.cni.wanted(&all, &cfg.named);
        all.extend(cni);
        if let Some(d) = &mut self.docker {
            let ahead: Vec<(String, Listen)> = all
                .iter()
                .map(|(f, o)| (format!("{f} ({})", o.label()), f.listen))
                .chain(cfg.named.iter().map(|n| (n.to_string(), n.listen)))
                .collect();
            all.extend(d.bindings(&ahead));
        }
        all
    }

    fn mode(&self) -> AttachMode {
        self.mode_override.unwrap_or(self.cfg.mode)
    }

    fn exposed(&self, name: &str) -> bool {
        self.cfg.interfaces.is_empty() || self.cfg.interfaces.iter().any(|n| n == name)
    }

    /// Applies a validated config at start-up: its forwards replace whatever the pinned maps
    /// held in one step (see [`super::staging`]), then interfaces are evaluated. Returns the
    /// interfaces that failed to attach as the mode requires.
    pub(super) fn apply_config(&mut self, cfg: &Config) -> Result<Vec<Error>, Error> {
        let wanted = self.wanted(cfg);
        self.replace_forwards(&wanted)?;
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
    pub(super) fn apply_host(&mut self, snap: host::Snapshot) -> Vec<Error> {
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
                tracing::error!("{}", chain(&e));
            }
            match result {
                Ok(xdp) => {
                    if let Err(e) = self.dp.maps.set_iface(l.index, exposed, l.veth_bridge()) {
                        tracing::error!("{}", chain(&e));
                    }
                    if fresh {
                        let hooks = if xdp { "xdp+tc" } else { "tc" };
                        tracing::info!(interface = %l.name, ifindex = l.index, exposed, hooks, "attached");
                    }
                }
                Err(e) => {
                    tracing::error!("{}", chain(&e));
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
                tracing::error!("{}", chain(&e));
            }
            tracing::info!(address = %a, "host address removed");
        }
        for a in addrs.difference(&self.host_addrs) {
            if let Err(e) = self.dp.maps.set_host_addr(*a) {
                tracing::error!("{}", chain(&e));
            }
            tracing::info!(address = %a, "host address added");
        }
        self.host_addrs = addrs;
        self.host = snap;
        failures
    }

    /// Every forward with its counters.
    pub(super) fn forward_entries(&self) -> Result<Vec<ForwardEntry>, Error> {
        let mut forwards = Vec::new();
        // Each pool backend's live flows, from one walk of the affinity tables.
        let any_pool = self.forwards.iter().any(|a| a.fwd.pool.is_some());
        let live = if any_pool {
            self.dp.maps.pools.live_flows(&self.pools.epochs())
        } else {
            Default::default()
        };
        for a in &self.forwards {
            let s = self.dp.maps.forward_stats(a.slot)?;
            forwards.push(ForwardEntry {
                listen: a.fwd.listen.to_string(),
                protocol: a.fwd.listen.protocol.to_string(),
                to: match &a.fwd.pool {
                    Some(pool) => Targets(&pool.targets).to_string(),
                    None => a.fwd.to.to_string(),
                },
                allow: a.fwd.allow.iter().map(|p| p.to_string()).collect(),
                packets_to_target: s.to_target_packets,
                bytes_to_target: s.to_target_bytes,
                packets_to_client: s.to_client_packets,
                bytes_to_client: s.to_client_bytes,
                new_flows: s.new_flows,
                origin: a.origin.label(),
                container: a.origin.container().map(str::to_owned),
                inactive: None,
                backends: self.pools.status(&self.dp.maps.pools, a.slot, &live),
            });
        }
        // The config's forwards to containers that do not run.
        for n in &self.cfg.named {
            if self.forwards.iter().any(|a| a.fwd.listen == n.listen) {
                continue;
            }
            let why = match &self.docker {
                Some(d) => d.inactive(n),
                None => "Docker is not followed (no docker: section)".to_owned(),
            };
            forwards.push(ForwardEntry {
                listen: n.listen.to_string(),
                protocol: n.listen.protocol.to_string(),
                to: n.to.to_string(),
                allow: n.allow.iter().map(|p| p.to_string()).collect(),
                packets_to_target: 0,
                bytes_to_target: 0,
                packets_to_client: 0,
                bytes_to_client: 0,
                new_flows: 0,
                origin: api::CONFIG_ORIGIN.into(),
                container: Some(n.to.container.clone()),
                inactive: Some(why),
                backends: Vec::new(),
            });
        }
        Ok(forwards)
    }

    /// What `portfwd status` shows and the metrics endpoint serves.
    pub(super) fn status_report(&self) -> Result<api::Status, Error> {
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
        // The small maps are walked; the flow tables, 196,608 entries when full, are counted
        // from the datapath's inserts instead (every metrics scrape asks for this).
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
        let flow_tables: Vec<FlowTableStatus> = self
            .dp
            .maps
            .flow_tables()?
            .into_iter()
            .map(|t| FlowTableStatus {
                name: t.table.name().to_owned(),
                entries: t.entries,
                max_entries: t.max_entries,
                inserted: t.inserted,
                evicted: t.evicted,
            })
            .collect();
        let flows = flow_tables.iter().map(|t| t.entries as usize).sum();
        let forward_counters = self.forward_entries()?;
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
            flow_tables,
            verdicts: verdicts
                .into_iter()
                .map(|(r, packets)| VerdictCount {
                    reason: r.name().into(),
                    packets,
                })
                .collect(),
            verdicts_by_hook,
            forward_counters: forward_counters.clone(),
            maps,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            metrics: self.metrics.as_ref().map(|m| m.addr.to_string()),
            host_local: self.host_local_status(),
            reserved_ports: self.reserved_ports.as_ref().map(|r| r.added().to_string()),
            docker: self.docker.as_ref().map(|d| d.status(&self.forwards)),
            pools: self.pools_status(&forward_counters),
        })
    }

    /// Attaches the socket hooks. Without them published ports still work from other machines
    /// and containers, so a failure is reported (log, `portfwd status`) rather than fatal.
    pub(super) fn attach_socket_hooks(&mut self) {
        self.socket_hooks = match SocketHooks::attach(&mut self.dp, None) {
            Ok(h) if h.taken_over() > 0 => {
                tracing::info!(cgroup = %h.cgroup().display(), netns_cookie = h.netns_cookie(), taken_over = h.taken_over(), "socket hooks taken over from their pinned links (programs swapped in place): host-local access on");
                HostLocal::On(h)
            }
            Ok(h) => {
                tracing::info!(cgroup = %h.cgroup().display(), netns_cookie = h.netns_cookie(), "socket hooks attached: host-local access on");
                HostLocal::On(h)
            }
            Err(e) => {
                let e = chain(&e);
                tracing::error!("host-local access off: {e}");
                HostLocal::Off(e)
            }
        };
    }

    pub(super) fn detach_socket_hooks(&mut self) {
        if let HostLocal::On(h) = &mut self.socket_hooks {
            h.detach(&mut self.dp);
        }
        self.socket_hooks = HostLocal::Off("detached".into());
    }

    fn host_local_status(&self) -> api::HostLocalStatus {
        match &self.socket_hooks {
            HostLocal::On(h) => api::HostLocalStatus {
                attached: true,
                cgroup: Some(h.cgroup().to_owned()),
                error: None,
                verdicts: match h.verdicts() {
                    Ok(v) => v
                        .into_iter()
                        .map(|(v, n)| (v.name().to_owned(), n))
                        .collect(),
                    Err(e) => {
                        tracing::error!("{}", chain(&e));
                        Default::default()
                    }
                },
            },
            HostLocal::Off(why) => api::HostLocalStatus {
                error: Some(why.clone()),
                ..Default::default()
            },
        }
    }
}

/// Host-local access: the socket hooks, or why they are not attached, as `portfwd status`
/// shows it.
pub(super) enum HostLocal {
    On(SocketHooks),
    Off(String),
}

/// Where the daemon keeps state of its own: beside its control socket (`/run/portfwd`, kept
/// across restarts by the systemd unit, gone at reboot like the pinned maps).
pub(super) fn state_dir(socket: &Path) -> PathBuf {
    socket
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."))
}
