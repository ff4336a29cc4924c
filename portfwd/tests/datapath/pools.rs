//! Forwards with several backends (issue #16) through the real programs: the backend each flow
//! gets, compared with the reference model (`portfwd_model::pool`, over its own Maglev), and
//! what happens when the set changes (affinity, draining, freed backends), when the forward
//! refuses new flows (ICMP port unreachable, byte for byte), and the per-backend counters. The
//! maps are filled through the daemon's own writers (`Maps::insert_forward` of a `Forward`
//! whose `pool` is set, `PoolMaps`), the tables built by `portfwd::balance::build_table`.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use portfwd::{
    balance::{Backend, build_table},
    datapath::{Datapath, pools::BackendEntry},
    publish::{AllDown, DEFAULT_GRACE, Forward, Listen, Pool, Protocol, Target, Weighted},
};
use portfwd_common::{
    maps::{Hook, IcmpBudget},
    pool::{BACKEND_DRAINING, BACKEND_LIVE, MAGLEV_SIZE},
    reason::Reason,
};
use portfwd_model::{
    maglev::{MaglevBackend, maglev_table},
    pool::{Choice, PoolBackend, PoolFlow, PoolModel},
};

use super::env::{Env, ICMP_UNLIMITED};
use super::fixtures::rows::{Icmp, answer, icmp, quote};
use super::frame::{ACK, Pkt, SYN};
use super::program::{self, PROGRAMS, Program};
use super::world::{CLIENT_MAC, ETH0_MAC, Family, Ingress, NETS, Net};

const TCP: u8 = 6;
const UDP: u8 = 17;
/// The pool's published ports (free in the world), and its backends' first port: backend `i`
/// is the world's container c1 at `BACKEND_PORT + i` (c1 has a neighbour entry, so XDP sends
/// its packets itself and the chosen port shows in every program's output).
const TCP_PORT: u16 = 9090;
const UDP_PORT: u16 = 9091;
const BACKEND_PORT: u16 = 3100;

/// A deterministic generator (splitmix64): the tuples of a run are the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A client's address of `w`'s family (never c1: that would be a hairpin).
    fn client(&mut self, w: &Net) -> IpAddr {
        let r = self.next();
        match w.family {
            Family::V4 => IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (r as u32 & 0x00ff_ffff))),
            Family::V6 => IpAddr::V6(Ipv6Addr::new(
                0x2001,
                0xdb8,
                0xffff,
                0,
                (r >> 48) as u16,
                (r >> 32) as u16,
                (r >> 16) as u16,
                r as u16,
            )),
        }
    }

    fn flow(&mut self, w: &Net, proto: u8) -> PoolFlow {
        PoolFlow {
            src: self.client(w),
            dst: w.host,
            src_port: 1024 + (self.next() % 60_000) as u16,
            dst_port: if proto == TCP { TCP_PORT } else { UDP_PORT },
            proto,
        }
    }
}

/// One family's pool forwards (TCP and UDP) in a loaded datapath, and the model of each.
struct Pools {
    /// Per protocol: the forward's stats slot.
    slots: [(u8, u32); 2],
    models: HashMap<u8, PoolModel>,
}

/// Backend ids of a family's pools: the TCP pool's `base..`, the UDP pool's `base + 20..`.
fn id_base(w: &Net, proto: u8) -> u32 {
    let fam = if w.family == Family::V4 { 0 } else { 40 };
    fam + if proto == TCP { 0 } else { 20 }
}

fn backend_addr(w: &Net, i: u32) -> SocketAddr {
    SocketAddr::new(w.c1, BACKEND_PORT + i as u16)
}

