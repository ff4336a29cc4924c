//! The Prometheus endpoint (`metrics: "127.0.0.1:9369"` in the config; off by default).
//!
//! It serves `GET /metrics` in the OpenMetrics text format (which Prometheus scrapes natively),
//! bound only to the configured address. Every scrape reads the maps afresh through the same
//! [`api::Status`] that `portfwd status --json` prints, so the two never disagree:
//!
//! - `portfwd_forward_packets_total` / `portfwd_forward_bytes_total`
//!   `{listen, protocol, to, direction="to_target"|"to_client"}`;
//! - `portfwd_forward_connections_total{listen, protocol, to}`: new flows (a TCP SYN, or a UDP
//!   packet without a flow yet);
//! - `portfwd_drops_total{reason}` (drops only) and `portfwd_verdicts_total{hook, reason}` (every
//!   verdict the datapath took);
//! - `portfwd_map_entries{map}`, `portfwd_map_max_entries{map}`, `portfwd_map_fill_ratio{map}`
//!   (the flow tables' entries derived from their inserts, see `datapath::flows`);
//! - `portfwd_flow_inserts_total{table}`, `portfwd_flow_evictions_total{table}`: flows inserted
//!   into and evicted from each flow table;
//! - `portfwd_interface_attached{interface, mode, exposed}` (1 per attached interface; `mode` is
//!   `tc` or `xdp+tc`);
//! - `portfwd_build_info{version}`.
use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, atomic::AtomicU64},
};

use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge, info::Info},
    registry::Registry,
};

use crate::{
    api,
    error::{Error, chain},
};

/// Where a scrape gets its numbers: the daemon's current status.
pub type Source =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<api::Status, Error>> + Send>> + Send + Sync>;

/// The content type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The exposition text for `status`.
/// The series of pool backends: counters, live flows and whether each takes new flows.
fn register_backends(reg: &mut Registry, status: &api::Status) {
    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let flows = Family::<Labels, Counter>::default();
    let live = Family::<Labels, Gauge>::default();
    let up = Family::<Labels, Gauge>::default();
    for f in &status.forward_counters {
        for b in &f.backends {
            let l = labels(&[
                ("listen", f.listen.as_str()),
                ("protocol", f.protocol.as_str()),
                ("backend", b.target.as_str()),
            ]);
            packets.get_or_create(&l).inc_by(b.packets);
            bytes.get_or_create(&l).inc_by(b.bytes);
            flows.get_or_create(&l).inc_by(b.new_flows);
            live.get_or_create(&l).set(b.live_flows as i64);
            let serving = matches!(
                b.state,
                api::BackendState::Up | api::BackendState::Unchecked
            );
            up.get_or_create(&l).set(i64::from(serving));
        }
    }
    reg.register(
        "backend_packets",
        "Packets sent to a backend of a forward with several backends",
        packets,
    );
    reg.register(
        "backend_bytes",
        "Bytes (IP packets) sent to a backend of a forward with several backends",
        bytes,
    );
    reg.register(
        "backend_connections",
        "New flows placed on a backend",
        flows,
    );
    reg.register(
        "backend_live_flows",
        "Flows remembered on a backend now (its entries in the affinity tables)",
        live,
    );
    reg.register(
        "backend_up",
        "1 while a backend takes new flows (up, or not checked); 0 while down or draining",
        up,
    );
}

