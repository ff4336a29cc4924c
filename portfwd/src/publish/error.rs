//! [`PublishError`]: why a forward, or one of its sides, does not parse; and [`printable`],
//! which keeps the input a message quotes on one line.

use std::{borrow::Cow, net::IpAddr};

use ipnet::IpNet;

use super::{family::Family, protocol::Protocol};

/// Why a forward, or one of its sides, does not parse. Every message is one line and quotes
/// the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The whole value is empty.
    #[error("empty value (expected {expected})")]
    Empty {
        /// The form that was expected, e.g. `[HOST_IP:]HOST_PORT[/PROTO]`.
        expected: &'static str,
    },
    /// A port that is a number but not in 1-65535.
    #[error("port {} is outside 1-65535", printable(.0))]
    PortOutOfRange(String),
    /// A port that is not a decimal number.
    #[error("'{}' is not a port number", printable(.0))]
    NotAPort(String),
    /// An address that is neither a dotted-quad IPv4 address nor an IPv6 address in brackets.
    #[error("'{}' is not an IP address", printable(.0))]
    NotAnAddress(String),
    /// An IPv6 address followed by a port without brackets (`fd00::2:3000`, itself a valid
    /// IPv6 address, so the port cannot be told apart).
    #[error(
        "'{}': write an IPv6 address in brackets before its port, e.g. [fd00::2]:3000",
        printable(.0)
    )]
    Ipv6WithoutBrackets(String),
    /// A protocol other than tcp or udp.
    #[error("unknown protocol '{}' (expected tcp or udp)", printable(.0))]
    UnknownProtocol(String),
    /// A target given as a bare address.
    #[error("'{}' needs a port: IP:PORT", printable(.0))]
    MissingPort(String),
    /// A target given as a bare port.
    #[error("'{}' needs an address: IP:PORT", printable(.0))]
    MissingAddress(String),
    /// A target that is neither `IP:PORT`, nor a bare address or port.
    #[error("'{}' is not IP:PORT (e.g. 172.17.0.2:3000 or [fd00::2]:3000)", printable(.0))]
    NotATarget(String),
    /// A target with a `/proto` suffix: the protocol belongs to the listen side.
    #[error(
        "'{}' carries a protocol; give it on the listen side instead (e.g. 8080/udp)",
        printable(.0)
    )]
    ProtocolOnTarget(String),
    /// A forward without the `->` between its sides.
    #[error("'{}' is not LISTEN -> TARGET", printable(.0))]
    NotAForward(String),
    /// A listen address that cannot receive a published port.
    #[error("listen address {addr} is {reason}")]
    BadListenAddress {
        /// The address as given.
        addr: IpAddr,
        /// Why it is refused, e.g. "multicast; a host address must be unicast".
        reason: &'static str,
    },
    /// A target address that cannot be forwarded to.
    #[error("target address {addr} is {reason}")]
    BadTargetAddress {
        /// The address as given.
        addr: IpAddr,
        /// Why it is refused.
        reason: &'static str,
    },
    /// `sctp`: Docker accepts it, portfwd does not (yet). Its datapath would rewrite only the IP
    /// address (SCTP's CRC32c covers no pseudo-header), but the kernels portfwd is built and
    /// tested on have no SCTP stack to prove it with a real association.
    #[error("sctp is not supported yet: portfwd forwards tcp and udp")]
    SctpUnsupported,
    /// The two sides of a forward are of different families.
    #[error(
        "{listen} is {listen_family} but {to} is {to_family}; portfwd does not translate between IPv4 and IPv6: publish an {to_family} target on an {to_family} host address or a bare port, or give the container's {listen_family} address"
    )]
    FamilyMismatch {
        /// The listen side, canonical.
        listen: String,
        /// Its family.
        listen_family: Family,
        /// The target side, canonical.
        to: String,
        /// Its family.
        to_family: Family,
    },
    /// Something in brackets that is not an IPv6 address.
    #[error("'{}' is not an IPv6 address in brackets (e.g. [fd00::2])", printable(.0))]
    NotIpv6(String),
    /// `HIGH-LOW`.
    #[error("port range {0}-{1} is reversed (write LOW-HIGH)")]
    ReversedRange(u16, u16),
    /// The host and target sides cover a different number of ports.
    #[error(
        "{listen} covers {listen_len} port{} but {to} covers {to_len}; a range maps port by port, so both sides must be the same length",
        if *.listen_len == 1 { "" } else { "s" }
    )]
    RangeLengthMismatch {
        /// The listen side, canonical.
        listen: String,
        /// How many ports it covers.
        listen_len: u32,
        /// The target side, canonical.
        to: String,
        /// How many ports it covers.
        to_len: u32,
    },
    /// An allowlist entry that is not `IP[/LEN]`.
    #[error(
        "'{}' is not an IP address or prefix (e.g. 10.0.0.0/8 or 2001:db8::/32)",
        printable(.0)
    )]
    NotAPrefix(String),
    /// An allowlist prefix with bits set after its length.
    #[error("'{given}' has bits set past /{len}: write the network, {network}", len = .network.prefix_len())]
    PrefixHostBits {
        /// As given.
        given: String,
        /// The network it is in.
        network: IpNet,
    },
    /// An allowlist none of whose prefixes is of the forward's family: it would drop every
    /// client, like an empty one.
    #[error(
        "no prefix of this allowlist is {0}, so it would drop every client of this {0} forward; add an {0} prefix or remove the allowlist"
    )]
    AllowlistWithoutFamily(Family),
    /// `allow: []`.
    #[error("an empty allowlist would drop every client; remove it to accept every source address")]
    EmptyAllowlist,
    /// The listen string's `/proto` suffix and a separately given protocol disagree.
    #[error("'{}' says {suffix} but the protocol is given as {given}", printable(.listen))]
    ProtocolMismatch {
        /// The listen string as given.
        listen: String,
        /// The protocol of its suffix.
        suffix: Protocol,
        /// The protocol given separately.
        given: Protocol,
    },
    /// The targets of a forward with several backends.
    #[error(transparent)]
    Pool(#[from] PoolError),
}