impl Pools {
    /// Publishes a TCP and a UDP pool forward of `n` backends each in `w`'s family.
    fn publish(dp: &mut Datapath, w: &Net, n: u32) -> Pools {
        let mut models = HashMap::new();
        let mut slots = [(TCP, 0), (UDP, 0)];
        for (k, proto) in [TCP, UDP].into_iter().enumerate() {
            let slot = 100 + w.slot(0) + k as u32;
            slots[k] = (proto, slot);
            let fwd = pool_forward(w, proto, n);
            dp.maps.insert_forward(&fwd, slot).unwrap();
            let mut model = PoolModel {
                slot,
                ..PoolModel::default()
            };
            for i in 0..n {
                let id = id_base(w, proto) + i;
                set_backend(dp, &mut model, id, backend_addr(w, i), BACKEND_LIVE, 1);
            }
            models.insert(proto, model);
        }
        let mut pools = Pools { slots, models };
        for proto in [TCP, UDP] {
            let ids: Vec<u32> = (0..n).map(|i| id_base(w, proto) + i).collect();
            pools.set_table(dp, proto, Some(&ids), 0);
        }
        pools
    }

    fn slot(&self, proto: u8) -> u32 {
        self.slots.iter().find(|(p, _)| *p == proto).unwrap().1
    }

    fn model(&mut self, proto: u8) -> &mut PoolModel {
        self.models.get_mut(&proto).unwrap()
    }

    /// Builds the table of backends `ids` (`None`: the forward refuses new flows) into Maglev
    /// row `row` and points the pool at it; the model gets its own table of the same set.
    fn set_table(&mut self, dp: &mut Datapath, proto: u8, ids: Option<&[u32]>, row: u32) {
        let slot = self.slot(proto);
        let model = self.model(proto);
        let Some(ids) = ids else {
            dp.maps.pools.point_pool(slot, None).unwrap();
            model.table = None;
            return;
        };
        let daemon: Vec<Backend> = ids
            .iter()
            .map(|id| Backend {
                id: *id,
                addr: model.backends[id].addr,
                weight: 1,
            })
            .collect();
        let reference: Vec<MaglevBackend> = daemon
            .iter()
            .map(|b| MaglevBackend {
                id: b.id,
                addr: b.addr,
                weight: b.weight,
            })
            .collect();
        let table = build_table(&daemon, MAGLEV_SIZE as usize).unwrap();
        // Row per protocol and family, so tables never share one.
        let row = row * 8 + (slot % 8);
        dp.maps.pools.write_row(row, &table).unwrap();
        dp.maps.pools.point_pool(slot, Some(row)).unwrap();
        model.table = maglev_table(&reference, MAGLEV_SIZE as usize);
    }
}

/// A forward of `w`'s host port for `proto` with `n` backends (`to` is the first).
fn pool_forward(w: &Net, proto: u8, n: u32) -> Forward {
    let (port, protocol) = if proto == TCP {
        (TCP_PORT, Protocol::Tcp)
    } else {
        (UDP_PORT, Protocol::Udp)
    };
    let every = match w.family {
        Family::V4 => None,
        Family::V6 => Some(IpAddr::V6(Ipv6Addr::UNSPECIFIED)),
    };
    let listen = Listen {
        addr: every,
        port,
        end: port,
        protocol,
    };
    let target = |i: u32| {
        let a = backend_addr(w, i);
        Target {
            addr: a.ip(),
            port: a.port(),
            end: a.port(),
        }
    };
    let mut fwd = Forward::new(listen, target(0)).unwrap();
    fwd.pool = Some(Box::new(Pool {
        targets: (0..n)
            .map(|i| Weighted {
                target: target(i),
                weight: 1,
            })
            .collect(),
        health: None,
        all_down: AllDown::Refuse,
        grace: DEFAULT_GRACE,
    }));
    fwd
}

/// Writes backend `id` in the datapath and the model.
fn set_backend(
    dp: &mut Datapath,
    model: &mut PoolModel,
    id: u32,
    addr: SocketAddr,
    flags: u16,
    epoch: u32,
) {
    let slot = model.slot;
    dp.maps
        .pools
        .set_backend(
            id,
            BackendEntry {
                addr,
                flags,
                slot,
                epoch,
            },
        )
        .unwrap();
    model.backends.insert(
        id,
        PoolBackend {
            addr,
            live: flags & BACKEND_LIVE != 0,
            draining: flags & BACKEND_DRAINING != 0,
            slot,
            epoch,
        },
    );
}

