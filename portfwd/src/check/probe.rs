//! Probing a target from the host: the route to it, a TCP connect with a time limit, and the
//! neighbour (ARP) entry of the next hop.

use std::{
    fs,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use nix::errno::Errno;

/// What a TCP connect to the target did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connect {
    /// Connected (and closed again right away); the time from SYN to SYN-ACK, roughly.
    Connected(Duration),
    /// RST: the target's machine answered, nothing listens on that port (or a firewall rejects).
    Refused,
    /// ENETUNREACH: no route at all.
    NoRoute,
    /// EHOSTUNREACH: the next hop did not answer ARP, or a router said so.
    HostUnreachable,
    /// No answer within the time limit.
    TimedOut,
    /// Anything else, with the OS's message.
    Error(String),
}

/// Connects to `target` with `timeout` and closes the connection at once.
pub fn tcp(target: SocketAddr, timeout: Duration) -> Connect {
    let start = Instant::now();
    match TcpStream::connect_timeout(&target, timeout) {
        Ok(stream) => {
            let rtt = start.elapsed();
            drop(stream);
            Connect::Connected(rtt)
        }
        Err(e) => match (e.raw_os_error(), e.kind()) {
            (Some(errno), _) if errno == Errno::ECONNREFUSED as i32 => Connect::Refused,
            (Some(errno), _) if errno == Errno::ENETUNREACH as i32 => Connect::NoRoute,
            (Some(errno), _) if errno == Errno::EHOSTUNREACH as i32 => Connect::HostUnreachable,
            (Some(errno), _) if errno == Errno::ETIMEDOUT as i32 => Connect::TimedOut,
            (_, ErrorKind::TimedOut | ErrorKind::WouldBlock) => Connect::TimedOut,
            _ => Connect::Error(e.to_string()),
        },
    }
}

/// Whether the kernel has a route to `addr`: a UDP socket's `connect` looks the route up and
/// sends nothing. Returns the source address the host would use.
pub fn route_source(addr: IpAddr) -> Result<IpAddr, std::io::Error> {
    let any: IpAddr = match addr {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let s = UdpSocket::bind((any, 0))?;
    s.connect((addr, 9))?;
    Ok(s.local_addr()?.ip())
}

/// A route of the main table (`/proc/net/route`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dev: String,
    /// The next router, or `None` when the target is on the link.
    pub gateway: Option<IpAddr>,
}

impl Route {
    /// The address whose neighbour entry decides whether packets get out: the gateway, or
    /// the target itself.
    pub fn next_hop(&self, target: IpAddr) -> IpAddr {
        self.gateway.unwrap_or(target)
    }
}

/// The main table's most specific route to `addr` in the calling thread's namespace (policy
/// routing and the local table are not looked at).
pub fn route(addr: IpAddr) -> Option<Route> {
    match addr {
        IpAddr::V4(a) => best_route(&fs::read_to_string("/proc/thread-self/net/route").ok()?, a),
        IpAddr::V6(a) => best_route6(
            &fs::read_to_string("/proc/thread-self/net/ipv6_route").ok()?,
            a,
        ),
    }
}

fn hex_addr(s: &str) -> Option<Ipv4Addr> {
    Some(Ipv4Addr::from(
        u32::from_str_radix(s, 16).ok()?.to_ne_bytes(),
    ))
}

/// Longest prefix, then lowest metric, among the routes that are up.
pub fn best_route(table: &str, addr: Ipv4Addr) -> Option<Route> {
    const RTF_UP: u16 = 0x1;
    const RTF_GATEWAY: u16 = 0x2;
    let mut best: Option<(u32, u32, Route)> = None;
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dest), Some(gw), Ok(flags), Ok(metric), Some(mask)) = (
            hex_addr(f[1]),
            hex_addr(f[2]),
            u16::from_str_radix(f[3], 16),
            f[6].parse::<u32>(),
            hex_addr(f[7]),
        ) else {
            continue;
        };
        let mask = u32::from(mask);
        if flags & RTF_UP == 0 || u32::from(addr) & mask != u32::from(dest) & mask {
            continue;
        }
        let better = match &best {
            None => true,
            Some((m, met, _)) => {
                mask.count_ones() > m.count_ones() || (mask == *m && metric < *met)
            }
        };
        if better {
            let gateway = (flags & RTF_GATEWAY != 0 && !gw.is_unspecified()).then_some(gw.into());
            let route = Route {
                dev: f[0].to_owned(),
                gateway,
            };
            best = Some((mask, metric, route));
        }
    }
    best.map(|(_, _, r)| r)
}

