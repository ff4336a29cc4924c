//! [`Container`]: what portfwd needs of a Docker container, read from the Engine API's inspect
//! answer (`GET /containers/{id}/json`).
//!
//! Docker publishes a container's ports on one network: the one its `HostConfig.NetworkMode`
//! names (`default` is the `bridge` network). Its DNAT sends packets to the container's address
//! on that network, and so does portfwd. A container on host networking (`NetworkMode: host`),
//! with no network or sharing another's (`container:ID`) publishes nothing.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use bollard::models::{ContainerInspectResponse, ContainerStateStatusEnum};
use serde::{Deserialize, Serialize};

use crate::publish::Protocol;

/// A container, as its inspect answer describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    /// The full container id.
    pub id: String,
    /// The name, without Docker's leading `/`.
    pub name: String,
    /// Docker's state: `running`, `restarting`, `exited`, `paused`, ...
    pub status: String,
    /// The network its ports are published on, when it has one.
    pub network: Option<String>,
    /// Its IPv4 address on that network.
    pub ipv4: Option<Ipv4Addr>,
    /// Its global IPv6 address on that network (Docker with `--ipv6` networks).
    pub ipv6: Option<Ipv6Addr>,
    /// Its resolved port bindings (`NetworkSettings.Ports`), one per host port.
    pub bindings: Vec<Binding>,
    /// The compose service it is a replica of (its `com.docker.compose.service` label, which
    /// `docker compose` sets on every container of a service, numbered replicas alike).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
}

/// The label `docker compose` puts on each container of a service, with the service's name.
pub const COMPOSE_SERVICE_LABEL: &str = "com.docker.compose.service";

/// One resolved binding: Docker lists a range `-p 9000-9002:9000-9002` port by port, and `-P`
/// with the host ports it chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Binding {
    /// `HostIp`: `None` for Docker's empty host IP (every address of both families).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl Container {
    /// Reads an inspect answer; `None` when it lacks an id or a name (never the case for what
    /// dockerd sends).
    pub fn from_inspect(r: &ContainerInspectResponse) -> Option<Container> {
        let id = r.id.clone()?;
        let name = r.name.as_deref()?.trim_start_matches('/').to_owned();
        let status = r
            .state
            .as_ref()
            .and_then(|s| s.status)
            .unwrap_or(ContainerStateStatusEnum::EMPTY)
            .to_string();
        let settings = r.network_settings.as_ref();
        let mode = r
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            .unwrap_or("default");
        let networks = settings.and_then(|s| s.networks.as_ref());
        let network = match mode {
            "host" | "none" => None,
            m if m.starts_with("container:") => None,
            "default" => Some("bridge".to_owned()),
            m => Some(m.to_owned()),
        }
        // A network given by id in NetworkMode is listed by name in Networks: take the one
        // whose id it is, else the only one.
        .and_then(|wanted| {
            let networks = networks?;
            if networks.contains_key(&wanted) {
                return Some(wanted);
            }
            networks
                .iter()
                .find(|(_, e)| e.network_id.as_deref() == Some(&wanted))
                .map(|(n, _)| n.clone())
                .or_else(|| (networks.len() == 1).then(|| networks.keys().next().cloned())?)
        });
        let endpoint = network
            .as_ref()
            .and_then(|n| networks.and_then(|all| all.get(n)));
        let ipv4 = endpoint
            .and_then(|e| e.ip_address.as_deref())
            .and_then(|a| a.parse().ok());
        let ipv6 = endpoint
            .and_then(|e| e.global_ipv6_address.as_deref())
            .and_then(|a| a.parse().ok());
        let mut bindings = Vec::new();
        if network.is_some() {
            for (key, list) in settings
                .and_then(|s| s.ports.as_ref())
                .into_iter()
                .flatten()
            {
                let Some((port, proto)) = key.split_once('/') else {
                    continue;
                };
                let (Ok(container_port), Ok(protocol)) =
                    (port.parse::<u16>(), proto.parse::<Protocol>())
                else {
                    // sctp, which portfwd does not forward.
                    continue;
                };
                for b in list.iter().flatten() {
                    let Some(host_port) = b.host_port.as_deref().and_then(|p| p.parse().ok())
                    else {
                        continue;
                    };
                    let host_ip = match b.host_ip.as_deref().unwrap_or("") {
                        "" => None,
                        ip => match ip.parse() {
                            Ok(ip) => Some(ip),
                            Err(_) => continue,
                        },
                    };
                    bindings.push(Binding {
                        host_ip,
                        host_port,
                        container_port,
                        protocol,
                    });
                }
            }
        }
        bindings.sort();
        bindings.dedup();
        let service = r
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(COMPOSE_SERVICE_LABEL))
            .cloned();
        Some(Container {
            service,
            id,
            name,
            status,
            network,
            ipv4,
            ipv6,
            bindings,
        })
    }

    /// The first 12 characters of the id, as `docker ps` shows it.
    pub fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }

    /// Whether Docker has it running (a paused container keeps its ports published).
    pub fn is_running(&self) -> bool {
        matches!(self.status.as_str(), "running" | "paused")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn fixture(name: &str) -> Container {
        let path = format!(
            "{}/tests/fixtures/docker/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let r: ContainerInspectResponse =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
        Container::from_inspect(&r).unwrap()
    }

    #[test]
    fn a_published_container_as_dockerd_20_10_describes_it() {
        let c = fixture("inspect-publish");
        assert_eq!(c.status, "running");
        assert_eq!(c.network.as_deref(), Some("bridge"));
        assert!(c.ipv4.is_some());
        assert_eq!(c.ipv6, None);
        assert!(c.is_running());
        // `-p 8080:3000` is listed twice: 0.0.0.0 and ::.
        let hosts: Vec<Option<IpAddr>> = c.bindings.iter().map(|b| b.host_ip).collect();
        assert_eq!(
            hosts,
            vec![
                Some(Ipv4Addr::UNSPECIFIED.into()),
                Some(Ipv6Addr::UNSPECIFIED.into())
            ]
        );
        assert!(
            c.bindings
                .iter()
                .all(|b| (b.host_port, b.container_port) == (8080, 3000))
        );
    }

    #[test]
    fn ranges_udp_loopback_and_publish_all() {
        let range = fixture("inspect-range");
        let ports: Vec<(u16, u16)> = range
            .bindings
            .iter()
            .filter(|b| b.host_ip == Some(Ipv4Addr::UNSPECIFIED.into()))
            .map(|b| (b.host_port, b.container_port))
            .collect();
        assert_eq!(ports, vec![(9000, 9000), (9001, 9001), (9002, 9002)]);
        let udp = fixture("inspect-udp");
        assert!(udp.bindings.iter().all(|b| b.protocol == Protocol::Udp));
        let lo = fixture("inspect-loopback");
        assert_eq!(
            lo.bindings.iter().map(|b| b.host_ip).collect::<Vec<_>>(),
            vec![Some(Ipv4Addr::LOCALHOST.into())]
        );
        let all = fixture("inspect-publish-all");
        assert!(!all.bindings.is_empty());
        assert!(all.bindings.iter().all(|b| b.host_port >= 1024));
    }

    #[test]
    fn paused_is_still_published_exited_is_not() {
        let mut c = fixture("inspect-publish");
        c.status = "paused".into();
        assert!(c.is_running());
        c.status = "exited".into();
        assert!(!c.is_running());
        assert_eq!(c.short_id().len(), 12);
    }
}
