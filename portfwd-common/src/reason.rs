//! Every verdict the datapath takes, with a reason. Each one has a counter in
//! [`crate::maps::VERDICTS`].
//!
//! Also [`counters!`](crate::counters), which declares such a list of counters.

/// Declares an enum whose variants index an array of counters (the verdict counters of the
/// datapath and of the socket hooks): each variant with its explicit index and the stable
/// name that `portfwd status` and the metrics show. Adding a counter is one line.
///
/// Generates, besides the `#[repr(u32)]` enum (so `Variant as u32` is the counter's index):
/// - `COUNT`, the number of counters (the array's size);
/// - `ALL`, every variant in index order;
/// - `name()`, the stable snake_case name;
/// - `is_drop()`, whether the counter counts dropped packets: its name starts with `drop_`
///   (decided at compile time, per variant).
///
/// The indexes must run from 0 without a gap, in the order written: a compile-time check
/// refuses anything else, since the kernel side indexes the array with them.
#[macro_export]
macro_rules! counters {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $index:literal => $label:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant = $index,
            )*
        }

        impl $name {
            /// How many there are: the size of the counter array.
            pub const COUNT: u32 = [$($index),*].len() as u32;

            /// Every one, in index order.
            pub const ALL: [$name; Self::COUNT as usize] = [$($name::$variant),*];

            /// A stable, snake_case name for logs, `portfwd status` and metrics.
            pub const fn name(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)*
                }
            }

            /// Whether this counts dropped packets: its name starts with `drop_`.
            pub const fn is_drop(self) -> bool {
                match self {
                    $($name::$variant => const { $crate::reason::is_drop_name($label) },)*
                }
            }
        }

        const _: () = {
            let mut i = 0;
            while i < $name::ALL.len() {
                assert!(
                    $name::ALL[i] as usize == i,
                    "counter indexes must run from 0 in the order written"
                );
                i += 1;
            }
        };
    };
}

/// Whether a counter named `name` counts drops (see [`counters!`](crate::counters)).
#[doc(hidden)]
pub const fn is_drop_name(name: &str) -> bool {
    let (name, prefix) = (name.as_bytes(), b"drop_");
    if name.len() < prefix.len() {
        return false;
    }
    let mut i = 0;
    while i < prefix.len() {
        if name[i] != prefix[i] {
            return false;
        }
        i += 1;
    }
    true
}

