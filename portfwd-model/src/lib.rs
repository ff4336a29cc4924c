//! A reference model of the datapath: what the tc program does to one frame, written as plain
//! Rust over a byte slice, so that it runs on the host and can be compared with the kernel.
//!
//! The model is the datapath's behaviour spelled out, not its code: it reads the frame with
//! slices and big-endian loads, keeps its own checksum arithmetic (deliberately not
//! `portfwd_common::checksum`, which the XDP program uses), and takes the maps and the routing table
//! through [`World`]. It models both hooks ([`Hook::Tc`], [`Hook::Xdp`]): they share one
//! translation path and differ only where the kernel makes them differ (checksum arithmetic,
//! the MTU check, and what XDP can send itself). `portfwd/tests/datapath.rs` runs it against the real program
//! (BPF_PROG_TEST_RUN) on fixtures and on random and mutated frames; every difference is either
//! a datapath bug or a model bug.
//!
//! # What the datapath does
//!
//! 1. **Parse** Ethernet, IPv4 or IPv6, and TCP/UDP, a later fragment of a TCP/UDP datagram, or
//!    an ICMP/ICMPv6 error quoting TCP/UDP. Anything else is passed untouched with a reason: not
//!    IP (ARP, a VLAN tag in the frame), not TCP/UDP (`pass_fragment` for a fragment of it), an
//!    IPv6 extension header other than a fragment header (`pass_ipv6_ext_header`), or malformed (truncated, IHL < 5, total or payload
//!    length beyond the frame, TCP data offset < 5, UDP length not the IP payload length, UDP
//!    checksum 0 over IPv6). A destination in 127.0.0.0/8 or ::1 is dropped whatever the rest
//!    is. IPv4 and IPv6 follow the same steps below, each with its own maps (`PF_FORWARDS6`,
//!    ...); the stats slots are shared.
//! 2. **Decide**: a packet for a published port (destination is a host address, ingress
//!    interface exposed, and a forward matches: looked up in `PF_FORWARDS` bound to that
//!    address, then bound to every address, and only then in the port ranges of `PF_RANGES`,
//!    bound to that address, then to every address; each of those tables and the allowlists
//!    is looked up in the active generation of `PF_GEN` only, read once per packet) goes to
//!    the target; a packet matching a
//!    remembered flow is a reply and goes back to the client; everything else passes. A forward
//!    with a source allowlist drops every packet for it from a source outside the list
//!    (`drop_source_not_allowed`), before any other check; replies and ICMP errors are never
//!    held against an allowlist.
//!
//!    **Hairpin**: when the source of a packet for a published port *is* the forward's target
//!    (a container calling its own published port through the host), its source is also
//!    translated, to the published address it called (`hairpinned`), and the flow remembers the
//!    caller ([`FlowValue::client_addr_be`]); the replies get both ends translated back
//!    (`hairpin_replied`). ICMP errors quoting such a flow are not translated towards the
//!    client. A call to another container's published port is forwarded like any other.
//! 3. **Check** before touching anything: TTL <= 1 is dropped, and the new destination must be
//!    routable (and the frame without its Ethernet header must fit the egress MTU, whatever the
//!    neighbour; one too big is answered with ICMP "too big", or with DF clear handed to the
//!    kernel to fragment, see `pmtu`). XDP then hands the packet to tc untouched (`pass_to_tc`)
//!    unless the neighbour is known and the egress interface is in `PF_XDP_EGRESS`.
//! 4. **Translate**: destination (to the target) or source (to the client) address and port,
//!    with the IPv4 and L4 checksums updated incrementally (an IPv6 address as four 32-bit
//!    words, one helper call each), so a wrong checksum stays exactly as wrong; a UDP checksum
//!    of 0 ("none", IPv4) stays 0 and an updated one that comes out 0 is sent as 0xffff. Then
//!    what a router does: TTL or hop limit - 1, and the next hop's MACs when the neighbour is
//!    known (otherwise the kernel resolves it on redirect).
//!
//! **Fragments** (`frag_table`, `frag`): a first fragment is translated like a whole datagram and its
//! translation written to `PF_FRAGS` (`PF_FRAGS6`) under (source, destination, IP
//! identification, protocol), [`Outcome::frag`]; a first fragment left untouched for not being
//! ours (`pass_no_forward`, `pass_not_for_us`) is written as such. A later fragment gets the
//! first fragment's addresses (IPv4 header checksum only; no L4 header) after the same checks
//! and router hop (`fragment_translated`), passes like its first fragment (`pass_fragment`), or,
//! with no entry, passes as come before its first one (`pass_fragment_before_first`).
//!
//! ICMP errors (destination unreachable, time exceeded, parameter problem) and ICMPv6 errors
//! (destination unreachable, packet too big, time exceeded, parameter problem) quoting a packet
//! of a remembered flow get the quote translated back and are sent on, see [`Outcome`].
//!
//! # Checksum arithmetic
//!
//! All updates follow RFC 1624 (`HC' = ~(~HC + ~m + m')`) in end-around-carry arithmetic. The
//! kernel's checksum helpers (tc) never produce a sum of 0 (their accumulator starts from a
//! 32-bit value with the high half set), so their result is never 0xffff; the software update
//! (XDP, and quoted L4 checksums on both hooks) can (when `HC = 0xffff, m = 0xffff, m' = 0`).
//! Both are modelled exactly.
//!
//! # Modules
//!
//! Bottom to top: `checksum` (the arithmetic of both hooks), `world` (the maps and
//! the routing table the model reads), `outcome` (its verdict), `wire` (header constants and
//! byte access), `family` (what differs between IPv4 and IPv6), `parse`, `translate` (service
//! lookup, checks, rewrite and router hop of a TCP/UDP packet, using `frag_table` for the entry
//! a first fragment writes), `pmtu` (a packet too big for its egress), `frag` (later
//! fragments), `icmp` (ICMP errors quoting a flow), and [`process`] here, which dispatches.
//! Beside the frame's path, [`maglev`] models backend selection (the Maglev table and the flow
//! hash, issue #16), compared with `portfwd::balance` by `portfwd/tests/maglev.rs`, and
//! [`pool`] the datapath's choice of a backend per flow with it (affinity, draining, refusal),
//! compared with the kernel programs by `portfwd/tests/datapath/pools.rs`.