/// A neighbour (ARP) entry.
/// [`best_route`] for IPv6, from `/proc/net/ipv6_route` (destination, prefix length, source,
/// source length, next hop, metric, refcount, use, flags, device; hex). Reject routes (the
/// kernel's `unreachable` entries) are skipped.
pub fn best_route6(table: &str, addr: Ipv6Addr) -> Option<Route> {
    const RTF_UP: u32 = 0x1;
    const RTF_GATEWAY: u32 = 0x2;
    const RTF_REJECT: u32 = 0x200;
    let hex6 = |s: &str| u128::from_str_radix(s, 16).ok().map(Ipv6Addr::from);
    let mut best: Option<(u8, u32, Route)> = None;
    for line in table.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(dest), Ok(len), Some(gw), Ok(metric), Ok(flags)) = (
            hex6(f[0]),
            u8::from_str_radix(f[1], 16),
            hex6(f[4]),
            u32::from_str_radix(f[5], 16),
            u32::from_str_radix(f[8], 16),
        ) else {
            continue;
        };
        let Ok(net) = ipnet::Ipv6Net::new(dest, len) else {
            continue;
        };
        if flags & RTF_UP == 0 || flags & RTF_REJECT != 0 || !net.contains(&addr) {
            continue;
        }
        let better = match &best {
            None => true,
            Some((l, met, _)) => len > *l || (len == *l && metric < *met),
        };
        if better {
            let gateway = (flags & RTF_GATEWAY != 0 && !gw.is_unspecified()).then_some(gw.into());
            let route = Route {
                dev: f[9].to_owned(),
                gateway,
            };
            best = Some((len, metric, route));
        }
    }
    best.map(|(_, _, r)| r)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub addr: IpAddr,
    /// Resolved: an answer to ARP was seen (`ATF_COM`). Unresolved entries are ones being
    /// asked for (INCOMPLETE) or that went unanswered (FAILED).
    pub complete: bool,
    /// `aa:bb:cc:dd:ee:ff`, empty when unresolved.
    pub mac: String,
    pub dev: String,
}

/// The neighbour entry of `addr` in the calling thread's namespace, if there is one: from
/// `/proc/net/arp` for IPv4, from a netlink dump for IPv6 (which `/proc` does not show).
pub fn neighbour(addr: IpAddr) -> Option<Neighbour> {
    let addr = match addr {
        IpAddr::V4(a) => a,
        IpAddr::V6(a) => return neighbour6(a),
    };
    let text = fs::read_to_string("/proc/thread-self/net/arp").ok()?;
    parse_arp(&text)
        .into_iter()
        .find(|n| n.addr == IpAddr::V4(addr))
}

/// The IPv6 neighbour entry of `addr`, from an `RTM_GETNEIGH` dump (on a thread-local runtime:
/// the check is synchronous). Complete unless incomplete or failed.
fn neighbour6(addr: Ipv6Addr) -> Option<Neighbour> {
    use futures::TryStreamExt as _;
    use rtnetlink::packet_route::{
        AddressFamily,
        neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourState},
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .ok()?;
    rt.block_on(async {
        let (conn, handle, _) = rtnetlink::new_connection().ok()?;
        let conn = tokio::spawn(conn);
        let mut dump = handle.neighbours().get().set_address_family(AddressFamily::Inet6).execute();
        let mut found = None;
        while let Ok(Some(msg)) = dump.try_next().await {
            let dest = msg.attributes.iter().any(|a| {
                matches!(a, NeighbourAttribute::Destination(NeighbourAddress::Inet6(d)) if *d == addr)
            });
            if !dest {
                continue;
            }
            let complete = !matches!(
                msg.header.state,
                NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
            );
            let mac = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::LinkLayerAddress(l) if complete => Some(
                    l.iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":"),
                ),
                _ => None,
            });
            found = Some(Neighbour {
                addr: IpAddr::V6(addr),
                complete,
                mac: mac.unwrap_or_default(),
                dev: interface_name(msg.header.ifindex),
            });
            break;
        }
        drop(dump);
        conn.abort();
        found
    })
}

