//! The programs under test, each in one configuration, and how a fixture runs through one:
//! the BPF_PROG_TEST_RUN context of its hook, the return codes, the counters read around a run.
use portfwd::datapath::Datapath;
use portfwd_common::{
    maps::{ForwardStats, Hook},
    reason::Reason,
};
use portfwd_model::{self as model, FlowEntry};

/// A datapath program the fixtures run against, in one configuration. Verdicts in the fixtures
/// are hook-neutral (pass, drop, redirect); each program says how it spells them and how its
/// test context names the ingress interface.
pub struct Program {
    /// What reports call it.
    pub label: &'static str,
    /// The program's name in the object.
    pub name: portfwd_common::maps::Program,
    pub hook: Hook,
    /// XDP: eth0 and docker0 are in `PF_XDP_EGRESS` (XDP finishes translations itself); without
    /// it every translation is handed to tc (`pass_to_tc`), as on a host whose egress devices
    /// have no native XDP (bridges, veths).
    pub xdp_egress: bool,
    pub pass: i32,
    pub drop: i32,
    pub redirect: i32,
    /// Back out of the ingress interface (an answer built in the frame's place).
    pub bounce: i32,
    /// The program's BPF_PROG_TEST_RUN context for a frame of `len` bytes arriving on
    /// `ifindex`.
    pub ctx: fn(ifindex: u32, len: usize) -> Vec<u8>,
}

pub const TC: Program = Program {
    label: "tc",
    name: portfwd_common::maps::Program::TcIngress,
    hook: Hook::Tc,
    xdp_egress: false,
    pass: -1,    // TC_ACT_UNSPEC
    drop: 2,     // TC_ACT_SHOT
    redirect: 7, // TC_ACT_REDIRECT
    bounce: 7,   // TC_ACT_REDIRECT, to the ingress interface
    ctx: skb_ctx,
};

pub const XDP: Program = Program {
    label: "xdp",
    name: portfwd_common::maps::Program::Xdp,
    hook: Hook::Xdp,
    xdp_egress: true,
    pass: 2,     // XDP_PASS
    drop: 1,     // XDP_DROP
    redirect: 4, // XDP_REDIRECT
    bounce: 3,   // XDP_TX
    ctx: xdp_ctx,
};

pub const XDP_TO_TC: Program = Program {
    label: "xdp (egress without XDP)",
    xdp_egress: false,
    ..XDP
};

/// Every program (and configuration) the fixture table runs against.
pub const PROGRAMS: &[Program] = &[TC, XDP, XDP_TO_TC];

/// Size of `struct __sk_buff` (uapi/linux/bpf.h) on 6.x kernels.
const SK_BUFF_LEN: usize = 192;
/// Offset of `__u32 ifindex` in `struct __sk_buff`: the 11th `__u32` (after len, pkt_type,
/// mark, queue_mapping, protocol, vlan_present, vlan_tci, vlan_proto, priority,
/// ingress_ifindex). For a sched_cls test run the kernel accepts only mark, priority,
/// ingress_ifindex, ifindex, cb, tstamp, wire_len, gso_segs, gso_size and hwtstamp non-zero, and
/// makes the device with this ifindex (in the caller's namespace) the skb's device.
const SK_BUFF_IFINDEX: usize = 40;

fn skb_ctx(ifindex: u32, _len: usize) -> Vec<u8> {
    let mut ctx = vec![0u8; SK_BUFF_LEN];
    ctx[SK_BUFF_IFINDEX..SK_BUFF_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// `struct xdp_md` (uapi/linux/bpf.h): data, data_end, data_meta, ingress_ifindex,
/// rx_queue_index, egress_ifindex, all `__u32`. A test run requires data 0 (no metadata),
/// data_end equal to the frame's length and egress_ifindex 0; ingress_ifindex names a device of
/// the caller's namespace, whose queue 0 becomes the frame's receive queue.
fn xdp_ctx(ifindex: u32, len: usize) -> Vec<u8> {
    let mut ctx = vec![0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// The flow entry `entry`'s key holds in the kernel's maps.
pub fn kernel_flow(dp: &Datapath, entry: &FlowEntry) -> Option<FlowEntry> {
    match entry {
        FlowEntry::V4(k, _) => dp.maps.flow(k).map(|v| FlowEntry::V4(*k, v)),
        FlowEntry::V6(k, _) => dp.maps.flow(k).map(|v| FlowEntry::V6(*k, v)),
    }
}

/// Runs `prog` once on `frame`, arriving on `ifindex`.
pub fn test_run(
    dp: &mut Datapath,
    prog: &Program,
    frame: &[u8],
    ifindex: u32,
) -> Result<(i32, Vec<u8>), portfwd::error::Error> {
    dp.test_run_program(prog.name, frame, Some(&(prog.ctx)(ifindex, frame.len())))
}

/// Every verdict counter of every hook, indexed by `hook * Reason::COUNT + reason` as in the
/// map.
pub fn verdicts(dp: &Datapath) -> Vec<u64> {
    let mut all = Vec::new();
    for hook in Hook::ALL {
        let v = dp
            .maps
            .verdicts_of(hook)
            .expect("reading the verdict counters");
        assert_eq!(v.len(), Reason::ALL.len());
        all.extend(v.into_iter().map(|(_, n)| n));
    }
    all
}

/// The one counter that moved between `before` and `after`, if exactly one moved by exactly 1,
/// and it is one of `hook`'s.
pub fn verdict_delta(hook: Hook, before: &[u64], after: &[u64]) -> Result<Reason, String> {
    let names = Hook::ALL
        .iter()
        .flat_map(|h| Reason::ALL.iter().map(move |r| (*h, *r)));
    let moved: Vec<((Hook, Reason), i128)> = names
        .zip(before.iter().zip(after))
        .filter(|(_, (b, a))| a != b)
        .map(|(r, (b, a))| (r, i128::from(*a) - i128::from(*b)))
        .collect();
    match moved.as_slice() {
        [((h, r), 1)] if *h == hook => Ok(*r),
        _ => Err(format!(
            "expected exactly one {} verdict counter to move by 1, got {:?}",
            hook.name(),
            moved
                .iter()
                .map(|((h, r), d)| format!("{}:{} {d:+}", h.name(), r.name()))
                .collect::<Vec<_>>()
        )),
    }
}

pub fn stats(dp: &Datapath, slot: u32) -> ForwardStats {
    dp.maps
        .forward_stats(slot)
        .expect("reading forward counters")
}

/// The return code `prog` gives for `action`.
pub fn code_of(prog: &Program, action: model::Action) -> i32 {
    match action {
        model::Action::Pass => prog.pass,
        model::Action::Drop => prog.drop,
        model::Action::Redirect { .. } => prog.redirect,
        model::Action::Bounce => prog.bounce,
    }
}