mod checksum;
mod family;
mod frag;
mod frag_table;
mod icmp;
mod local;
pub mod maglev;
mod outcome;
mod parse;
mod pmtu;
pub mod pool;
mod translate;
mod wire;
mod world;

use portfwd_common::{
    maps::{Hook, IFACE_EXPOSE},
    reason::Reason,
};

pub use outcome::{Action, Count, Direction, Outcome};
pub use world::{FlowEntry, FragEntry, Route, RouteQuery, World};

use family::{At, Fam, V4, V6};
use parse::{Parsed, parse};
use wire::{ETH_LEN, ETH_P_IPV4, ETH_P_IPV6, be16};

/// Runs the model of `hook`'s program on `frame` (Ethernet onwards; all of it is the packet)
/// arriving on `ingress_ifindex`. When the outcome is [`Action::Redirect`] (or a pass counted
/// `forwarded_via_stack`) the frame has been rewritten in place as the datapath rewrites it;
/// for [`Action::Bounce`] it has been replaced by the answer to its sender; otherwise it is
/// unchanged. Map updates are returned, not applied: the caller applies [`Outcome::flow`] to
/// its [`World`].
pub fn process(
    frame: &mut Vec<u8>,
    ingress_ifindex: u32,
    hook: Hook,
    world: &impl World,
) -> Outcome {
    if frame.len() < ETH_LEN {
        return Outcome::untouched(Reason::PassMalformed);
    }
    match be16(frame, 12) {
        ETH_P_IPV4 => process_family::<V4>(frame, ingress_ifindex, hook, world),
        ETH_P_IPV6 => process_family::<V6>(frame, ingress_ifindex, hook, world),
        _ => Outcome::untouched(Reason::PassNotIp),
    }
}

fn process_family<F: Fam>(
    frame: &mut Vec<u8>,
    ingress_ifindex: u32,
    hook: Hook,
    world: &impl World,
) -> Outcome {
    let parsed = match parse::<F>(frame) {
        Ok(p) => p,
        Err(reason) => return Outcome::untouched(reason),
    };
    let exposed = world
        .iface_flags(ingress_ifindex)
        .is_some_and(|f| f & IFACE_EXPOSE != 0);
    let at = At {
        ifindex: ingress_ifindex,
        hook,
    };
    match parsed {
        Parsed::L4(pkt) => translate::l4::<F>(frame, at, world, exposed, &pkt),
        Parsed::Fragment(pkt) => frag::later::<F>(frame, at, world, &pkt),
        Parsed::IcmpError(err) => icmp::icmp_error::<F>(frame, at, world, exposed, &err),
    }
}
