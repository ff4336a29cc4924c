//! A config's `runtimeConfig.portMappings` and `prevResult`, turned into portfwd's own
//! mappings ([`CniMapping`]: `listen` and `to` in the `-p` grammar the daemon parses).
//!
//! The container's addresses are the `ips` of `prevResult` on its interface: an entry whose
//! `interface` index points at an interface that is not the sandbox's `CNI_IFNAME` is skipped,
//! one without an index is taken (as `portmap` does); the first address of each family counts.
//!
//! A mapping without `hostIP` publishes the port for each family the container has: IPv4 as
//! `PORT/PROTO` (every IPv4 host address), IPv6 as `[::]:PORT/PROTO`. With `hostIP`, only that
//! family, on that address (`0.0.0.0` and `::` mean every address of their family). A mapping
//! that cannot be served as asked is refused, never dropped in silence: ADD is all or nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portfwd::api::CniMapping;

use crate::spec::{CniResult, PortMapping};

/// The container's addresses on its interface, one per family.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ContainerAddrs {
    pub v4: Option<Ipv4Addr>,
    pub v6: Option<Ipv6Addr>,
}

impl ContainerAddrs {
    /// The addresses `prev` gives the sandbox interface `ifname` (see the module's
    /// documentation). IPv6 link-local addresses are not forwarded to.
    pub fn of(prev: &CniResult, ifname: &str) -> ContainerAddrs {
        let mut addrs = ContainerAddrs::default();
        for ip in &prev.ips {
            if let Some(index) = ip.interface {
                let known_other = usize::try_from(index)
                    .ok()
                    .and_then(|i| prev.interfaces.get(i))
                    .is_some_and(|i| {
                        i.name != ifname || i.sandbox.as_deref().unwrap_or("").is_empty()
                    });
                if known_other {
                    continue;
                }
            }
            match ip.ip().map(|a| a.to_canonical()) {
                Some(IpAddr::V4(a)) if addrs.v4.is_none() => addrs.v4 = Some(a),
                Some(IpAddr::V6(a)) if addrs.v6.is_none() && !a.is_unicast_link_local() => {
                    addrs.v6 = Some(a)
                }
                _ => {}
            }
        }
        addrs
    }

    fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }
}

/// Why a config's port mappings cannot be published. Each names the mapping (its index in
/// `portMappings` and its host port).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("portMappings[{index}]: hostPort {port} is not a port (1-65535)")]
    HostPort { index: usize, port: i64 },
    #[error(
        "portMappings[{index}] (hostPort {host_port}): containerPort {port} is not a port (1-65535)"
    )]
    ContainerPort {
        index: usize,
        host_port: u16,
        port: i64,
    },
    #[error(
        "portMappings[{index}] (hostPort {port}): protocol {protocol:?} is not supported: portfwd publishes tcp and udp"
    )]
    Protocol {
        index: usize,
        port: u16,
        protocol: String,
    },
    #[error("portMappings[{index}] (hostPort {port}): hostIP {host_ip:?} is not an IP address")]
    HostIp {
        index: usize,
        port: u16,
        host_ip: String,
    },
    #[error(
        "portMappings[{index}] (hostPort {port}): hostIP {host_ip} is IPv{family} but prevResult gives the container no IPv{family} address on {ifname}"
    )]
    NoAddressOfFamily {
        index: usize,
        port: u16,
        host_ip: IpAddr,
        family: u8,
        ifname: String,
    },
    #[error(
        "prevResult gives the container no address on {ifname}: nothing to forward hostPort {port} to"
    )]
    NoAddress { port: u16, ifname: String },
}

/// One `portMappings` entry, checked.
struct Checked {
    host_port: u16,
    container_port: u16,
    protocol: &'static str,
    host_ip: Option<IpAddr>,
}

fn check(index: usize, m: &PortMapping) -> Result<Checked, MappingError> {
    let port = |p: i64| u16::try_from(p).ok().filter(|p| *p != 0);
    let host_port = port(m.host_port).ok_or(MappingError::HostPort {
        index,
        port: m.host_port,
    })?;
    let container_port = port(m.container_port).ok_or(MappingError::ContainerPort {
        index,
        host_port,
        port: m.container_port,
    })?;
    let protocol = match m.protocol.to_ascii_lowercase().as_str() {
        "" | "tcp" => "tcp",
        "udp" => "udp",
        _ => {
            return Err(MappingError::Protocol {
                index,
                port: host_port,
                protocol: m.protocol.clone(),
            });
        }
    };
    let host_ip = match m.host_ip.trim() {
        "" => None,
        text => Some(
            text.parse::<IpAddr>()
                .map_err(|_| MappingError::HostIp {
                    index,
                    port: host_port,
                    host_ip: m.host_ip.clone(),
                })?
                .to_canonical(),
        ),
    };
    Ok(Checked {
        host_port,
        container_port,
        protocol,
        host_ip,
    })
}

