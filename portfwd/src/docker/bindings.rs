//! The forwards a container's port bindings make ([`forwards_of`]), and the bindings portfwd
//! leaves to Docker ([`NotServed`]).
//!
//! - `0.0.0.0:P` is IPv4 on every host address: the forward `P/PROTO -> IPV4:C`.
//! - `[::]:P` is IPv6 on every host address: `[::]:P/PROTO -> [IPV6]:C` when the container has
//!   an IPv6 address. Without one, Docker serves it through docker-proxy (userland-proxy on):
//!   IPv6 clients reach the IPv4 container through a userspace copy. portfwd translates
//!   addresses in place and never between families, so it leaves that binding to docker-proxy:
//!   an IPv6 client gets exactly what Docker gives it.
//! - An empty host IP (older Docker) is both of the above; a given host IP is that address.
//! - Docker lists a range port by port: runs of consecutive host ports to consecutive
//!   container ports, on one address and protocol, become one range forward again.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::container::{Binding, Container};
use crate::publish::{Family, Forward, Listen, Protocol, Target};

/// What a container's bindings make.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Derived {
    pub forwards: Vec<Forward>,
    pub not_served: Vec<NotServed>,
}

/// A binding portfwd does not serve, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotServed {
    /// `[HOST_IP:]PORT[-END]/PROTO`
    pub listen: String,
    pub reason: String,
}

/// One binding with its host side resolved to a family: `addr` is the host address, `None`
/// for every IPv4 address and `::` for every IPv6 one (as [`Listen`] keeps them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Port {
    addr: Option<IpAddr>,
    protocol: Protocol,
    host_port: u16,
    container_port: u16,
}

/// The forwards `c`'s bindings make, coalesced into ranges, and the bindings left to Docker.
pub fn forwards_of(c: &Container) -> Derived {
    let mut ports: Vec<Port> = c.bindings.iter().flat_map(host_sides).collect();
    ports.sort();
    ports.dedup();
    let mut out = Derived::default();
    let mut runs: Vec<(Port, u16)> = Vec::new();
    for p in ports {
        match runs.last_mut() {
            Some((start, len))
                if (start.addr, start.protocol) == (p.addr, p.protocol)
                    && u32::from(start.host_port) + u32::from(*len) == u32::from(p.host_port)
                    && u32::from(start.container_port) + u32::from(*len)
                        == u32::from(p.container_port) =>
            {
                *len += 1;
            }
            _ => runs.push((p, 1)),
        }
    }
    for (start, len) in runs {
        let listen = Listen {
            addr: start.addr,
            port: start.host_port,
            end: start.host_port + (len - 1),
            protocol: start.protocol,
        };
        let family = listen.family();
        let target = match family {
            Family::V4 => c.ipv4.map(IpAddr::V4),
            Family::V6 => c.ipv6.map(IpAddr::V6),
        };
        let Some(addr) = target else {
            out.not_served.push(NotServed {
                listen: listen.to_string(),
                reason: no_address(c, family),
            });
            continue;
        };
        let to = Target {
            addr,
            port: start.container_port,
            end: start.container_port + (len - 1),
        };
        match Forward::new(listen, to) {
            Ok(f) => out.forwards.push(f),
            Err(e) => out.not_served.push(NotServed {
                listen: listen.to_string(),
                reason: e.to_string(),
            }),
        }
    }
    out
}

/// The host sides of one binding: an empty host IP is both families.
fn host_sides(b: &Binding) -> Vec<Port> {
    let port = |addr| Port {
        addr,
        protocol: b.protocol,
        host_port: b.host_port,
        container_port: b.container_port,
    };
    match b.host_ip {
        None => vec![port(None), port(Some(Ipv6Addr::UNSPECIFIED.into()))],
        Some(IpAddr::V4(a)) if a == Ipv4Addr::UNSPECIFIED => vec![port(None)],
        Some(a) => vec![port(Some(a))],
    }
}