pub fn render(status: &api::Status) -> String {
    let mut reg = Registry::with_prefix("portfwd");

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    let connections = Family::<Labels, Counter>::default();
    for f in &status.forward_counters {
        let id = [
            ("listen", f.listen.as_str()),
            ("protocol", f.protocol.as_str()),
            ("to", f.to.as_str()),
        ];
        for (direction, p, b) in [
            ("to_target", f.packets_to_target, f.bytes_to_target),
            ("to_client", f.packets_to_client, f.bytes_to_client),
        ] {
            let mut l = labels(&id);
            l.push(("direction".into(), direction.into()));
            packets.get_or_create(&l).inc_by(p);
            bytes.get_or_create(&l).inc_by(b);
        }
        connections.get_or_create(&labels(&id)).inc_by(f.new_flows);
    }
    reg.register(
        "forward_packets",
        "Packets translated by a forward, by direction",
        packets,
    );
    reg.register(
        "forward_bytes",
        "Bytes (IP packets) translated by a forward, by direction",
        bytes,
    );
    reg.register(
        "forward_connections",
        "New flows through a forward (TCP SYNs, first UDP packets)",
        connections,
    );

    register_backends(&mut reg, status);

    let drops = Family::<Labels, Counter>::default();
    for v in status
        .verdicts
        .iter()
        .filter(|v| v.reason.starts_with("drop_"))
    {
        drops
            .get_or_create(&labels(&[("reason", &v.reason)]))
            .inc_by(v.packets);
    }
    reg.register(
        "drops",
        "Packets the datapath dropped, by reason (all hooks)",
        drops,
    );

    let verdicts = Family::<Labels, Counter>::default();
    for (hook, per) in &status.verdicts_by_hook {
        for (reason, n) in per {
            verdicts
                .get_or_create(&labels(&[("hook", hook), ("reason", reason)]))
                .inc_by(*n);
        }
    }
    reg.register(
        "verdicts",
        "Every verdict the datapath took, by hook and reason",
        verdicts,
    );

    if let Some(d) = &status.docker {
        let gauge = |v: usize| {
            let g = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
            g.set(v as i64);
            g
        };
        reg.register(
            "docker_connected",
            "1 while the Docker follower's event stream is connected (absent: Docker not followed)",
            gauge(usize::from(d.connected)),
        );
        reg.register(
            "docker_forwards",
            "Forwards made from Docker's published ports",
            gauge(d.forwards),
        );
        reg.register(
            "docker_bindings_not_served",
            "Docker's port bindings portfwd leaves (a collision with the config, [::] of an IPv4-only container)",
            gauge(d.not_served.len()),
        );
    }

    let entries = Family::<Labels, Gauge>::default();
    let max_entries = Family::<Labels, Gauge>::default();
    let fill = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    for m in &status.maps {
        let l = labels(&[("map", &m.name)]);
        entries.get_or_create(&l).set(m.entries as i64);
        max_entries.get_or_create(&l).set(m.max_entries as i64);
        let ratio = if m.max_entries == 0 {
            0.0
        } else {
            m.entries as f64 / m.max_entries as f64
        };
        fill.get_or_create(&l).set(ratio);
    }
    reg.register("map_entries", "Entries in use in an eBPF map", entries);
    reg.register("map_max_entries", "Capacity of an eBPF map", max_entries);
    reg.register(
        "map_fill_ratio",
        "Entries in use divided by capacity, per eBPF map",
        fill,
    );

    let inserts = Family::<Labels, Counter>::default();
    let evictions = Family::<Labels, Counter>::default();
    for t in &status.flow_tables {
        let l = labels(&[("table", &t.name)]);
        inserts.get_or_create(&l).inc_by(t.inserted);
        evictions.get_or_create(&l).inc_by(t.evicted);
    }
    reg.register(
        "flow_inserts",
        "Flows the datapath inserted into a flow table (PF_FLOWS*: new, PF_FLOWS*_EST: established)",
        inserts,
    );
    reg.register(
        "flow_evictions",
        "Flows a flow table's LRU evicted to make room for newer ones",
        evictions,
    );

    let attached = Family::<Labels, Gauge>::default();
    for i in &status.interfaces {
        let exposed = if i.exposed { "true" } else { "false" };
        attached
            .get_or_create(&labels(&[
                ("interface", &i.name),
                ("mode", &i.attach),
                ("exposed", exposed),
            ]))
            .set(1);
    }
    reg.register(
        "interface_attached",
        "Interfaces the datapath is attached to, with the attach mode (tc, or xdp+tc)",
        attached,
    );

    reg.register(
        "build",
        "The portfwd daemon's build",
        Info::new(labels(&[("version", &status.version)])),
    );

    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &reg);
    out
}

/// Binds the endpoint's address (before anything else changes, so a taken port rejects the
/// config that asked for it).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, Error> {
    let listener =
        std::net::TcpListener::bind(addr).map_err(|source| Error::Metrics { addr, source })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| Error::Metrics { addr, source })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "the metrics endpoint is reachable from other hosts");
    }
    Ok(listener)
}

