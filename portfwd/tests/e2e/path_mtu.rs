//! Path MTU through a published port, as with iptables DNAT: the container's network has MTU
//! 1400 (docker0, the veths, the container's interface, as Docker sets a network's
//! `com.docker.network.driver.mtu`) behind the host's 1500-byte uplink, and the container
//! advertises the uplink's MSS (a route's `advmss`), as a server does when the narrow link is
//! further on. A client's packet too big for that network, with DF, must come back as ICMP
//! "fragmentation needed" / ICMPv6 "packet too big" carrying 1400, so that the client's kernel
//! learns the path's MTU: `ip route get` in the client shows `mtu 1400` for the published
//! address. Each case runs once with Docker's iptables (ip6tables) DNAT rules and once with
//! portfwd (in the mode `PORTFWD_E2E_MODE` says), in both families.

use std::net::{IpAddr, SocketAddr, UdpSocket};

use portfwd_lab::{self as lab, Lab, TcpServer, UdpServer};

use crate::support::{self, Daemon, T, host_port, host6};

/// How the ports are published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Publisher {
    /// Docker's nat rules: DNAT in the DOCKER chain, from PREROUTING (the host's forwarding
    /// sends the ICMP; conntrack translates its quote back).
    Iptables,
    Portfwd,
}

const MTU: u32 = 1400;

/// The lab: one container on a 1400-byte network, its servers, and the publisher.
struct World {
    daemon: Option<Daemon>,
    /// TCP on 3000 and UDP on 5353, IPv4 then IPv6.
    servers: (TcpServer, TcpServer, UdpServer, UdpServer),
    lab: Lab,
}

impl World {
    fn new(tag: &str, publisher: Publisher) -> World {
        let mut lab = Lab::new(tag).unwrap();
        let c1 = lab.add_container("c1").unwrap();
        lab.sh(
            lab.host(),
            &format!(
                "ip link set {} mtu {MTU} && ip link set docker0 mtu {MTU}",
                c1.host_veth
            ),
        )
        .unwrap();
        lab.sh(
            &c1.ns,
            &format!(
                "ip link set eth0 mtu {MTU} && \
                 ip route replace default via {} dev eth0 advmss 1460 && \
                 ip -6 route replace default via {} dev eth0 advmss 1440",
                Lab::BRIDGE_ADDR,
                Lab::BRIDGE_ADDR6
            ),
        )
        .unwrap();
        let at = |a: IpAddr, port| SocketAddr::new(a, port);
        let servers = (
            lab::tcp_server(&c1.ns, at(c1.addr.into(), 3000), "c1:3000").unwrap(),
            lab::tcp_server(&c1.ns, at(c1.addr6.into(), 3000), "c1:3000").unwrap(),
            lab::udp_server(&c1.ns, at(c1.addr.into(), 5353), "c1:5353").unwrap(),
            lab::udp_server(&c1.ns, at(c1.addr6.into(), 5353), "c1:5353").unwrap(),
        );
        let daemon = match publisher {
            Publisher::Iptables => {
                let rules = |ipt: &str, udp: String, tcp: String| {
                    format!(
                        "{ipt} -t nat -N DOCKER && \
                         {ipt} -t nat -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER && \
                         {ipt} -t nat -A DOCKER ! -i docker0 -p udp -m udp --dport 5353 \
                         -j DNAT --to-destination {udp} && \
                         {ipt} -t nat -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 \
                         -j DNAT --to-destination {tcp}"
                    )
                };
                let v4 = rules(
                    "iptables",
                    format!("{}:5353", c1.addr),
                    format!("{}:3000", c1.addr),
                );
                let v6 = rules(
                    "ip6tables",
                    format!("[{}]:5353", c1.addr6),
                    format!("[{}]:3000", c1.addr6),
                );
                lab.sh(lab.host(), &format!("{v4} && {v6}")).unwrap();
                None
            }
            Publisher::Portfwd => {
                // 8080/tcp -> c1:3000 and 5353/udp -> c1:5353, in each family.
                let config = [
                    ("8080", format!("{}:3000", c1.addr)),
                    ("5353/udp", format!("{}:5353", c1.addr)),
                    ("[::]:8080", format!("[{}]:3000", c1.addr6)),
                    ("[::]:5353/udp", format!("[{}]:5353", c1.addr6)),
                ]
                .iter()
                .map(|(listen, to)| support::forward_yaml(listen, to))
                .collect::<String>();
                Some(Daemon::start(&mut lab, &format!("forwards:\n{config}")))
            }
        };
        World {
            daemon,
            servers,
            lab,
        }
    }

