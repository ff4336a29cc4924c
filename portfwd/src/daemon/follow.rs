//! Existing UDP flows follow forward changes (netavark#1045, CNI plugins#123, moby#8795).
//!
//! Two kinds of state outlive a change to a UDP forward:
//! - Host sockets. The socket hooks translate a socket at `connect()` (and at each `sendmsg()`
//!   with an address), so a UDP socket connected to a published address before its forward
//!   existed is never translated, and one translated to a target keeps sending there after the
//!   target changed or the forward went. Those sockets are destroyed (see [`sock_diag`]): the
//!   application's next receive fails with `ECONNABORTED`, its next send with `EDESTADDRREQ`,
//!   and the new socket it opens is translated afresh. Only sockets that the change concerns
//!   are touched: connected to the published address (on an add), or translated by the hooks
//!   to the old target (on a change of target or a removal: the hooks' own record of the
//!   socket says so, a socket talking to the container directly is left alone).
//! - Flows through the datapath. The datapath looks the forward up on each client packet, so
//!   a client's stream goes to the new target from its next packet; the flow table still holds
//!   the old target's entries (keyed by its replies), which would translate a late answer of
//!   the old target to the client. They are dropped.
//!
//! TCP sockets and TCP flows are never touched here: an established connection belongs to the
//! target it was opened to until it ends, as with netfilter's conntrack. (The datapath itself
//! does not keep that yet: it sends the next segment to the new target; README, "Not supported
//! yet".)
//!
//! Everything here is per network namespace: the daemon lists and destroys its own
//! namespace's sockets only.
use std::net::{IpAddr, SocketAddr};

use portfwd_common::{maps::FlowKeyOf, proto};

use super::{reload::Diff, state::State};
use crate::{
    datapath::{Maps, maps::MapAddr},
    error::{Error, chain},
    publish::{Family, Forward, Listen, Protocol},
    sock_diag::{self, ConnectedUdp},
};