/// A running endpoint; stops serving when dropped.
pub struct Endpoint {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `listener` (from [`bind`]) with numbers from `source`. Must run inside the runtime.
pub fn spawn(listener: std::net::TcpListener, source: Source) -> Result<Endpoint, Error> {
    let addr = listener.local_addr().map_err(|source| Error::Metrics {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)
        .map_err(|source| Error::Metrics { addr, source })?;
    tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    let task = tokio::spawn(serve(listener, source));
    Ok(Endpoint { addr, task })
}

async fn serve(listener: tokio::net::TcpListener, source: Source) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!("metrics accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| answer(req, source.clone()));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

async fn answer(
    req: Request<hyper::body::Incoming>,
    source: Source,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let reply = |code: StatusCode, ctype: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = code;
        if let Ok(v) = header::HeaderValue::from_str(ctype) {
            r.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        r
    };
    let text = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            text,
            "not found: portfwd serves /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            "use GET\n".into(),
        ));
    }
    Ok(match source().await {
        Ok(status) => reply(StatusCode::OK, CONTENT_TYPE, render(&status)),
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            text,
            format!("reading the counters failed: {}\n", chain(&e)),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> api::Status {
        let mut by_hook = std::collections::BTreeMap::new();
        by_hook.insert(
            "tc".to_owned(),
            [
                ("forwarded".to_owned(), 7u64),
                ("drop_no_route".to_owned(), 2),
            ]
            .into_iter()
            .collect(),
        );
        api::Status {
            config: "/etc/portfwd/portfwd.yaml".into(),
            interfaces: vec![api::InterfaceStatus {
                name: "eth0".into(),
                ifindex: 2,
                attach: "xdp+tc".into(),
                exposed: true,
            }],
            host_addresses: vec!["10.0.0.1".into()],
            forwards: 1,
            flows: 1,
            flow_tables: vec![api::FlowTableStatus {
                name: "PF_FLOWS".into(),
                entries: 4,
                max_entries: 4,
                inserted: 9,
                evicted: 5,
            }],
            verdicts: vec![
                api::VerdictCount {
                    reason: "forwarded".into(),
                    packets: 7,
                },
                api::VerdictCount {
                    reason: "drop_no_route".into(),
                    packets: 2,
                },
            ],
            verdicts_by_hook: by_hook,
            forward_counters: vec![api::ForwardEntry {
                listen: "8080/tcp".into(),
                protocol: "tcp".into(),
                to: "172.17.0.2:3000".into(),
                packets_to_target: 5,
                bytes_to_target: 300,
                packets_to_client: 4,
                bytes_to_client: 250,
                new_flows: 1,
                allow: Vec::new(),
                origin: api::CONFIG_ORIGIN.into(),
                container: None,
                inactive: None,
                backends: vec![api::BackendStatus {
                    target: "172.17.0.3:3000".into(),
                    weight: 1,
                    state: api::BackendState::Down,
                    packets: 6,
                    bytes: 360,
                    new_flows: 2,
                    live_flows: 1,
                }],
            }],
            maps: vec![api::MapFill {
                name: "PF_FLOWS".into(),
                entries: 1,
                max_entries: 4,
            }],
            version: "0.1.0".into(),
            metrics: None,
            host_local: api::HostLocalStatus::default(),
            reserved_ports: None,
            docker: Some(api::DockerStatus {
                connected: true,
                forwards: 3,
                ..Default::default()
            }),
            pools: None,
        }
    }

    #[test]
    fn every_series_is_rendered_with_its_labels() {
        let text = render(&status());
        for line in [
            r#"portfwd_forward_packets_total{listen="8080/tcp",protocol="tcp",to="172.17.0.2:3000",direction="to_target"} 5"#,
            r#"portfwd_forward_bytes_total{listen="8080/tcp",protocol="tcp",to="172.17.0.2:3000",direction="to_client"} 250"#,
            r#"portfwd_forward_connections_total{listen="8080/tcp",protocol="tcp",to="172.17.0.2:3000"} 1"#,
            r#"portfwd_drops_total{reason="drop_no_route"} 2"#,
            r#"portfwd_verdicts_total{hook="tc",reason="forwarded"} 7"#,
            r#"portfwd_map_entries{map="PF_FLOWS"} 1"#,
            "portfwd_docker_connected 1",
            r#"portfwd_backend_packets_total{listen="8080/tcp",protocol="tcp",backend="172.17.0.3:3000"} 6"#,
            r#"portfwd_backend_bytes_total{listen="8080/tcp",protocol="tcp",backend="172.17.0.3:3000"} 360"#,
            r#"portfwd_backend_connections_total{listen="8080/tcp",protocol="tcp",backend="172.17.0.3:3000"} 2"#,
            r#"portfwd_backend_live_flows{listen="8080/tcp",protocol="tcp",backend="172.17.0.3:3000"} 1"#,
            r#"portfwd_backend_up{listen="8080/tcp",protocol="tcp",backend="172.17.0.3:3000"} 0"#,
            "portfwd_docker_forwards 3",
            "portfwd_docker_bindings_not_served 0",
            r#"portfwd_map_max_entries{map="PF_FLOWS"} 4"#,
            r#"portfwd_map_fill_ratio{map="PF_FLOWS"} 0.25"#,
            r#"portfwd_flow_inserts_total{table="PF_FLOWS"} 9"#,
            r#"portfwd_flow_evictions_total{table="PF_FLOWS"} 5"#,
            r#"portfwd_interface_attached{interface="eth0",mode="xdp+tc",exposed="true"} 1"#,
            r#"portfwd_build_info{version="0.1.0"} 1"#,
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line} in:\n{text}"
            );
        }
        assert!(
            !text.contains(r#"portfwd_drops_total{reason="forwarded"}"#),
            "only drops are drops:\n{text}"
        );
    }
}