/// The client's packet of `f` (a SYN for TCP), as it arrives on eth0.
fn packet(f: &PoolFlow, flags: u8) -> Pkt {
    let (src, dst) = ((f.src, f.src_port), (f.dst, f.dst_port));
    let p = if f.proto == TCP {
        Pkt::tcp(src, dst, flags)
    } else {
        Pkt::udp(src, dst)
    };
    p.macs(CLIENT_MAC, ETH0_MAC)
}

/// What the kernel did with a packet of `f`: the backend id it went to (read from the
/// translated frame's destination port), or the verdict it got otherwise.
fn run(env: &Env, dp: &mut Datapath, prog: &Program, w: &Net, f: &PoolFlow) -> Choice {
    run_flags(env, dp, prog, w, f, SYN)
}

/// As [`run`], for a TCP packet with `flags` (ignored for UDP).
fn run_flags(
    env: &Env,
    dp: &mut Datapath,
    prog: &Program,
    w: &Net,
    f: &PoolFlow,
    flags: u8,
) -> Choice {
    let (out, reason) = run_frame(env, dp, prog, &packet(f, flags).bytes());
    match reason {
        Reason::Forwarded => {
            let off = 14 + w.ip_header;
            let dst = match w.family {
                Family::V4 => IpAddr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap()),
                Family::V6 => IpAddr::from(<[u8; 16]>::try_from(&out[38..54]).unwrap()),
            };
            assert_eq!(dst, w.c1, "{}: the backends are all c1", prog.label);
            let port = u16::from_be_bytes([out[off + 2], out[off + 3]]);
            Choice::Backend(id_base(w, f.proto) + u32::from(port - BACKEND_PORT))
        }
        Reason::RefusedAllDown => Choice::Refuse,
        Reason::DropNoBackend => Choice::NoBackend,
        other => panic!("{}: {f:?} got {}", prog.label, other.name()),
    }
}

/// Runs `frame` through `prog` from eth0: the output and the one verdict counted.
fn run_frame(env: &Env, dp: &mut Datapath, prog: &Program, frame: &[u8]) -> (Vec<u8>, Reason) {
    let before = program::verdicts(dp);
    let (_, out) = program::test_run(dp, prog, frame, env.ifindex(Ingress::Eth0)).unwrap();
    let after = program::verdicts(dp);
    let reason = program::verdict_delta(prog.hook, &before, &after).unwrap();
    (out, reason)
}

/// Flows per family, protocol and program in the differential run.
const FLOWS: usize = 400;

/// Random flows, both families, TCP and UDP, through tc and XDP: every one goes to the backend
/// the model's Maglev picks, and a second packet of it to the same one.
#[test]
fn pool_selection_agrees_with_the_model() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dppoolsel");
    for prog in &PROGRAMS[..2] {
        env.run(|| {
            let (mut dp, _) = env.load(prog);
            let mut rng = Rng(0x706f_7274);
            for w in NETS {
                let mut pools = Pools::publish(&mut dp, w, 7);
                for proto in [TCP, UDP] {
                    let mut seen = HashMap::new();
                    for _ in 0..FLOWS {
                        let f = rng.flow(w, proto);
                        let want = pools.model(proto).select(f);
                        let got = run(&env, &mut dp, prog, w, &f);
                        assert_eq!(got, want, "{} {:?}: {f:?}", prog.label, w.family);
                        assert_eq!(run(&env, &mut dp, prog, w, &f), got, "{}", prog.label);
                        *seen.entry(got).or_insert(0) += 1;
                    }
                    // Seven backends over 400 flows: each gets some.
                    assert_eq!(seen.len(), 7, "{} {:?}: {seen:?}", prog.label, w.family);
                }
            }
        });
    }
}

