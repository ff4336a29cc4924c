//! The flow tables under a flood (issue #19, item 9), run through the tc program: a flow the
//! target answered beyond the handshake moves to the established table, which a flood of new
//! flows does not evict; and the fill level `portfwd status` derives from the datapath's
//! per-CPU inserts is exact, below a CPU's share and beyond it. Both families.
use std::net::IpAddr;

use portfwd::datapath::flows::FlowTableFill;
use portfwd_common::{
    maps::{FlowTable, MAX_FLOWS, MAX_FLOWS6},
    reason::Reason,
};

use super::{
    env::Env,
    frame::{ACK, PSH, Pkt, SYN},
    program::{self, TC},
    support,
    world::{C1_MAC, CLIENT_MAC, DOCKER0_MAC, ETH0_MAC, Family, Ingress, NETS, Net},
};

/// Runs `frame` through tc arriving on `at`; the verdict it counted.
fn verdict(dp: &mut portfwd::datapath::Datapath, env: &Env, at: Ingress, frame: &[u8]) -> Reason {
    let before = program::verdicts(dp);
    program::test_run(dp, &TC, frame, env.ifindex(at)).expect("test run");
    program::verdict_delta(TC.hook, &before, &program::verdicts(dp)).expect("one verdict")
}

/// The fill of `table`, as status derives it.
fn fill(dp: &portfwd::datapath::Datapath, table: FlowTable) -> FlowTableFill {
    let all = dp.maps.flow_tables().expect("reading the flow tables");
    *all.iter().find(|f| f.table == table).unwrap()
}

/// Unique client sources for flood datagram `i`: the unroutable `remote` first, then the
/// client's own low ports (the world's flows use ports from 40000 up).
fn flood_source(w: &Net, i: u32) -> (IpAddr, u16) {
    const PORTS: u32 = 65_536 - 1024;
    if i < PORTS {
        (w.remote, (1024 + i) as u16)
    } else {
        (w.client, (1024 + i - PORTS) as u16)
    }
}

fn pin_to_cpu0() {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity(0, ..) act on
    // this thread only.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    assert_eq!(rc, 0, "pinning to CPU 0");
}

#[test]
fn a_flood_of_new_flows_evicts_no_established_flow_and_is_counted() {
    if !support::require_root() {
        return;
    }
    let env = Env::new("dpflood");
    env.run(|| {
        // A test run runs on the calling CPU: pinned, every insert lands in CPU 0's share.
        pin_to_cpu0();
        let (mut dp, _) = env.load(&TC);
        let cpus = aya::util::nr_cpus().expect("possible CPUs") as u32;
        for w in NETS {
            let (new, est, capacity) = match w.family {
                Family::V4 => (FlowTable::New, FlowTable::Est, MAX_FLOWS),
                Family::V6 => (FlowTable::New6, FlowTable::Est6, MAX_FLOWS6),
            };
            let share = capacity / cpus;
            let fam = w.family.name();
            // A connection: SYN, SYN-ACK (not yet established), the client's ACK, then the
            // target's first segment after the handshake, which establishes it.
            let conn = Connection { w, env: &env };
            assert_eq!(conn.client(&mut dp, SYN), Reason::Forwarded, "{fam}");
            assert_eq!(conn.target(&mut dp, SYN | ACK), Reason::Replied, "{fam}");
            assert_eq!(
                fill(&dp, est).entries,
                0,
                "{fam}: a SYN-ACK does not establish"
            );
            assert_eq!(conn.client(&mut dp, ACK), Reason::Forwarded, "{fam}");
            assert_eq!(conn.target(&mut dp, PSH | ACK), Reason::Replied, "{fam}");
            let f = fill(&dp, est);
            assert_eq!((f.entries, f.inserted), (1, 1), "{fam}: established");
            assert_eq!(fill(&dp, new).inserted, 1, "{fam}: one new flow");

            // A flood of new flows beyond this CPU's share of the table, all forwarded.
            let flood = share + 10;
            let forwarded = |dp: &portfwd::datapath::Datapath| {
                program::verdicts(dp)
                    [(TC.hook as u32 * Reason::COUNT + Reason::Forwarded as u32) as usize]
            };
            let before = forwarded(&dp);
            for i in 0..flood {
                let (addr, port) = flood_source(w, i);
                let frame = Pkt::udp((addr, port), (w.host, 5353))
                    .macs(CLIENT_MAC, ETH0_MAC)
                    .bytes();
                program::test_run(&mut dp, &TC, &frame, env.ifindex(Ingress::Eth0))
                    .expect("test run");
            }
            assert_eq!(
                forwarded(&dp) - before,
                u64::from(flood),
                "{fam}: the flood"
            );
            let f = fill(&dp, new);
            assert_eq!(
                (f.entries, f.inserted, f.evicted),
                (u64::from(share), u64::from(flood) + 1, 11),
                "{fam}: the new flows' table, full, evicted what went beyond CPU 0's share"
            );
            let f = fill(&dp, est);
            assert_eq!(
                (f.entries, f.evicted),
                (1, 0),
                "{fam}: nothing established evicted"
            );
            // The connection's own entry among the new flows was evicted (it was the oldest);
            // the server still reaches the client, translated.
            assert_eq!(conn.target(&mut dp, PSH | ACK), Reason::Replied, "{fam}");
            assert_eq!(conn.client(&mut dp, ACK), Reason::Forwarded, "{fam}");
            assert_eq!(
                fill(&dp, new).inserted,
                u64::from(flood) + 1,
                "{fam}: no new flow"
            );
        }
    });
}

/// A client port no flow of the world uses.
const PORT: u16 = 45_678;

/// One TCP connection of the world's client, from [`PORT`], to 8080 (c1:3000).
struct Connection<'a> {
    w: &'a Net,
    env: &'a Env,
}

impl Connection<'_> {
    fn client(&self, dp: &mut portfwd::datapath::Datapath, flags: u8) -> Reason {
        let p =
            Pkt::tcp((self.w.client, PORT), (self.w.host, 8080), flags).macs(CLIENT_MAC, ETH0_MAC);
        verdict(dp, self.env, Ingress::Eth0, &p.bytes())
    }

    fn target(&self, dp: &mut portfwd::datapath::Datapath, flags: u8) -> Reason {
        let p = Pkt::tcp((self.w.c1, 3000), (self.w.client, PORT), flags).macs(C1_MAC, DOCKER0_MAC);
        verdict(dp, self.env, Ingress::Docker0, &p.bytes())
    }
}
