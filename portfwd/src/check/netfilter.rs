//! DNAT rules of iptables and nftables (`iptables-save -t nat`, `nft list ruleset`) that
//! publish host ports too, e.g. Docker's `-A DOCKER ... --dport 8080 -j DNAT --to-destination
//! 172.17.0.2:80`.

use std::{
    io::Read as _,
    ops::RangeInclusive,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use serde::Serialize;

use crate::publish::Protocol;

/// How long one of the commands may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// A rule that rewrites the destination of packets to some ports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NatRule {
    /// `iptables` or `nftables`.
    pub tool: &'static str,
    /// `None` when the rule matches every protocol.
    pub protocol: Option<Protocol>,
    #[serde(skip)]
    pub ports: Vec<RangeInclusive<u16>>,
    /// `172.17.0.2:80`, `:3000` for a REDIRECT, as the rule says it.
    pub to: String,
    /// The rule as the tool prints it.
    pub rule: String,
}

impl NatRule {
    /// Whether the rule takes packets for `port`/`protocol`.
    pub fn covers(&self, protocol: Protocol, port: u16) -> bool {
        self.protocol.is_none_or(|p| p == protocol) && self.ports.iter().any(|r| r.contains(&port))
    }
}

/// The DNAT rules of both tools in the calling process's namespace, with a note for each tool
/// that could not be asked. Rules that both show (iptables-nft's rules are nftables rules too)
/// are kept once.
pub fn rules() -> (Vec<NatRule>, Vec<String>) {
    let mut notes = Vec::new();
    let mut rules = Vec::new();
    match run("iptables-save", &["-t", "nat"]) {
        Ok(text) => rules.extend(parse_iptables(&text)),
        Err(e) => notes.push(format!("iptables rules not checked: {e}")),
    }
    match run("nft", &["list", "ruleset"]) {
        Ok(text) => {
            for r in parse_nft(&text) {
                if !rules
                    .iter()
                    .any(|o| o.protocol == r.protocol && o.ports == r.ports && o.to == r.to)
                {
                    rules.push(r);
                }
            }
        }
        Err(e) => notes.push(format!("nftables rules not checked: {e}")),
    }
    (rules, notes)
}

/// Runs `program args`, at most [`COMMAND_TIMEOUT`], and returns its stdout.
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => format!("`{program}` is not installed"),
            _ => format!("cannot run `{program}`: {e}"),
        })?;
    let mut stdout = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(out) = stdout.as_mut() {
            let _ = out.read_to_string(&mut s);
        }
        s
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`{program}` did not finish within {COMMAND_TIMEOUT:?}"
                ));
            }
        }
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let err = err.lines().next().unwrap_or("").trim().to_owned();
        return Err(format!("`{program}` failed ({status}): {err}"));
    }
    Ok(out)
}

/// `8080`, `8000:8100` (iptables) or `8000-8100` (nft).
fn port_range(s: &str) -> Option<RangeInclusive<u16>> {
    let s = s.trim();
    match s.split_once([':', '-']) {
        Some((a, b)) => Some(a.trim().parse().ok()?..=b.trim().parse().ok()?),
        None => {
            let p = s.parse().ok()?;
            Some(p..=p)
        }
    }
}

/// The DNAT and REDIRECT rules of `iptables-save -t nat`.
pub fn parse_iptables(text: &str) -> Vec<NatRule> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if !line.starts_with("-A ") {
            continue;
        }
        let t: Vec<&str> = line.split_whitespace().collect();
        let after = |flag: &str| {
            t.iter()
                .position(|w| *w == flag)
                .and_then(|i| t.get(i + 1).copied())
        };
        let negated = |flag: &str| {
            t.iter()
                .position(|w| *w == flag)
                .is_some_and(|i| i > 0 && t[i - 1] == "!")
        };
        let target = after("-j");
        let to = match target {
            Some("DNAT") => after("--to-destination").map(str::to_owned),
            Some("REDIRECT") => after("--to-ports").map(|p| format!(":{p}")),
            _ => None,
        };
        let Some(to) = to else { continue };
        let protocol = after("-p").and_then(|p| p.parse::<Protocol>().ok());
        let mut ports = Vec::new();
        for flag in ["--dport", "--destination-port"] {
            if let Some(p) = after(flag).filter(|_| !negated(flag)) {
                ports.extend(port_range(p));
            }
        }
        for flag in ["--dports", "--destination-ports"] {
            if let Some(list) = after(flag).filter(|_| !negated(flag)) {
                ports.extend(list.split(',').filter_map(port_range));
            }
        }
        if ports.is_empty() {
            continue;
        }
        out.push(NatRule {
            tool: "iptables",
            protocol,
            ports,
            to,
            rule: line.to_owned(),
        });
    }
    out
}