/// `listen` for `port/protocol` on `host_ip` of the family of `target` (`None`: every
/// address of that family).
fn listen(host_ip: Option<IpAddr>, port: u16, protocol: &str, v6: bool) -> String {
    match host_ip {
        Some(IpAddr::V4(a)) if !a.is_unspecified() => format!("{a}:{port}/{protocol}"),
        Some(IpAddr::V6(a)) if !a.is_unspecified() => format!("[{a}]:{port}/{protocol}"),
        _ if v6 => format!("[::]:{port}/{protocol}"),
        _ => format!("{port}/{protocol}"),
    }
}

/// The mappings portfwd publishes for `port_mappings` to a container with `addrs` on
/// `ifname` (named in errors), in the order of `port_mappings`, IPv4 before IPv6.
pub fn to_portfwd(
    port_mappings: &[PortMapping],
    addrs: &ContainerAddrs,
    ifname: &str,
) -> Result<Vec<CniMapping>, MappingError> {
    let mut out = Vec::new();
    for (index, m) in port_mappings.iter().enumerate() {
        let c = check(index, m)?;
        if addrs.is_empty() {
            return Err(MappingError::NoAddress {
                port: c.host_port,
                ifname: ifname.to_owned(),
            });
        }
        let want_v4 = c.host_ip.is_none_or(|a| a.is_ipv4());
        let want_v6 = c.host_ip.is_none_or(|a| a.is_ipv6());
        if let Some(host_ip) = c.host_ip {
            let has = if host_ip.is_ipv4() {
                addrs.v4.is_some()
            } else {
                addrs.v6.is_some()
            };
            if !has {
                return Err(MappingError::NoAddressOfFamily {
                    index,
                    port: c.host_port,
                    host_ip,
                    family: if host_ip.is_ipv4() { 4 } else { 6 },
                    ifname: ifname.to_owned(),
                });
            }
        }
        if let Some(v4) = addrs.v4.filter(|_| want_v4) {
            out.push(CniMapping {
                listen: listen(c.host_ip, c.host_port, c.protocol, false),
                to: format!("{v4}:{}", c.container_port),
            });
        }
        if let Some(v6) = addrs.v6.filter(|_| want_v6) {
            out.push(CniMapping {
                listen: listen(c.host_ip, c.host_port, c.protocol, true),
                to: format!("[{v6}]:{}", c.container_port),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::NetConf;

    const BRIDGE_04: &str = include_str!("../tests/fixtures/bridge-host-local-0.4.0.json");
    const BRIDGE_10: &str = include_str!("../tests/fixtures/bridge-host-local-1.0.0.json");

    /// engines.md's ADD config as podman 4.3 writes it (IPv4 only, one mapping on 127.0.0.1).
    const PODMAN_ADD: &str = r#"{"cniVersion":"0.4.0","name":"NET","type":"portfwd-cni",
      "capabilities":{"portMappings":true},
      "prevResult":{"cniVersion":"0.4.0","interfaces":[{"name":"BRIDGE","mac":"aa:bb:cc:dd:ee:ff"},
        {"name":"vethX","mac":"aa:bb:cc:dd:ee:00"},
        {"name":"eth0","mac":"aa:bb:cc:dd:ee:01","sandbox":"/run/netns/netns-UUID"}],
        "ips":[{"version":"4","address":"10.89.0.4/24","gateway":"10.89.0.1","interface":2}],
        "routes":[{"dst":"0.0.0.0/0"}],"dns":{}},
      "runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":3000,"protocol":"tcp"},
        {"hostPort":8443,"containerPort":3000,"protocol":"tcp","hostIP":"127.0.0.1"}]}}"#;

    fn m(listen: &str, to: &str) -> CniMapping {
        CniMapping {
            listen: listen.into(),
            to: to.into(),
        }
    }

    fn pm(host_port: i64, container_port: i64, protocol: &str, host_ip: &str) -> PortMapping {
        PortMapping {
            host_port,
            container_port,
            protocol: protocol.into(),
            host_ip: host_ip.into(),
        }
    }

    fn dual_stack() -> ContainerAddrs {
        ContainerAddrs::of(&serde_json::from_str(BRIDGE_10).unwrap(), "eth0")
    }

    #[test]
    fn podmans_add_gives_the_containers_ipv4_mappings() {
        let conf: NetConf = serde_json::from_str(PODMAN_ADD).unwrap();
        let addrs = ContainerAddrs::of(conf.prev_result.as_ref().unwrap(), "eth0");
        assert_eq!(
            addrs,
            ContainerAddrs {
                v4: Some("10.89.0.4".parse().unwrap()),
                v6: None
            }
        );
        let out = to_portfwd(&conf.runtime_config.port_mappings, &addrs, "eth0").unwrap();
        assert_eq!(
            out,
            [
                m("8080/tcp", "10.89.0.4:3000"),
                m("127.0.0.1:8443/tcp", "10.89.0.4:3000")
            ]
        );
    }

    #[test]
    fn the_real_plugins_dual_stack_results_give_both_families() {
        for (fixture, n) in [(BRIDGE_04, 2), (BRIDGE_10, 3)] {
            let addrs = ContainerAddrs::of(&serde_json::from_str(fixture).unwrap(), "eth0");
            assert_eq!(addrs.v4, Some(Ipv4Addr::new(10, 88, 0, n)));
            assert_eq!(
                addrs.v6,
                Some(Ipv6Addr::new(0xfd00, 0x88, 0, 0, 0, 0, 0, n.into()))
            );
        }
        let out = to_portfwd(
            &[pm(8080, 80, "tcp", ""), pm(5353, 53, "UDP", "")],
            &dual_stack(),
            "eth0",
        )
        .unwrap();
        assert_eq!(
            out,
            [
                m("8080/tcp", "10.88.0.3:80"),
                m("[::]:8080/tcp", "[fd00:88::3]:80"),
                m("5353/udp", "10.88.0.3:53"),
                m("[::]:5353/udp", "[fd00:88::3]:53"),
            ]
        );
    }

    #[test]
    fn a_host_ip_publishes_its_family_only() {
        let out = to_portfwd(
            &[
                pm(1, 2, "tcp", "10.77.0.1"),
                pm(3, 4, "tcp", "fd00:77::1"),
                pm(5, 6, "tcp", "0.0.0.0"),
                pm(7, 8, "", "::"),
                pm(9, 10, "tcp", "::ffff:10.77.0.1"),
            ],
            &dual_stack(),
            "eth0",
        )
        .unwrap();
        assert_eq!(
            out,
            [
                m("10.77.0.1:1/tcp", "10.88.0.3:2"),
                m("[fd00:77::1]:3/tcp", "[fd00:88::3]:4"),
                m("5/tcp", "10.88.0.3:6"),
                m("[::]:7/tcp", "[fd00:88::3]:8"),
                m("10.77.0.1:9/tcp", "10.88.0.3:10"),
            ]
        );
    }

    #[test]
    fn only_the_sandbox_interfaces_addresses_count() {
        // The bridge's own address (interface 0) and an address of another sandbox interface
        // come first: skipped. An entry without an index is taken.
        let prev: CniResult = serde_json::from_str(
            r#"{"cniVersion":"1.0.0",
                "interfaces":[{"name":"cni0"},{"name":"eth0","sandbox":"/run/netns/x"},
                              {"name":"net1","sandbox":"/run/netns/x"}],
                "ips":[{"interface":0,"address":"10.88.0.1/16"},
                       {"interface":2,"address":"10.99.0.5/16"},
                       {"interface":1,"address":"fe80::1/64"},
                       {"interface":1,"address":"10.88.0.7/16"},
                       {"address":"fd00:88::7/64"},
                       {"interface":1,"address":"10.88.0.8/16"}]}"#,
        )
        .unwrap();
        assert_eq!(
            ContainerAddrs::of(&prev, "eth0"),
            ContainerAddrs {
                v4: Some("10.88.0.7".parse().unwrap()),
                v6: Some("fd00:88::7".parse().unwrap())
            }
        );
        assert_eq!(
            ContainerAddrs::of(&prev, "net1").v4,
            Some("10.99.0.5".parse().unwrap())
        );
    }

    #[test]
    fn bad_mappings_are_refused_naming_them() {
        let addrs = dual_stack();
        let err = |mapping: PortMapping| {
            to_portfwd(&[pm(80, 80, "tcp", ""), mapping], &addrs, "eth0")
                .unwrap_err()
                .to_string()
        };
        let e = err(pm(8080, 80, "sctp", ""));
        assert!(
            e.contains("portMappings[1] (hostPort 8080)")
                && e.contains("\"sctp\"")
                && e.contains("tcp and udp"),
            "{e}"
        );
        assert!(err(pm(0, 80, "tcp", "")).contains("hostPort 0 is not a port"));
        assert!(err(pm(70000, 80, "tcp", "")).contains("hostPort 70000 is not a port"));
        assert!(err(pm(8080, -1, "tcp", "")).contains("containerPort -1 is not a port"));
        assert!(
            err(pm(8080, 80, "tcp", "localhost"))
                .contains("hostIP \"localhost\" is not an IP address")
        );

        let v4_only = ContainerAddrs {
            v4: Some(Ipv4Addr::new(10, 88, 0, 2)),
            v6: None,
        };
        let e = to_portfwd(&[pm(8080, 80, "tcp", "::1")], &v4_only, "eth0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "portMappings[0] (hostPort 8080): hostIP ::1 is IPv6 but prevResult gives the container no IPv6 address on eth0"
        );
        // Without hostIP, an IPv4-only container publishes IPv4 only.
        assert_eq!(
            to_portfwd(&[pm(8080, 80, "tcp", "")], &v4_only, "eth0").unwrap(),
            [m("8080/tcp", "10.88.0.2:80")]
        );
        let e = to_portfwd(
            &[pm(8080, 80, "tcp", "")],
            &ContainerAddrs::default(),
            "eth0",
        )
        .unwrap_err();
        assert_eq!(
            e,
            MappingError::NoAddress {
                port: 8080,
                ifname: "eth0".into()
            }
        );
        // No mappings: nothing to do, with or without addresses.
        assert!(
            to_portfwd(&[], &ContainerAddrs::default(), "eth0")
                .unwrap()
                .is_empty()
        );
    }
}
