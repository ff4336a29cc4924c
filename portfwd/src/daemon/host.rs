//! The host as netlink reports it: interfaces and their IPv4 and IPv6 addresses, followed as
//! they change.
//!
//! Rather than interpreting each notification, an event triggers a fresh dump of both families
//! that is reconciled with what is applied (level-triggered), so a missed or reordered event
//! cannot leave stale state behind. The daemon listens for link, IPv4 and IPv6 address events
//! (the periodic resync, every 30 s, only catches what a lost event missed).
use std::net::IpAddr;

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        address::{AddressAttribute, AddressHeaderFlags},
        link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo},
    },
};

use crate::error::Error;

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub up: bool,
    pub loopback: bool,
    /// A software device (veth, bridge, ...); `None` for hardware NICs.
    pub kind: Option<String>,
    /// The bridge (or other controller) this interface is enslaved to.
    pub master: Option<u32>,
}

impl Link {
    /// A hardware NIC: no link kind.
    pub fn is_hardware(&self) -> bool {
        self.kind.is_none()
    }

    /// The bridge this veth is a port of: a container's host-side end, into whose peer
    /// translated packets can be delivered directly.
    pub fn veth_bridge(&self) -> Option<u32> {
        self.master.filter(|_| self.kind.as_deref() == Some("veth"))
    }
}

/// Interfaces and host addresses at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub links: Vec<Link>,
    /// IPv4 addresses, and IPv6 addresses of global or unique-local scope (see
    /// [`is_host_address`]) that the host accepts packets for (see [`is_usable`]).
    pub addrs: Vec<IpAddr>,
}

/// Whether `addr` can be a destination of published ports: every IPv4 address; for IPv6 not
/// link-local ones (fe80::/10), which are scoped to one link and which a forward cannot name.
/// Loopback addresses are kept here; the daemon leaves them out of the datapath's map.
pub fn is_host_address(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(_) => true,
        IpAddr::V6(a) => !a.is_unicast_link_local() && !a.is_multicast(),
    }
}

/// Whether an address with these flags receives packets: not an IPv6 address still in duplicate
/// address detection (tentative, unless optimistic) nor one that failed it. The kernel accepts
/// nothing for those and installs no local route, so netfilter's `--dst-type LOCAL` does not
/// match them either. The kernel announces the address again when DAD completes.
pub fn is_usable(flags: AddressHeaderFlags) -> bool {
    let tentative = flags.contains(AddressHeaderFlags::Tentative)
        && !flags.contains(AddressHeaderFlags::Optimistic);
    !tentative && !flags.contains(AddressHeaderFlags::Dadfailed)
}

/// Dumps every interface and host address of the daemon's network namespace.
pub async fn snapshot(handle: &Handle) -> Result<Snapshot, Error> {
    let nl = Error::Netlink;
    let mut links = Vec::new();
    let mut stream = handle.link().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(nl)? {
        let name = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        let Some(name) = name else { continue };
        let kind = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                LinkInfo::Kind(InfoKind::Other(k)) => Some(k.clone()),
                LinkInfo::Kind(k) => Some(format!("{k:?}").to_lowercase()),
                _ => None,
            }),
            _ => None,
        });
        let master = msg.attributes.iter().find_map(|a| match a {
            LinkAttribute::Controller(index) => Some(*index),
            _ => None,
        });
        links.push(Link {
            index: msg.header.index,
            name,
            up: msg.header.flags.contains(LinkFlags::Up),
            loopback: msg.header.flags.contains(LinkFlags::Loopback),
            kind,
            master,
        });
    }
    let mut addrs = Vec::new();
    let mut stream = handle.address().get().execute();
    while let Some(msg) = stream.try_next().await.map_err(nl)? {
        if !matches!(
            msg.header.family,
            AddressFamily::Inet | AddressFamily::Inet6
        ) || !is_usable(msg.header.flags)
        {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        // links, and equal to IFA_LOCAL elsewhere (IPv6 addresses carry only IFA_ADDRESS unless
        // they have a peer).
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(a) => Some(*a),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(a) => Some(*a),
                _ => None,
            })
        });
        if let Some(a) = addr.filter(|a| is_host_address(*a)) {
            addrs.push(a);
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok(Snapshot { links, addrs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_or_failing_dad_are_not_usable() {
        use AddressHeaderFlags as F;
        assert!(is_usable(F::empty()));
        assert!(is_usable(F::Permanent));
        assert!(!is_usable(F::Tentative));
        assert!(!is_usable(F::Tentative | F::Dadfailed));
        assert!(!is_usable(F::Dadfailed));
        // Optimistic DAD: the kernel uses the address while checking it.
        assert!(is_usable(F::Tentative | F::Optimistic));
    }
}
