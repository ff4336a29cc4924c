//! The plain data types of the datapath: what a parsed packet is, where it goes, and what the
//! hook does with it. No logic beyond field arithmetic; every other module builds on these.
//!
//! Each word names one thing:
//! - [`Action`]: what the hook does with the packet (pass, drop, redirect);
//! - [`Outcome`]: an [`Action`] and the [`Reason`] counted for it (the verdict counters);
//! - [`Tuple`]: the addresses and ports a packet carries;
//! - [`NextHop`]: where a translated packet is sent;
//! - [`End`]: the source or destination end of a packet (or of one quoted in an ICMP error);
//! - [`Direction`]: towards the target or back to the client, for the per-forward counters.
use portfwd_common::{proto, reason::Reason};

/// What the hook does with the packet.
#[derive(Clone, Copy)]
pub enum Action {
    Pass,
    Drop,
    /// The packet was redirected; the value is the redirect helper's return code, which the hook
    /// returns.
    Redirect(u32),
    /// The packet was replaced by an answer to its sender, built in its place, and goes back out
    /// of the interface it came in on (tc: redirected there, XDP: `XDP_TX`).
    Bounce,
}

/// How a packet's handling ended: what the hook does with it, and why.
#[derive(Clone, Copy)]
pub struct Outcome {
    pub action: Action,
    pub reason: Reason,
}

impl Outcome {
    /// An outcome reached without touching the packet; or, for [`Reason::IcmpTooBigSent`] and
    /// [`Reason::RefusedAllDown`], one where the packet was replaced by the answer to its sender
    /// (`pmtu`), which the reason alone decides too.
    #[inline(always)]
    pub const fn untouched(reason: Reason) -> Self {
        let action = if matches!(reason, Reason::IcmpTooBigSent | Reason::RefusedAllDown) {
            Action::Bounce
        } else if reason.is_drop() {
            Action::Drop
        } else {
            Action::Pass
        };
        Self { action, reason }
    }
}

/// An [`Outcome`] in one 64-bit word: what a datapath path that is a BPF function of its own
/// returns (a BPF function returns one register; `datapath` says why the paths are functions).
/// Bits 0-31: the redirect code; 32-39: the action; 40-63: the reason.
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct PackedOutcome(u64);

const _: () = assert!(Reason::COUNT < 1 << 24);

impl Outcome {
    #[inline(always)]
    pub fn pack(self) -> PackedOutcome {
        let (action, code) = match self.action {
            Action::Pass => (0, 0),
            Action::Drop => (1, 0),
            Action::Redirect(code) => (2, code),
            Action::Bounce => (3, 0),
        };
        PackedOutcome(((self.reason as u64) << 40) | (action << 32) | code as u64)
    }
}

impl PackedOutcome {
    #[inline(always)]
    pub fn unpack(self) -> Outcome {
        let action = match (self.0 >> 32) as u8 {
            0 => Action::Pass,
            1 => Action::Drop,
            2 => Action::Redirect(self.0 as u32),
            _ => Action::Bounce,
        };
        // SAFETY: `Reason` is `repr(u32)`, and a `PackedOutcome` is only made by
        // `Outcome::pack`, from a `Reason`: these bits are one of its discriminants.
        let reason = unsafe { core::mem::transmute::<u32, Reason>((self.0 >> 40) as u32) };
        Outcome { action, reason }
    }
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// A whole datagram.
    No,
    /// The first fragment: it has the L4 header but not the whole datagram.
    First,
    /// A later fragment: data only, no L4 header (ports 0, `l4_off` is where its data starts).
    Later,
}

/// An IP packet's headers: TCP or UDP (ports set), or the IP header carrying an ICMP error
/// (ports 0). Addresses and ports are as on the wire (network byte order).
#[derive(Clone, Copy)]
pub struct IpL4<A> {
    /// Offset of the IP header.
    pub l3_off: usize,
    /// Offset of the L4 header (after any IPv4 options or IPv6 fragment header).
    pub l4_off: usize,
    /// End of the datagram (after any Ethernet padding is excluded).
    pub l3_end: usize,
    pub proto: u8,
    /// What the FIB lookup takes as the packet's class: the IPv4 TOS byte, or the IPv6 flow
    /// information (traffic class and flow label, wire order).
    pub class: u32,
    /// TTL (IPv4) or hop limit (IPv6).
    pub ttl: u8,
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
    /// IPv4: the raw 16-bit word holding TTL and protocol, for the checksum update of a TTL
    /// change. IPv6: 0 (no header checksum).
    pub ttl_proto_word: u16,
    pub fragment: Fragment,
}

