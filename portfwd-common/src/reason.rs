//! Every verdict the datapath takes, with a reason. Each one has a counter in
//! [`crate::maps::VERDICTS`].

/// Why a packet got the verdict it got. The discriminant is the index of its counter.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Translated to a forward's target and sent on.
    Forwarded = 0,
    /// A reply from a target, translated back and sent to the client.
    Replied = 1,
    /// An ICMP error about a translated flow, with its quoted packet translated, sent on.
    IcmpErrorTranslated = 2,
    /// Neither IPv4 nor IPv6 (ARP, VLAN-tagged, ...): passed untouched.
    PassNotIp = 3,
    /// IP but neither TCP nor UDP, nor an ICMP/ICMPv6 error quoting TCP/UDP (e.g. ICMPv6
    /// neighbour discovery): passed untouched.
    PassNotTcpUdp = 4,
    /// Not addressed to the host and not a reply of a known flow: passed untouched.
    PassNotForUs = 5,
    /// Addressed to the host, but no forward for this port: passed untouched.
    PassNoForward = 6,
    /// A header could not be parsed safely (truncated, IHL < 5, IPv4 total length or IPv6 payload
    /// length beyond the frame, TCP data offset < 5, UDP length wrong, UDP checksum 0 over IPv6):
    /// passed untouched, never rewritten; the kernel validates it.
    PassMalformed = 7,
    /// XDP only: the packet is ours, but its next hop cannot take XDP frames (a bridge, a veth,
    /// an unresolved neighbour); passed untouched to the tc program behind XDP, which finishes it.
    PassToTc = 8,
    /// A non-first IPv4 or IPv6 fragment: it carries no ports, so it is passed untouched (its first
    /// fragment, if published, was dropped, so the datagram is never reassembled).
    PassFragment = 9,
    /// The first fragment of a datagram for a published port. portfwd never translates part of
    /// a datagram, so fragmented datagrams to published ports are dropped.
    DropFragment = 10,
    /// TTL (IPv4) or hop limit (IPv6) would reach 0 at this hop.
    DropTtlExceeded = 11,
    /// No route to the target or to the client (unreachable, blackhole, prohibited, forwarding
    /// disabled on the ingress interface).
    DropNoRoute = 12,
    /// The packet is larger than the MTU towards its destination.
    DropFragNeeded = 13,
    /// Destination in 127.0.0.0/8 or ::1 arriving from a network interface: never forwarded.
    DropLoopbackDst = 14,
    /// A kernel helper failed while the packet was being rewritten; it may be half-rewritten so
    /// it is dropped rather than delivered.
    DropRewriteFailed = 15,
    /// For a published port whose forward has a source allowlist, from a source outside it:
    /// dropped before any translation (the allowlist is the published port's firewall).
    DropSourceNotAllowed = 16,
    /// Hairpin: a target called its own published port through the host. Translated to the
    /// target like [`Reason::Forwarded`], and its source to the published address, so that the
    /// target's reply comes back through the host instead of being delivered to itself.
    Hairpinned = 17,
    /// A reply of a hairpin flow: source and destination translated back, sent on.
    HairpinReplied = 18,
    /// IPv6 with an extension header other than a fragment header before the L4 header
    /// (hop-by-hop options, routing, destination options, ...): passed untouched. portfwd does
    /// not walk extension header chains.
    PassIpv6ExtHeader = 19,
}

impl Reason {
    pub const COUNT: u32 = 20;

    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Forwarded,
        Reason::Replied,
        Reason::IcmpErrorTranslated,
        Reason::PassNotIp,
        Reason::PassNotTcpUdp,
        Reason::PassNotForUs,
        Reason::PassNoForward,
        Reason::PassMalformed,
        Reason::PassToTc,
        Reason::PassFragment,
        Reason::DropFragment,
        Reason::DropTtlExceeded,
        Reason::DropNoRoute,
        Reason::DropFragNeeded,
        Reason::DropLoopbackDst,
        Reason::DropRewriteFailed,
        Reason::DropSourceNotAllowed,
        Reason::Hairpinned,
        Reason::HairpinReplied,
        Reason::PassIpv6ExtHeader,
    ];

    /// A stable, snake_case name for logs, `portfwd status` and metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Forwarded => "forwarded",
            Reason::Replied => "replied",
            Reason::IcmpErrorTranslated => "icmp_error_translated",
            Reason::PassNotIp => "pass_not_ip",
            Reason::PassNotTcpUdp => "pass_not_tcp_udp",
            Reason::PassNotForUs => "pass_not_for_us",
            Reason::PassNoForward => "pass_no_forward",
            Reason::PassMalformed => "pass_malformed",
            Reason::PassToTc => "pass_to_tc",
            Reason::PassFragment => "pass_fragment",
            Reason::DropFragment => "drop_fragment",
            Reason::DropTtlExceeded => "drop_ttl_exceeded",
            Reason::DropNoRoute => "drop_no_route",
            Reason::DropFragNeeded => "drop_frag_needed",
            Reason::DropLoopbackDst => "drop_loopback_dst",
            Reason::DropRewriteFailed => "drop_rewrite_failed",
            Reason::DropSourceNotAllowed => "drop_source_not_allowed",
            Reason::Hairpinned => "hairpinned",
            Reason::HairpinReplied => "hairpin_replied",
            Reason::PassIpv6ExtHeader => "pass_ipv6_ext_header",
        }
    }

    pub const fn is_drop(self) -> bool {
        matches!(
            self,
            Reason::DropFragment
                | Reason::DropTtlExceeded
                | Reason::DropNoRoute
                | Reason::DropFragNeeded
                | Reason::DropLoopbackDst
                | Reason::DropRewriteFailed
                | Reason::DropSourceNotAllowed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::Reason;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }

    #[test]
    fn drops_are_named_drop() {
        for r in Reason::ALL {
            assert_eq!(r.is_drop(), r.name().starts_with("drop_"), "{}", r.name());
        }
    }
}