/// The `dnat` and `redirect` rules of `nft list ruleset`.
pub fn parse_nft(text: &str) -> Vec<NatRule> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let t: Vec<&str> = line.split_whitespace().collect();
        let Some(verb) = t.iter().position(|w| *w == "dnat" || *w == "redirect") else {
            continue;
        };
        // `dnat to X`, `dnat ip to X`, `redirect to :P`.
        let to = t[verb + 1..]
            .iter()
            .position(|w| *w == "to")
            .and_then(|i| t.get(verb + 1 + i + 1))
            .map(|s| s.to_string());
        let Some(to) = to else { continue };
        let mut protocol = None;
        let mut ports = Vec::new();
        for (i, w) in t[..verb].iter().enumerate() {
            if *w != "dport" || i == 0 {
                continue;
            }
            match t[i - 1] {
                "tcp" => protocol = Some(Protocol::Tcp),
                "udp" => protocol = Some(Protocol::Udp),
                // `meta l4proto tcp th dport 8080`
                "th" => {}
                _ => continue,
            }
            let Some(next) = t.get(i + 1) else { continue };
            if next.starts_with("!=") {
                continue;
            }
            if *next == "{" {
                let set: Vec<&str> = t[i + 2..]
                    .iter()
                    .take_while(|w| **w != "}")
                    .copied()
                    .collect();
                ports.extend(
                    set.join(" ")
                        .split(',')
                        .filter_map(|p| port_range(p.trim())),
                );
            } else {
                ports.extend(port_range(next));
            }
        }
        if protocol.is_none()
            && let Some(i) = t[..verb].iter().position(|w| *w == "l4proto")
        {
            protocol = t.get(i + 1).and_then(|p| p.parse().ok());
        }
        if ports.is_empty() {
            continue;
        }
        out.push(NatRule {
            tool: "nftables",
            protocol,
            ports,
            to,
            rule: line.to_owned(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockers_iptables_rules() {
        let text = "# Generated by iptables-save v1.8.9
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
-A DOCKER -p udp -m multiport --dports 53,5000:5010 -j DNAT --to-destination 172.17.0.3
-A OUTPUT -p tcp -m tcp ! --dport 22 -j DNAT --to-destination 10.0.0.1
-A PREROUTING -p tcp -m tcp --dport 9000 -j REDIRECT --to-ports 3000
COMMIT
";
        let r = parse_iptables(text);
        assert_eq!(r.len(), 3, "{r:#?}");
        assert_eq!(r[0].to, "172.17.0.2:80");
        assert!(r[0].covers(Protocol::Tcp, 8080));
        assert!(!r[0].covers(Protocol::Udp, 8080));
        assert!(!r[0].covers(Protocol::Tcp, 8081));
        assert!(r[1].covers(Protocol::Udp, 53) && r[1].covers(Protocol::Udp, 5005));
        assert!(!r[1].covers(Protocol::Udp, 5011));
        assert_eq!(r[2].to, ":3000");
        assert!(r[2].covers(Protocol::Tcp, 9000));
    }

    #[test]
    fn nft_rules() {
        let text = "table ip nat {
	chain PREROUTING {
		type nat hook prerouting priority dstnat; policy accept;
		iifname != \"docker0\" meta l4proto tcp tcp dport 8080 counter packets 0 bytes 0 dnat to 172.17.0.2:80
		udp dport { 53, 5000-5010 } dnat ip to 172.17.0.3
		meta l4proto tcp th dport 7000 dnat to 10.0.0.9:70
		tcp dport != 22 dnat to 10.0.0.1
		tcp dport 9000 redirect to :3000
		ip saddr 10.0.0.0/8 masquerade
	}
}
";
        let r = parse_nft(text);
        assert_eq!(r.len(), 4, "{r:#?}");
        assert!(r[0].covers(Protocol::Tcp, 8080));
        assert_eq!(r[0].to, "172.17.0.2:80");
        assert!(r[1].covers(Protocol::Udp, 53) && r[1].covers(Protocol::Udp, 5010));
        assert!(!r[1].covers(Protocol::Tcp, 53));
        assert!(r[2].covers(Protocol::Tcp, 7000));
        assert_eq!(r[3].to, ":3000");
    }
}