/// A flow keeps its backend when the table changes; a flow whose placement is gone (a fresh
/// datapath: evicted, or never remembered) gets the same backend while the table is the same.
#[test]
fn a_flow_keeps_its_backend() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dppoolaff");
    for prog in &PROGRAMS[..2] {
        env.run(|| {
            let mut rng = Rng(17);
            for w in NETS {
                for proto in [TCP, UDP] {
                    let flows: Vec<PoolFlow> = (0..50).map(|_| rng.flow(w, proto)).collect();
                    let (mut dp, _) = env.load(prog);
                    let mut pools = Pools::publish(&mut dp, w, 4);
                    let first: Vec<Choice> = flows
                        .iter()
                        .map(|f| run(&env, &mut dp, prog, w, f))
                        .collect();
                    // Backends 4..8 added, in a new row: every flow stays where it was, while
                    // new flows spread over all eight.
                    let base = id_base(w, proto);
                    let model = pools.model(proto);
                    for i in 4..8 {
                        set_backend(
                            &mut dp,
                            model,
                            base + i,
                            backend_addr(w, i),
                            BACKEND_LIVE,
                            1,
                        );
                    }
                    let all: Vec<u32> = (base..base + 8).collect();
                    pools.set_table(&mut dp, proto, Some(&all), 1);
                    for (f, was) in flows.iter().zip(&first) {
                        assert_eq!(run(&env, &mut dp, prog, w, f), *was, "{}", prog.label);
                    }
                    drop(dp);
                    // Forgotten: the same answers from the same (first) table.
                    let (mut dp, _) = env.load(prog);
                    Pools::publish(&mut dp, w, 4);
                    for (f, was) in flows.iter().zip(&first) {
                        assert_eq!(run(&env, &mut dp, prog, w, f), *was, "{}", prog.label);
                    }
                }
            }
        });
    }
}

/// A backend removed: draining, its TCP flows stay and its UDP flows are hashed again over the
/// table without it; freed (flags 0), every flow of it is hashed again. The model agrees.
#[test]
fn draining_and_freed_backends() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dppooldrain");
    for prog in &PROGRAMS[..2] {
        env.run(|| {
            let mut rng = Rng(99);
            for w in NETS {
                for proto in [TCP, UDP] {
                    let (mut dp, _) = env.load(prog);
                    let mut pools = Pools::publish(&mut dp, w, 3);
                    let base = id_base(w, proto);
                    // Flows on backend `base` (the one removed).
                    let mut on_it = Vec::new();
                    while on_it.len() < 10 {
                        let f = rng.flow(w, proto);
                        pools.model(proto).select(f);
                        if run(&env, &mut dp, prog, w, &f) == Choice::Backend(base) {
                            on_it.push(f);
                        }
                    }
                    let addr = backend_addr(w, 0);
                    let flags = BACKEND_LIVE | BACKEND_DRAINING;
                    set_backend(&mut dp, pools.model(proto), base, addr, flags, 1);
                    let rest = [base + 1, base + 2];
                    pools.set_table(&mut dp, proto, Some(&rest), 1);
                    for f in &on_it {
                        // An established TCP flow's segment (ACK) stays; UDP is hashed again.
                        let want = pools.model(proto).select_packet(*f, false);
                        let got = run_flags(&env, &mut dp, prog, w, f, ACK);
                        assert_eq!(got, want, "{} {:?} draining", prog.label, w.family);
                        let stays = proto == TCP;
                        assert_eq!(got == Choice::Backend(base), stays, "{}", prog.label);
                    }
                    // A new connection reusing a draining flow's tuple (a SYN) goes elsewhere.
                    if proto == TCP {
                        for f in &on_it {
                            let want = pools.model(proto).select_packet(*f, true);
                            let got = run(&env, &mut dp, prog, w, f);
                            assert_eq!(got, want, "{} SYN to a draining backend", prog.label);
                            assert_ne!(got, Choice::Backend(base), "{} SYN", prog.label);
                        }
                    }
                    // Freed: TCP flows too go elsewhere.
                    set_backend(&mut dp, pools.model(proto), base, addr, 0, 1);
                    for f in &on_it {
                        let want = pools.model(proto).select(*f);
                        let got = run(&env, &mut dp, prog, w, f);
                        assert_eq!(got, want, "{} freed", prog.label);
                        assert_ne!(got, Choice::Backend(base), "{} freed", prog.label);
                    }
                }
            }
        });
    }
}