/// A forward change that existing flows follow.
#[derive(Clone, Copy)]
pub(super) enum Change<'a> {
    /// A new forward.
    Added(&'a Forward),
    /// The forward's target changed (`old` is the forward as it was).
    Retargeted { old: &'a Forward },
    /// The forward is gone.
    Removed(&'a Forward),
}

impl Change<'_> {
    fn forward(&self) -> &Forward {
        match self {
            Change::Added(f) | Change::Retargeted { old: f } | Change::Removed(f) => f,
        }
    }
}

/// What one change cleaned up.
#[derive(Default)]
struct Followed {
    sockets: usize,
    flows: usize,
}

impl State {
    /// Makes existing UDP flows follow `changes` (already applied to the datapath); logs
    /// what was destroyed and dropped. Failures are logged: the forwards work regardless.
    pub(super) fn follow(&mut self, changes: &[Change<'_>]) {
        let udp: Vec<Change<'_>> = changes
            .iter()
            .copied()
            .filter(|c| c.forward().listen.protocol == Protocol::Udp)
            .collect();
        if udp.is_empty() {
            return;
        }
        let sockets = sock_diag::connected_udp().unwrap_or_else(|e| {
            tracing::warn!(error = %chain(&e), "cannot list the connected UDP sockets; those connected before a forward change keep their old destination");
            Vec::new()
        });
        for change in udp {
            let mut done = Followed {
                sockets: self.destroy_sockets(change, &sockets),
                ..Followed::default()
            };
            if let Change::Retargeted { old } | Change::Removed(old) = change {
                done.flows = match self.drop_flows(old) {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::error!("dropping the flows of {old}: {}", chain(&e));
                        0
                    }
                };
            }
            if done.sockets > 0 || done.flows > 0 {
                let (what, fwd) = match change {
                    Change::Added(f) => ("added", f),
                    Change::Retargeted { old } => ("target changed", old),
                    Change::Removed(f) => ("removed", f),
                };
                tracing::info!(
                    forward = %fwd,
                    change = what,
                    sockets = done.sockets,
                    flows = done.flows,
                    "destroyed UDP sockets connected the old way (their applications reconnect) and dropped the old target's flows"
                );
            }
        }
    }

    /// [`State::follow`] for a reload that applied `diff` to `running` (the forwards before).
    pub(super) fn follow_reload(&mut self, running: &[Forward], diff: &Diff) {
        let removed = running
            .iter()
            .filter(|f| diff.removed.contains(&f.listen))
            .map(Change::Removed);
        let changed = diff
            .changed
            .iter()
            // A pool that stays a pool keeps its flows on their backends, and its removed
            // backends drain (`super::pools`): nothing to follow.
            .filter(|(old, new)| old.to != new.to && !(old.pool.is_some() && new.pool.is_some()))
            .map(|(old, _)| Change::Retargeted { old });
        let added = diff.added.iter().map(Change::Added);
        let changes: Vec<Change<'_>> = removed.chain(changed).chain(added).collect();
        self.follow(&changes);
    }

    /// Destroys the sockets among `sockets` that `change` leaves connected the old way;
    /// returns how many.
    fn destroy_sockets(&self, change: Change<'_>, sockets: &[ConnectedUdp]) -> usize {
        let doomed = sockets.iter().filter(|s| {
            let peer = sock_diag::canonical(s.peer);
            match change {
                Change::Added(f) => publishes(&f.listen, peer, &self.host_addrs),
                Change::Retargeted { old: f } | Change::Removed(f) => {
                    targets(f, peer) && self.dp.translated_by_hooks(s.cookie, peer, proto::UDP)
                }
            }
        });
        let mut destroyed = 0;
        for s in doomed {
            match sock_diag::destroy(s) {
                Ok(()) => destroyed += 1,
                Err(e) => tracing::warn!(
                    local = %s.local,
                    peer = %s.peer,
                    error = %chain(&e),
                    "cannot destroy a UDP socket connected the old way; it keeps its destination until the application reconnects"
                ),
            }
        }
        destroyed
    }

    /// Drops the UDP flows that `old` translated; returns how many.
    fn drop_flows(&mut self, old: &Forward) -> Result<usize, Error> {
        match old.listen.family() {
            Family::V4 => drop_flows_of::<u32>(&mut self.dp.maps, old),
            Family::V6 => drop_flows_of::<portfwd_common::maps::Ipv6Words>(&mut self.dp.maps, old),
        }
    }
}

/// Whether a host socket connected to `peer` reaches `listen` through the socket hooks: a port
/// of it, at its address, or (without one) at a loopback or host address of its family.
fn publishes(
    listen: &Listen,
    peer: SocketAddr,
    host_addrs: &std::collections::BTreeSet<IpAddr>,
) -> bool {
    if !listen.ports().contains(&peer.port()) || Family::of(peer.ip()) != listen.family() {
        return false;
    }
    match listen.addr.filter(|a| !a.is_unspecified()) {
        Some(a) => peer.ip() == a,
        None => peer.ip().is_loopback() || host_addrs.contains(&peer.ip()),
    }
}

/// Whether `peer` is one of `fwd`'s targets.
fn targets(fwd: &Forward, peer: SocketAddr) -> bool {
    peer.ip() == fwd.to.addr && (fwd.to.port..=fwd.to.end).contains(&peer.port())
}

/// Drops the flows of family `A` that `old` translated: UDP, replies from one of its targets,
/// translated back to one of its published ports (and address, when it has one).
fn drop_flows_of<A: MapAddr>(maps: &mut Maps, old: &Forward) -> Result<usize, Error> {
    let Some(target) = A::from_ip(old.to.addr) else {
        return Ok(0);
    };
    let listen_addr = old
        .listen
        .addr
        .filter(|a| !a.is_unspecified())
        .and_then(A::from_ip);
    // A flow can be in both tables (established, and not yet aged out of the new flows): it
    // counts once.
    let mut dropped: Vec<FlowKeyOf<A>> = Vec::new();
    for flows in maps.flows_mut::<A>() {
        let stale: Vec<FlowKeyOf<A>> = flows
            .iter()
            .filter_map(Result::ok)
            .filter(|(k, v)| {
                k.proto == proto::UDP
                    && k.saddr_be == target
                    && (old.to.port..=old.to.end).contains(&u16::from_be(k.sport_be))
                    && old.listen.ports().contains(&u16::from_be(v.orig_port_be))
                    && listen_addr.is_none_or(|a| v.orig_addr_be == a)
            })
            .map(|(k, _)| k)
            .collect();
        for key in stale {
            match flows.remove(&key) {
                Ok(()) => {
                    if !dropped.contains(&key) {
                        dropped.push(key);
                    }
                }
                // Evicted or expired meanwhile.
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(source) => {
                    return Err(Error::Map {
                        what: "flows",
                        source,
                    });
                }
            }
        }
    }
    Ok(dropped.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fwd(listen: &str, to: &str) -> Forward {
        Forward::new(listen.parse().unwrap(), to.parse().unwrap()).unwrap()
    }

    fn at(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_forward_publishes_its_ports_on_loopback_and_host_addresses() {
        let host = ["10.77.0.1".parse().unwrap()].into();
        let any = fwd("5353/udp", "172.17.0.2:53").listen;
        assert!(publishes(&any, at("127.0.0.1:5353"), &host));
        assert!(publishes(&any, at("127.0.0.9:5353"), &host));
        assert!(publishes(&any, at("10.77.0.1:5353"), &host));
        assert!(
            !publishes(&any, at("10.77.0.2:5353"), &host),
            "not a host address"
        );
        assert!(
            !publishes(&any, at("127.0.0.1:5354"), &host),
            "another port"
        );
        assert!(!publishes(&any, at("[::1]:5353"), &host), "another family");

        let lo = fwd("127.0.0.1:5353/udp", "172.17.0.2:53").listen;
        assert!(publishes(&lo, at("127.0.0.1:5353"), &host));
        assert!(!publishes(&lo, at("10.77.0.1:5353"), &host));

        let range = fwd("20000-20009/udp", "172.17.0.2:3000-3009").listen;
        assert!(publishes(&range, at("127.0.0.1:20009"), &host));
        assert!(!publishes(&range, at("127.0.0.1:20010"), &host));

        let v6 = fwd("[::]:5353/udp", "[fd00:17::2]:53").listen;
        assert!(publishes(&v6, at("[::1]:5353"), &host));
        assert!(!publishes(&v6, at("127.0.0.1:5353"), &host));
    }

    #[test]
    fn a_forwards_targets_are_its_address_and_port_range() {
        let f = fwd("20000-20009/udp", "172.17.0.2:3000-3009");
        assert!(targets(&f, at("172.17.0.2:3000")));
        assert!(targets(&f, at("172.17.0.2:3009")));
        assert!(!targets(&f, at("172.17.0.2:3010")));
        assert!(!targets(&f, at("172.17.0.3:3000")));
    }
}
