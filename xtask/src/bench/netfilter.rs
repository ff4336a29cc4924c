//! The netfilter peers' rules: iptables as Docker writes them, and nftables with a DNAT map.
//!
//! Both are loaded in one transaction (`iptables-restore FILE`, `nft -f FILE`), which takes about
//! a second for 10,000 forwards.

use std::fmt::Write as _;

use super::plan::Forward;

/// The targets (protocol, address, port) the forwards lead to, each once, in order.
fn targets(forwards: &[Forward]) -> Vec<Forward> {
    let mut seen: Vec<Forward> = Vec::new();
    for f in forwards {
        if !seen.iter().any(|s| s.proto == f.proto && s.to == f.to) {
            seen.push(*f);
        }
    }
    seen
}

/// `iptables-restore` input with the chains and rules Docker (24-27, iptables backend) writes for
/// containers on `docker0` publishing `forwards`, in order: one DNAT rule per forward in the nat
/// DOCKER chain (so the last forward is matched last), and per target port the filter DOCKER
/// accept rule and the hairpin MASQUERADE rule.
pub fn iptables_restore(bridge: &str, subnet: &str, forwards: &[Forward]) -> String {
    let mut s = String::new();
    s += "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n";
    s += ":POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n";
    s += "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n";
    s += "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n";
    let _ = writeln!(s, "-A POSTROUTING -s {subnet} ! -o {bridge} -j MASQUERADE");
    for t in targets(forwards) {
        let (ip, port, p) = (t.to.ip(), t.to.port(), t.proto.name());
        let _ = writeln!(
            s,
            "-A POSTROUTING -s {ip}/32 -d {ip}/32 -p {p} -m {p} --dport {port} -j MASQUERADE"
        );
    }
    let _ = writeln!(s, "-A DOCKER -i {bridge} -j RETURN");
    for f in forwards {
        let p = f.proto.name();
        let _ = writeln!(
            s,
            "-A DOCKER ! -i {bridge} -p {p} -m {p} --dport {} -j DNAT --to-destination {}",
            f.port, f.to
        );
    }
    s += "COMMIT\n";

    s += "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n";
    s += ":DOCKER - [0:0]\n:DOCKER-ISOLATION-STAGE-1 - [0:0]\n";
    s += ":DOCKER-ISOLATION-STAGE-2 - [0:0]\n:DOCKER-USER - [0:0]\n";
    s += "-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n";
    let _ = writeln!(
        s,
        "-A FORWARD -o {bridge} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    );
    let _ = writeln!(s, "-A FORWARD -o {bridge} -j DOCKER");
    let _ = writeln!(s, "-A FORWARD -i {bridge} ! -o {bridge} -j ACCEPT");
    let _ = writeln!(s, "-A FORWARD -i {bridge} -o {bridge} -j ACCEPT");
    for t in targets(forwards) {
        let (ip, port, p) = (t.to.ip(), t.to.port(), t.proto.name());
        let _ = writeln!(
            s,
            "-A DOCKER -d {ip}/32 ! -i {bridge} -o {bridge} -p {p} -m {p} --dport {port} -j ACCEPT"
        );
    }
    let _ = writeln!(
        s,
        "-A DOCKER-ISOLATION-STAGE-1 -i {bridge} ! -o {bridge} -j DOCKER-ISOLATION-STAGE-2"
    );
    s += "-A DOCKER-ISOLATION-STAGE-1 -j RETURN\n";
    let _ = writeln!(s, "-A DOCKER-ISOLATION-STAGE-2 -o {bridge} -j DROP");
    s += "-A DOCKER-ISOLATION-STAGE-2 -j RETURN\n-A DOCKER-USER -j RETURN\nCOMMIT\n";
    s
}

/// An `nft -f` ruleset doing the same with one DNAT rule per protocol that looks the port up in a
/// map (`dnat ip to udp dport map @fwd_udp`), and the same filtering as Docker's.
pub fn nft_ruleset(bridge: &str, subnet: &str, forwards: &[Forward]) -> String {
    let mut s = String::from("table ip portfwd_bench {\n");
    let protos: Vec<&str> = ["udp", "tcp"]
        .into_iter()
        .filter(|p| forwards.iter().any(|f| f.proto.name() == *p))
        .collect();
    for p in &protos {
        let elements: Vec<String> = forwards
            .iter()
            .filter(|f| f.proto.name() == *p)
            .map(|f| format!("{} : {} . {}", f.port, f.to.ip(), f.to.port()))
            .collect();
        let _ = writeln!(
            s,
            "  map fwd_{p} {{\n    type inet_service : ipv4_addr . inet_service\n    \
             elements = {{ {} }}\n  }}",
            elements.join(", ")
        );
    }
    s += "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n";
    for p in &protos {
        let _ = writeln!(
            s,
            "    iifname != \"{bridge}\" fib daddr type local dnat ip to {p} dport map @fwd_{p}"
        );
    }
    s += "  }\n";
    s += "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n";
    let _ = writeln!(
        s,
        "    ip saddr {subnet} oifname != \"{bridge}\" masquerade\n  }}"
    );
    s += "  chain forward {\n    type filter hook forward priority filter; policy drop;\n";
    let _ = writeln!(
        s,
        "    oifname \"{bridge}\" ct state established,related accept"
    );
    for t in targets(forwards) {
        let _ = writeln!(
            s,
            "    oifname \"{bridge}\" iifname != \"{bridge}\" ip daddr {} {} dport {} accept",
            t.to.ip(),
            t.proto.name(),
            t.to.port()
        );
    }
    let _ = writeln!(s, "    iifname \"{bridge}\" accept\n  }}");
    s += "}\n";
    s
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};

    use super::*;
    use crate::bench::plan::Proto;

    fn fwds() -> Vec<Forward> {
        let to = SocketAddrV4::new(Ipv4Addr::new(172, 17, 0, 2), 9);
        vec![
            Forward {
                port: 10000,
                proto: Proto::Udp,
                to,
            },
            Forward {
                port: 8080,
                proto: Proto::Udp,
                to,
            },
        ]
    }

    #[test]
    fn iptables_has_the_measured_rule_last_and_one_accept_per_target() {
        let rules = iptables_restore("docker0", "172.17.0.0/16", &fwds());
        let dnat: Vec<&str> = rules.lines().filter(|l| l.contains("DNAT")).collect();
        assert_eq!(
            dnat,
            [
                "-A DOCKER ! -i docker0 -p udp -m udp --dport 10000 -j DNAT --to-destination 172.17.0.2:9",
                "-A DOCKER ! -i docker0 -p udp -m udp --dport 8080 -j DNAT --to-destination 172.17.0.2:9",
            ]
        );
        assert_eq!(rules.matches("--dport 9 -j ACCEPT").count(), 1);
        assert!(rules.contains("-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"));
        assert_eq!(rules.matches("COMMIT\n").count(), 2);
    }

    #[test]
    fn nft_uses_one_map_rule() {
        let rules = nft_ruleset("docker0", "172.17.0.0/16", &fwds());
        assert!(rules.contains("elements = { 10000 : 172.17.0.2 . 9, 8080 : 172.17.0.2 . 9 }"));
        assert_eq!(rules.matches("dnat ip to").count(), 1);
        assert!(!rules.contains("fwd_tcp"));
        assert_eq!(rules.matches('{').count(), rules.matches('}').count());
    }
}