/// Every backend down and the forward refusing: a new flow is answered with ICMP port
/// unreachable from the published address, quoting the packet's IP header and 8 bytes of its
/// UDP header or 20 of its TCP header (`refused_all_down`; XDP without its egress hands it to tc); a placed flow
/// stays served. A slot naming no live backend is `drop_no_backend`.
#[test]
fn refusing_pools_answer_port_unreachable() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dppoolref");
    for prog in PROGRAMS {
        env.run(|| {
            let (mut dp, _) = env.load(prog);
            let mut rng = Rng(5);
            for w in NETS {
                let mut pools = Pools::publish(&mut dp, w, 2);
                for proto in [TCP, UDP] {
                    let placed = rng.flow(w, proto);
                    let served = run_frame(&env, &mut dp, prog, &packet(&placed, SYN).bytes()).1;
                    pools.set_table(&mut dp, proto, None, 0);
                    let f = rng.flow(w, proto);
                    let p = packet(&f, SYN);
                    let (out, reason) = run_frame(&env, &mut dp, prog, &p.bytes());
                    if !prog.xdp_egress && prog.hook == Hook::Xdp {
                        assert_eq!(reason, Reason::PassToTc, "{}", prog.label);
                        assert_eq!(out, p.bytes(), "{}", prog.label);
                    } else {
                        assert_eq!(reason, Reason::RefusedAllDown, "{}", prog.label);
                        let want = unreachable(&p, w);
                        assert_eq!(
                            out,
                            want.bytes(),
                            "{} {:?}\n{}",
                            prog.label,
                            w.family,
                            super::frame::hexdump(&out, Some(&want.bytes()))
                        );
                        // The answers' budget (the "too big" answers' bucket) spent: dropped.
                        dp.maps.set_icmp_budget(SPENT).unwrap();
                        let other = packet(&rng.flow(w, proto), SYN).bytes();
                        let (out, reason) = run_frame(&env, &mut dp, prog, &other);
                        assert_eq!(reason, Reason::DropRefusedRateLimited, "{}", prog.label);
                        assert_eq!(out, other, "{}", prog.label);
                        dp.maps.set_icmp_budget(ICMP_UNLIMITED).unwrap();
                    }
                    // The flow placed before still goes to its backend.
                    let again = run_frame(&env, &mut dp, prog, &packet(&placed, ACK).bytes()).1;
                    assert_eq!(again, served, "{}", prog.label);
                    // A row naming a freed id: dropped, counted.
                    let ids = [id_base(w, proto)];
                    pools.set_table(&mut dp, proto, Some(&ids), 2);
                    let model = pools.model(proto);
                    set_backend(&mut dp, model, ids[0], backend_addr(w, 0), 0, 1);
                    let fresh = rng.flow(w, proto);
                    let reason = run_frame(&env, &mut dp, prog, &packet(&fresh, SYN).bytes()).1;
                    assert_eq!(reason, Reason::DropNoBackend, "{}", prog.label);
                }
            }
        });
    }
}

/// An ICMP answers' bucket with no token, refilled last in the future.
const SPENT: IcmpBudget = IcmpBudget {
    stamp_ns: u64::MAX,
    tokens: 0,
};

/// The answer to `p`: from the address it was sent to, back to its sender, MACs swapped,
/// quoting its IP header and the first 8 bytes of its UDP header, or TCP's 20-byte base header
/// (which holds its checksum field: see `pmtu::port_unreachable`).
fn unreachable(p: &Pkt, w: &Net) -> Pkt {
    let l4 = if p.proto == TCP { 20 } else { 8 };
    answer(p, p.dst, Icmp::PortUnreachable, w.ip_header + l4)
}

/// Per-backend counters: packets and bytes sent to each backend (client -> backend), and the
/// flows placed on it.
#[test]
fn per_backend_counters() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dppoolctr");
    for prog in &PROGRAMS[..2] {
        env.run(|| {
            let (mut dp, _) = env.load(prog);
            let mut rng = Rng(23);
            for w in NETS {
                let mut pools = Pools::publish(&mut dp, w, 3);
                for proto in [TCP, UDP] {
                    let mut want: HashMap<u32, (u64, u64, u64)> = HashMap::new();
                    for n in 1..=20u64 {
                        let f = rng.flow(w, proto);
                        let Choice::Backend(id) = pools.model(proto).select(f) else {
                            panic!("no backend");
                        };
                        let frame = packet(&f, SYN).bytes();
                        for _ in 0..n % 3 + 1 {
                            run_frame(&env, &mut dp, prog, &frame);
                        }
                        let e = want.entry(id).or_default();
                        e.0 += n % 3 + 1;
                        e.1 += (n % 3 + 1) * frame.len() as u64;
                        e.2 += 1;
                    }
                    for (id, (packets, bytes, flows)) in want {
                        let s = dp.maps.pools.stats(id).unwrap();
                        assert_eq!(
                            (s.packets, s.bytes, s.new_flows),
                            (packets, bytes, flows),
                            "{} {:?} backend {id}",
                            prog.label,
                            w.family
                        );
                    }
                }
            }
        });
    }
}