/// The name of interface `index` in the calling thread's namespace (empty if gone).
fn interface_name(index: u32) -> String {
    crate::sys::interface_name(index).unwrap_or_default()
}

/// Parses `/proc/net/arp`.
pub fn parse_arp(text: &str) -> Vec<Neighbour> {
    const ATF_COM: u32 = 0x2;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            let complete = flags & ATF_COM != 0;
            Some(Neighbour {
                addr: IpAddr::V4(f[0].parse().ok()?),
                complete,
                mac: if complete {
                    f[3].to_ascii_lowercase()
                } else {
                    String::new()
                },
                dev: f[5].to_owned(),
            })
        })
        .collect()
}

/// `0.08 ms`, `12.3 ms`, `1.20 s`.
pub fn format_rtt(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{:.2} s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_longest_prefix_then_metric() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t01004D0A\t0003\t0\t0\t0\t00000000\t0\t0\t0
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t00004D0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth1\t00004D0A\t00000000\t0001\t0\t0\t5\t00FFFFFF\t0\t0\t0
";
        let r = best_route(table, Ipv4Addr::new(172, 17, 0, 2)).unwrap();
        assert_eq!(r.dev, "docker0");
        assert_eq!(r.gateway, None);
        let target = IpAddr::from(Ipv4Addr::new(172, 17, 0, 2));
        assert_eq!(r.next_hop(target), target);
        let r = best_route(table, Ipv4Addr::new(10, 77, 0, 9)).unwrap();
        assert_eq!(r.dev, "eth0", "lower metric wins");
        let r = best_route(table, Ipv4Addr::new(192, 0, 2, 1)).unwrap();
        assert_eq!(r.gateway, Some(Ipv4Addr::new(10, 77, 0, 1).into()));
        assert!(best_route("header\n", Ipv4Addr::new(192, 0, 2, 1)).is_none());
    }

    #[test]
    fn ipv6_routes_longest_prefix_then_metric_and_no_reject() {
        let table = "\
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000077000000000000000000000001 00000400 00000001 00000000 00000003     eth0
fd000017000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001  docker0
fd000017000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000200 00000001 00000000 00000001    eth1
fd000017000000000000000000000099 80 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
";
        let a = |s: &str| s.parse::<Ipv6Addr>().unwrap();
        let r = best_route6(table, a("fd00:17::2")).unwrap();
        assert_eq!((r.dev.as_str(), r.gateway), ("docker0", None));
        let r = best_route6(table, a("2001:db8::1")).unwrap();
        assert_eq!(r.gateway, Some(a("fd00:77::1").into()));
        let r = best_route6(table, a("fd00:17::99")).unwrap();
        assert_eq!(r.dev, "docker0", "a reject route is not a route");
    }

    #[test]
    fn arp_entries() {
        let text = "IP address       HW type     Flags       HW address            Mask     Device
172.17.0.2       0x1         0x2         02:42:AC:11:00:02     *        docker0
172.17.0.99      0x1         0x0         00:00:00:00:00:00     *        docker0
";
        let n = parse_arp(text);
        assert_eq!(n.len(), 2);
        assert!(n[0].complete);
        assert_eq!(n[0].mac, "02:42:ac:11:00:02");
        assert!(!n[1].complete);
        assert_eq!(n[1].mac, "");
        assert_eq!(n[1].dev, "docker0");
    }

    #[test]
    fn probing_our_own_loopback() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        assert!(matches!(
            tcp(addr, Duration::from_secs(2)),
            Connect::Connected(_)
        ));
        drop(l);
        assert_eq!(tcp(addr, Duration::from_secs(2)), Connect::Refused);
        assert_eq!(
            route_source(Ipv4Addr::LOCALHOST.into()).unwrap(),
            IpAddr::from(Ipv4Addr::LOCALHOST)
        );
    }

    #[test]
    fn rtt_formats() {
        assert_eq!(format_rtt(Duration::from_micros(85)), "0.09 ms");
        assert_eq!(format_rtt(Duration::from_micros(12_340)), "12.3 ms");
        assert_eq!(format_rtt(Duration::from_millis(1200)), "1.20 s");
    }
}