impl<A: Copy> IpL4<A> {
    /// Offset of the L4 checksum field.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.proto == proto::TCP {
            self.l4_off + 16
        } else {
            self.l4_off + 6
        }
    }

    /// The addresses and ports the packet carries.
    #[inline(always)]
    pub fn tuple(&self) -> Tuple<A> {
        Tuple {
            saddr: self.saddr,
            daddr: self.daddr,
            sport: self.sport,
            dport: self.dport,
        }
    }

    /// Offsets of the address and port at `end`, and their current values.
    #[inline(always)]
    pub fn end(&self, end: End, saddr_off: usize, daddr_off: usize) -> (usize, usize, A, u16) {
        match end {
            End::Source => (self.l3_off + saddr_off, self.l4_off, self.saddr, self.sport),
            End::Destination => (
                self.l3_off + daddr_off,
                self.l4_off + 2,
                self.daddr,
                self.dport,
            ),
        }
    }
}

/// An ICMP(v6) error quoting a TCP/UDP packet. `outer` describes the carrying IP header (its
/// `l4_off` is the ICMP header, ports are 0); `inner` the quoted packet, whose offsets are
/// absolute in the frame.
#[derive(Clone, Copy)]
pub struct IcmpError<A> {
    pub outer: IpL4<A>,
    pub inner: IpL4<A>,
    /// The quoted L4 checksum is within the quoted bytes (UDP always; TCP when >= 18 bytes of
    /// it are quoted) and must be kept consistent.
    pub inner_l4_csum: bool,
}

impl<A> IcmpError<A> {
    /// Offset of the ICMP checksum.
    #[inline(always)]
    pub fn icmp_csum_off(&self) -> usize {
        self.outer.l4_off + 2
    }
}

/// What the datapath may act on.
pub enum Parsed<A> {
    /// A TCP or UDP packet.
    L4(IpL4<A>),
    /// An ICMP(v6) error quoting the start of a TCP or UDP packet.
    IcmpError(IcmpError<A>),
    /// A later fragment of a TCP or UDP datagram (`Fragment::Later`).
    Fragment(IpL4<A>),
}

/// The addresses and ports of a packet (wire order): as it arrived, or as it will be sent.
#[derive(Clone, Copy)]
pub struct Tuple<A> {
    pub saddr: A,
    pub daddr: A,
    pub sport: u16,
    pub dport: u16,
}

impl<A: Copy> Tuple<A> {
    /// The address and port at `end`.
    #[inline(always)]
    pub fn at(&self, end: End) -> (A, u16) {
        match end {
            End::Source => (self.saddr, self.sport),
            End::Destination => (self.daddr, self.dport),
        }
    }
}

/// One end of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum End {
    Source,
    Destination,
}

/// The next hop of a translated packet: how it is known, the interface, and both MAC
/// addresses (zero unless [`HopKind::Resolved`]).
///
/// A struct rather than an enum with fields: every field is defined on every path, so LLVM
/// never carries an undefined MAC through a register spill that the verifier would refuse to
/// read ("!read_ok") where the paths merge.
#[derive(Clone, Copy)]
pub struct NextHop {
    pub kind: HopKind,
    pub ifindex: u32,
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum HopKind {
    /// Interface and both MAC addresses known.
    Resolved,
    /// Interface known; the neighbour (ARP) entry is not, the kernel must resolve it.
    Unresolved,
    /// The kernel's own forwarding: the translated packet is passed to the stack, which routes
    /// it and fragments it (IPv4 without DF, too big for its egress, `pmtu`).
    Stack,
}

impl NextHop {
    /// The kernel's own forwarding ([`HopKind::Stack`]).
    pub const STACK: Self = Self::unresolved(HopKind::Stack, 0);

    #[inline(always)]
    pub const fn resolved(ifindex: u32, smac: [u8; 6], dmac: [u8; 6]) -> Self {
        Self {
            kind: HopKind::Resolved,
            ifindex,
            smac,
            dmac,
        }
    }

    /// A hop without MAC addresses: [`HopKind::Unresolved`] or [`HopKind::Stack`].
    #[inline(always)]
    pub const fn unresolved(kind: HopKind, ifindex: u32) -> Self {
        Self {
            kind,
            ifindex,
            smac: [0; 6],
            dmac: [0; 6],
        }
    }
}

/// Direction of a translated packet, for the per-forward counters.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToTarget,
    ToClient,
}