    /// The MTU the client's kernel holds for `addr` (its route cache), if it learned one.
    fn learned_mtu(&self, addr: IpAddr) -> Option<u32> {
        let out = self
            .lab
            .sh(self.lab.client(), &format!("ip route get {addr}"))
            .unwrap();
        let mut words = out.split_whitespace();
        words.find(|w| *w == "mtu")?;
        words.next()?.parse().ok()
    }

    /// Forgets what the client learned.
    fn forget(&self) {
        self.lab
            .sh(
                self.lab.client(),
                "ip route flush cache && ip -6 route flush cache",
            )
            .unwrap();
    }

    /// Waits until the client has learned `MTU` for `addr`; says what it holds otherwise.
    fn assert_learned(&self, addr: IpAddr, what: &str) {
        let learned = support::eventually(|| self.learned_mtu(addr) == Some(MTU));
        assert!(
            learned.is_ok(),
            "{what}: the client did not learn MTU {MTU} for {addr} (holds {:?})",
            self.learned_mtu(addr)
        );
    }

    /// portfwd's count of `reason`.
    fn counted(&self, reason: &str) -> u64 {
        let d = self.daemon.as_ref().expect("portfwd runs");
        support::verdict(&d.status_json(&self.lab), reason)
    }

    /// Sends `len` bytes in one datagram from the client to `to`.
    fn send_udp(&self, to: SocketAddr, len: usize) {
        let unspecified: SocketAddr = if to.is_ipv4() {
            "0.0.0.0:0".parse().unwrap()
        } else {
            "[::]:0".parse().unwrap()
        };
        self.lab.client().run(|| {
            let s = UdpSocket::bind(unspecified).unwrap();
            s.send_to(&vec![0x55; len], to).unwrap();
        });
    }
}

/// A DF datagram of 1450 bytes (1478 and 1498 on the wire) to a published UDP port: the
/// container's 1400-byte network cannot take it; the client learns 1400.
#[test]
fn a_df_datagram_too_big_teaches_the_client_the_mtu_as_with_iptables() {
    require_root!();
    for publisher in [Publisher::Iptables, Publisher::Portfwd] {
        let w = World::new("pmtuudp", publisher);
        for to in [host_port(5353), host6(5353)] {
            let what = format!("{publisher:?}, UDP to {to}");
            w.forget();
            // IPv4 UDP sockets set DF by default (IP_PMTUDISC_WANT).
            w.send_udp(to, 1450);
            w.assert_learned(to.ip(), &what);
        }
        if publisher == Publisher::Portfwd {
            let n = w.counted("icmp_too_big_sent");
            assert!(n >= 2, "portfwd counted {n} answers");
        }
    }
}

/// A bulk upload over TCP: the client starts with 1460-byte segments (the MSS the container
/// advertises), the first ones too big for the container's network; told so, it lowers its MSS
/// and the transfer completes.
#[test]
fn a_tcp_upload_learns_the_path_mtu_and_completes_as_with_iptables() {
    require_root!();
    let line = "p".repeat(300_000);
    for publisher in [Publisher::Iptables, Publisher::Portfwd] {
        let w = World::new("pmtutcp", publisher);
        for to in [host_port(8080), host6(8080)] {
            let what = format!("{publisher:?}, TCP to {to}");
            w.forget();
            let reply = lab::tcp_request(w.lab.client(), to, &line, T)
                .unwrap_or_else(|e| panic!("{what}: the upload did not complete: {e:#}"));
            assert!(
                reply.starts_with("c1:3000 from ") && reply.ends_with(&line),
                "{what}: the server did not get the whole line ({} bytes back)",
                reply.len()
            );
            w.assert_learned(to.ip(), &what);
        }
        if publisher == Publisher::Portfwd {
            let n = w.counted("icmp_too_big_sent");
            assert!(n >= 2, "portfwd counted {n} answers");
        }
    }
}

/// IPv4 without DF (the client's `ip_no_pmtu_disc`): the datagram too big for the container's
/// network is fragmented on the way by the host and delivered; nothing is answered.
#[test]
fn a_datagram_too_big_without_df_is_fragmented_on_the_way_as_with_iptables() {
    require_root!();
    for publisher in [Publisher::Iptables, Publisher::Portfwd] {
        let w = World::new("pmtufrag", publisher);
        w.lab
            .sh(w.lab.client(), "sysctl -qw net.ipv4.ip_no_pmtu_disc=1")
            .unwrap();
        w.send_udp(host_port(5353), 1450);
        let udp = &w.servers.2;
        assert!(
            support::eventually(|| !udp.peers().is_empty()).is_ok(),
            "{publisher:?}: the datagram did not reach the container"
        );
        assert_eq!(w.learned_mtu(host_port(5353).ip()), None, "{publisher:?}");
        if publisher == Publisher::Portfwd {
            assert!(w.counted("forwarded_via_stack") >= 1);
            assert_eq!(w.counted("icmp_too_big_sent"), 0);
        }
    }
}