fn no_address(c: &Container, family: Family) -> String {
    let network = c.network.as_deref().unwrap_or("its network");
    match family {
        Family::V6 => format!(
            "container {} has no IPv6 address on {network}: docker-proxy serves IPv6 clients (as without portfwd); portfwd does not translate between IPv6 and IPv4",
            c.name
        ),
        Family::V4 => format!("container {} has no IPv4 address on {network}", c.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::docker::container::tests::fixture;

    fn shown(d: &Derived) -> Vec<String> {
        d.forwards.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn one_port_ipv4_served_ipv6_left_to_docker_proxy() {
        let c = fixture("inspect-publish");
        let ip = c.ipv4.unwrap();
        let d = forwards_of(&c);
        assert_eq!(shown(&d), vec![format!("8080/tcp -> {ip}:3000")]);
        assert_eq!(d.not_served.len(), 1);
        assert_eq!(d.not_served[0].listen, "[::]:8080/tcp");
        assert!(d.not_served[0].reason.contains("docker-proxy"), "{:?}", d);
    }

    #[test]
    fn a_range_stays_one_range() {
        let c = fixture("inspect-range");
        let ip = c.ipv4.unwrap();
        assert_eq!(
            shown(&forwards_of(&c)),
            vec![format!("9000-9002/tcp -> {ip}:9000-9002")]
        );
    }

    #[test]
    fn udp_loopback_and_publish_all() {
        let udp = fixture("inspect-udp");
        assert_eq!(
            shown(&forwards_of(&udp)),
            vec![format!("5353/udp -> {}:5353", udp.ipv4.unwrap())]
        );
        let lo = fixture("inspect-loopback");
        let d = forwards_of(&lo);
        assert_eq!(
            shown(&d),
            vec![format!("127.0.0.1:8081/tcp -> {}:3000", lo.ipv4.unwrap())]
        );
        assert!(d.not_served.is_empty());
        let all = fixture("inspect-publish-all");
        assert_eq!(
            shown(&forwards_of(&all)),
            vec![format!("32768/tcp -> {}:3000", all.ipv4.unwrap())]
        );
    }

    #[test]
    fn ipv6_containers_get_ipv6_forwards_and_gaps_split_ranges() {
        let mut c = fixture("inspect-publish");
        c.ipv6 = Some("fd00:18::2".parse().unwrap());
        let b = |host_port, container_port, host_ip: Option<IpAddr>| Binding {
            host_ip,
            host_port,
            container_port,
            protocol: Protocol::Tcp,
        };
        c.bindings = vec![
            b(8000, 80, None),
            b(8001, 81, None),
            b(8003, 83, None),
            b(8004, 90, None),
            b(443, 443, Some("10.0.0.1".parse().unwrap())),
        ];
        let ip = c.ipv4.unwrap();
        let d = forwards_of(&c);
        assert_eq!(
            shown(&d),
            vec![
                format!("8000-8001/tcp -> {ip}:80-81"),
                format!("8003/tcp -> {ip}:83"),
                format!("8004/tcp -> {ip}:90"),
                format!("10.0.0.1:443/tcp -> {ip}:443"),
                "[::]:8000-8001/tcp -> [fd00:18::2]:80-81".to_owned(),
                "[::]:8003/tcp -> [fd00:18::2]:83".to_owned(),
                "[::]:8004/tcp -> [fd00:18::2]:90".to_owned(),
            ]
        );
        assert!(d.not_served.is_empty());
    }

    #[test]
    fn a_container_without_address_serves_nothing() {
        let mut c = fixture("inspect-publish");
        c.ipv4 = None;
        let d = forwards_of(&c);
        assert!(d.forwards.is_empty());
        assert_eq!(d.not_served.len(), 2);
        assert!(d.not_served[0].reason.contains("no IPv4 address on bridge"));
    }
}
