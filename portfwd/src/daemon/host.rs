//! The host as netlink reports it: interfaces and IPv4 addresses, followed as they change.
//!
//! Rather than interpreting each notification, any link or address event triggers a fresh dump
//! that is reconciled with what is applied (level-triggered), so a missed or reordered event
//! cannot leave stale state behind.
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt as _;
use rtnetlink::{
    Handle,
    packet_route::{
        AddressFamily,
        address::AddressAttribute,
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

/// Interfaces and IPv4 addresses at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub links: Vec<Link>,
    pub addrs: Vec<Ipv4Addr>,
}

/// Dumps every interface and IPv4 address of the daemon's network namespace.
pub async fn snapshot(handle: &Handle) -> Result<Snapshot, Error> {
    let nl = |e: rtnetlink::Error| Error::Netlink(e.to_string());
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
        if msg.header.family != AddressFamily::Inet {
            continue;
        }
        // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point
        // links, and equal to IFA_LOCAL elsewhere.
        let local = msg.attributes.iter().find_map(|a| match a {
            AddressAttribute::Local(IpAddr::V4(a)) => Some(*a),
            _ => None,
        });
        let addr = local.or_else(|| {
            msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(IpAddr::V4(a)) => Some(*a),
                _ => None,
            })
        });
        if let Some(a) = addr {
            addrs.push(a);
        }
    }
    addrs.sort();
    addrs.dedup();
    Ok(Snapshot { links, addrs })
}