/// The other packets of a pool's flow follow its backend: an ICMP error from the client about
/// a reply (host:port -> client) goes to the backend the flow was placed on, its quote's source
/// translated to it (`icmp_error_translated`); a later fragment of a datagram goes where its
/// first fragment went (`fragment_translated`).
#[test]
fn icmp_errors_and_fragments_follow_the_backend() {
    if !crate::support::require_root() {
        return;
    }
    let env = Env::new("dppoolicmp");
    for prog in &PROGRAMS[..2] {
        env.run(|| {
            let (mut dp, _) = env.load(prog);
            let mut rng = Rng(41);
            for w in NETS {
                let mut pools = Pools::publish(&mut dp, w, 5);
                for proto in [TCP, UDP] {
                    let f = rng.flow(w, proto);
                    let Choice::Backend(id) = pools.model(proto).select(f) else {
                        panic!("no backend");
                    };
                    assert_eq!(run(&env, &mut dp, prog, w, &f), Choice::Backend(id));
                    let port = BACKEND_PORT + (id - id_base(w, proto)) as u16;
                    let reply = PoolFlow {
                        src: f.dst,
                        dst: f.src,
                        src_port: f.dst_port,
                        dst_port: f.src_port,
                        proto,
                    };
                    let quoted = packet(&reply, ACK);
                    let err = icmp(f.src, f.dst, Icmp::PortUnreachable, &quote(&quoted, None))
                        .macs(CLIENT_MAC, ETH0_MAC);
                    let (out, reason) = run_frame(&env, &mut dp, prog, &err.bytes());
                    assert_eq!(reason, Reason::IcmpErrorTranslated, "{}", prog.label);
                    // The quote's source port, after the outer header, the ICMP header and the
                    // quoted IP header.
                    let at = 14 + 2 * w.ip_header + 8;
                    let got = u16::from_be_bytes([out[at], out[at + 1]]);
                    assert_eq!(got, port, "{} {:?}", prog.label, w.family);
                }
                // A fragmented UDP datagram of a new flow.
                let f = rng.flow(w, UDP);
                let Choice::Backend(id) = pools.model(UDP).select(f) else {
                    panic!("no backend");
                };
                let first = packet(&f, 0)
                    .payload(&[0x55; 56])
                    .udp_len(1200)
                    .fragment(true, 0)
                    .ident(0x0b01);
                let (out, reason) = run_frame(&env, &mut dp, prog, &first.bytes());
                assert_eq!(reason, Reason::Forwarded, "{}", prog.label);
                let at = 14 + w.ip_header + if w.family == Family::V6 { 8 } else { 0 } + 2;
                let port = BACKEND_PORT + (id - id_base(w, UDP)) as u16;
                assert_eq!(u16::from_be_bytes([out[at], out[at + 1]]), port);
                let later = Pkt::raw_ip(UDP, f.src, f.dst, &[0x66; 64])
                    .fragment(false, 8)
                    .ident(0x0b01)
                    .macs(CLIENT_MAC, ETH0_MAC);
                let (out, reason) = run_frame(&env, &mut dp, prog, &later.bytes());
                assert_eq!(reason, Reason::FragmentTranslated, "{}", prog.label);
                let dst = if w.family == Family::V4 {
                    IpAddr::from(<[u8; 4]>::try_from(&out[30..34]).unwrap())
                } else {
                    IpAddr::from(<[u8; 16]>::try_from(&out[38..54]).unwrap())
                };
                assert_eq!(dst, w.c1, "{}", prog.label);
            }
        });
    }
}