crate::counters! {
    /// Why a packet got the verdict it got. The discriminant is the index of its counter.
    pub enum Reason {
        /// Translated to a forward's target and sent on.
        Forwarded = 0 => "forwarded",
        /// A reply from a target, translated back and sent to the client.
        Replied = 1 => "replied",
        /// An ICMP error about a translated flow, with its quoted packet translated, sent on.
        IcmpErrorTranslated = 2 => "icmp_error_translated",
        /// Neither IPv4 nor IPv6 (ARP, VLAN-tagged, ...): passed untouched.
        PassNotIp = 3 => "pass_not_ip",
        /// IP but neither TCP nor UDP, nor an ICMP/ICMPv6 error quoting TCP/UDP (e.g. ICMPv6
        /// neighbour discovery): passed untouched.
        PassNotTcpUdp = 4 => "pass_not_tcp_udp",
        /// Not addressed to the host and not a reply of a known flow: passed untouched.
        PassNotForUs = 5 => "pass_not_for_us",
        /// Addressed to the host, but no forward for this port: passed untouched.
        PassNoForward = 6 => "pass_no_forward",
        /// A header could not be parsed safely (truncated, IHL < 5, IPv4 total length or IPv6 payload
        /// length beyond the frame, TCP data offset < 5, UDP length wrong, UDP checksum 0 over IPv6):
        /// passed untouched, never rewritten; the kernel validates it.
        PassMalformed = 7 => "pass_malformed",
        /// XDP only: the packet is ours, but its next hop cannot take XDP frames (a bridge, a veth,
        /// an unresolved neighbour); passed untouched to the tc program behind XDP, which finishes it.
        PassToTc = 8 => "pass_to_tc",
        /// A non-first IPv4 or IPv6 fragment of a datagram whose first fragment was not ours (not
        /// for a published port, not a reply), or any fragment of something other than TCP/UDP:
        /// passed untouched, as its first fragment was; the host's stack reassembles it.
        PassFragment = 9 => "pass_fragment",
        /// The first fragment of a datagram to translate, whose translation could not be
        /// remembered for its later fragments (the fragment table refused the insert): dropped,
        /// since the datagram could never be reassembled at the target.
        DropFragment = 10 => "drop_fragment",
        /// TTL (IPv4) or hop limit (IPv6) would reach 0 at this hop.
        DropTtlExceeded = 11 => "drop_ttl_exceeded",
        /// No route to the target or to the client (unreachable, blackhole, prohibited, forwarding
        /// disabled on the ingress interface).
        DropNoRoute = 12 => "drop_no_route",
        /// Larger than the MTU towards its destination, and not answered: an ICMP error (never
        /// answered with another one), or an IPv4 packet with DF set shorter than the 548 bytes an
        /// answer quotes (an egress MTU below 548). Other packets too big get an ICMP answer
        /// ([`Reason::IcmpTooBigSent`]).
        DropFragNeeded = 13 => "drop_frag_needed",
        /// Destination in 127.0.0.0/8 or ::1 arriving from a network interface: never forwarded.
        DropLoopbackDst = 14 => "drop_loopback_dst",
        /// A kernel helper failed while the packet was being rewritten; it may be half-rewritten so
        /// it is dropped rather than delivered.
        DropRewriteFailed = 15 => "drop_rewrite_failed",
        /// For a published port whose forward has a source allowlist, from a source outside it:
        /// dropped before any translation (the allowlist is the published port's firewall).
        DropSourceNotAllowed = 16 => "drop_source_not_allowed",
        /// Hairpin: a target called its own published port through the host. Translated to the
        /// target like [`Reason::Forwarded`], and its source to the published address, so that the
        /// target's reply comes back through the host instead of being delivered to itself.
        Hairpinned = 17 => "hairpinned",
        /// A reply of a hairpin flow: source and destination translated back, sent on.
        HairpinReplied = 18 => "hairpin_replied",
        /// IPv6 with an extension header other than a fragment header before the L4 header
        /// (hop-by-hop options, routing, destination options, ...): passed untouched. portfwd does
        /// not walk extension header chains.
        PassIpv6ExtHeader = 19 => "pass_ipv6_ext_header",
        /// A later fragment of a datagram whose first fragment was translated (to a target, back to
        /// a client, or a hairpin): its addresses translated as the first fragment's were (it
        /// carries no ports; the first fragment's L4 checksum covers the whole datagram), sent on.
        FragmentTranslated = 20 => "fragment_translated",
        /// A later fragment of a datagram whose first fragment portfwd has not seen: it arrived
        /// out of order, before its first fragment (or the first fragment was lost, or came before
        /// the daemon). Passed untouched to the host's stack: portfwd does not hold fragments, and
        /// not knowing the ports it cannot tell a published port's datagram from the host's own;
        /// a published port's datagram is then lost (its first fragment goes to the target), as
        /// any datagram with a lost fragment is.
        PassFragmentBeforeFirst = 21 => "pass_fragment_before_first",
        /// Too big for the MTU towards its destination, with DF set (IPv6: always): answered with
        /// ICMP fragmentation needed / ICMPv6 packet too big carrying that MTU, from the address
        /// the sender talked to, quoting the packet's start, sent back out the interface it came
        /// in on (`pmtu`). The packet itself goes no further, as at a router.
        IcmpTooBigSent = 22 => "icmp_too_big_sent",
        /// As [`Reason::IcmpTooBigSent`], but over the answers' rate limit (a burst of 50, then
        /// 1000 per second, per CPU): dropped without an answer.
        DropTooBigRateLimited = 23 => "drop_too_big_rate_limited",
        /// IPv4 with DF clear, too big for the MTU towards its destination: translated and handed
        /// to the kernel, which forwards it in fragments, as it does after iptables DNAT.
        ForwardedViaStack = 24 => "forwarded_via_stack",
        /// For a published port, but a reply to a connection of the host's own: a local socket
        /// owns its exact addresses and ports (a TCP socket not listening, a connected UDP
        /// socket). Passed to the stack, as netfilter's conntrack would, never forwarded.
        PassLocalSocket = 25 => "pass_local_socket",
        /// For a published port, but a reply to a flow that left the host from that port (the
        /// host's own, or a container's masqueraded onto it), seen by the tc egress program.
        /// Passed to the stack, where netfilter un-masquerades it.
        PassLocalFlow = 26 => "pass_local_flow",
        /// A new flow of a forward with several backends that refuses new flows (every backend
        /// down, `all_down: refuse`): answered with ICMP port unreachable (ICMPv6 port
        /// unreachable) from the published address, quoting the packet's start, sent back out
        /// the interface it came in on, as iptables' REJECT does (a TCP client's `connect()`
        /// fails with `ECONNREFUSED`). The packet itself goes no further.
        RefusedAllDown = 27 => "refused_all_down",
        /// As [`Reason::RefusedAllDown`], but over the ICMP answers' rate limit (the bucket
        /// [`Reason::IcmpTooBigSent`] uses): dropped without an answer.
        DropRefusedRateLimited = 28 => "drop_refused_rate_limited",
        /// A new flow of a forward with several backends whose Maglev slot names no live
        /// backend of that forward (a table being swapped, a freed id): dropped; the client
        /// retries.
        DropNoBackend = 29 => "drop_no_backend",
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::Reason;

    #[test]
    fn all_lists_every_reason_in_index_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }

    #[test]
    fn drops_are_the_reasons_named_drop() {
        let drops: Vec<Reason> = Reason::ALL.into_iter().filter(|r| r.is_drop()).collect();
        assert_eq!(
            drops,
            [
                Reason::DropFragment,
                Reason::DropTtlExceeded,
                Reason::DropNoRoute,
                Reason::DropFragNeeded,
                Reason::DropLoopbackDst,
                Reason::DropRewriteFailed,
                Reason::DropSourceNotAllowed,
                Reason::DropTooBigRateLimited,
                Reason::DropRefusedRateLimited,
                Reason::DropNoBackend,
            ]
        );
    }

    #[test]
    fn names_are_unique_snake_case() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert!(
                r.name()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit()),
                "{}",
                r.name()
            );
            assert!(
                Reason::ALL[..i].iter().all(|o| o.name() != r.name()),
                "{}",
                r.name()
            );
        }
    }
}