/// Why the targets of a pool do not parse or do not go together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    #[error("'{}' is not a weight: write TARGET*WEIGHT with WEIGHT a number 0-1000, e.g. 172.17.0.3:3000*2", printable(.0))]
    NotAWeight(String),
    #[error("weight {} is outside 0-1000", printable(.0))]
    WeightOutOfRange(String),
    #[error("unknown all_down policy '{}' (expected serve or refuse)", printable(.0))]
    UnknownAllDown(String),
    #[error("{0} targets; a forward has at most {1}")]
    TooManyTargets(usize, usize),
    #[error(
        "{0} is listed twice; list each target once (give it a weight, e.g. {0}*2, for a larger share)"
    )]
    DuplicateTarget(String),
    #[error(
        "{listen} -> {to}: a forward with several targets or a health check publishes single ports; publish a port range with one target, or one forward per port"
    )]
    RangeInPool { listen: String, to: String },
    #[error("every target has weight 0 (drained): at least one must take new flows")]
    AllDrained,
    #[error("{0} applies to a forward with several targets or a health check only")]
    OptionWithoutPool(&'static str),
    #[error(
        "'{}' is a container name; a forward with several targets takes IP:PORT targets only (publish the container by name as a forward of its own)",
        printable(.0)
    )]
    NamedTargetInPool(String),
    #[error("{target} is not a target of {listen} (its targets: {targets})")]
    NotInPool {
        target: String,
        listen: String,
        targets: String,
    },
    #[error(
        "{target} is the last target of {listen}; to stop publishing the port, run `portfwd del {listen}`"
    )]
    LastTarget { target: String, listen: String },
    /// A pool setting given as text (the control socket, the command line).
    #[error("{key}: {message}")]
    Setting { key: &'static str, message: String },
}

/// `s` with control characters (newlines, tabs, ...) escaped, so that a message quoting it
/// stays on one line.
pub(crate) fn printable(s: &str) -> Cow<'_, str> {
    if s.chars().any(char::is_control) {
        Cow::Owned(
            s.chars()
                .map(|c| {
                    if c.is_control() {
                        c.escape_default().to_string()
                    } else {
                        c.to_string()
                    }
                })
                .collect(),
        )
    } else {
        Cow::Borrowed(s)
    }
}
