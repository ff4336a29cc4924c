//! The test world in a lab: the lab host namespace given the world's MACs, neighbours and IPv6
//! addresses, and the datapath loaded with the world's maps (`world.rs`) for one program, next
//! to the reference model's copy of the same state.
use portfwd::datapath::Datapath;
use portfwd_common::maps::IcmpBudget;
use portfwd_lab::Lab;

use super::model_world::ModelWorld;
use super::program::Program;
use super::world::{DOCKER0_MAC, ETH0_MAC, Ingress, NETS, V4, V6, ifindex_of, mac};

/// A bucket of ICMP answers that is never refilled and never runs out.
pub const ICMP_UNLIMITED: IcmpBudget = IcmpBudget {
    stamp_ns: 0,
    tokens: u64::MAX / 2,
};

/// The lab the world runs in; [`Env::load`] gives a loaded datapath, maps filled, and the
/// model's copy of the same world.
pub struct Env {
    pub lab: Lab,
    pub eth0: u32,
    pub docker0: u32,
    /// `pfport0`, the exposed bridge port.
    pub port: u32,
}

impl Env {
    /// Builds the lab (fixed MACs, permanent neighbours, IPv6 addresses) for the world.
    pub fn new(tag: &str) -> Env {
        let lab = Lab::new(tag).expect("building the lab");
        let host = lab.host().clone();
        lab.sh(
            &host,
            &format!(
                "ip link set eth0 address {eth0} && ip link set docker0 address {docker0} && \
                 ip link add pfport0 type veth peer name pfport1 && \
                 ip link set pfport0 master docker0 && \
                 ip link set pfport1 up && ip link set pfport0 up && {v4} && {v6}",
                eth0 = mac(ETH0_MAC),
                docker0 = mac(DOCKER0_MAC),
                v4 = V4.lab_setup(),
                v6 = V6.lab_setup(),
            ),
        )
        .expect("setting MACs, addresses and neighbours");
        let index = |dev: &str| -> u32 {
            lab.sh(&host, &format!("cat /sys/class/net/{dev}/ifindex"))
                .expect("reading an ifindex")
                .trim()
                .parse()
                .expect("an ifindex")
        };
        let (eth0, docker0, port) = (index("eth0"), index("docker0"), index("pfport0"));
        Env {
            lab,
            eth0,
            docker0,
            port,
        }
    }

    /// Runs `f` in the lab's host namespace.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.lab.host().run(f)
    }

    pub fn ifindex(&self, i: Ingress) -> u32 {
        ifindex_of(i, self.eth0, self.docker0, self.port)
    }

    /// Loads the datapath (call inside [`Env::run`]) and fills its maps as `prog` needs;
    /// returns it with the model's copy of the same state.
    pub fn load(&self, prog: &Program) -> (Datapath, ModelWorld) {
        let mut dp = Datapath::load().expect("loading the datapath");
        let w = ModelWorld::new(self.eth0, self.docker0, self.port, prog);
        for &i in &w.xdp_egress {
            dp.maps.set_xdp_egress(i, true).unwrap();
        }
        dp.maps.set_iface(self.eth0, true, None).unwrap();
        dp.maps.set_iface(self.docker0, false, None).unwrap();
        dp.maps.set_iface(self.port, true, None).unwrap();
        for net in NETS {
            net.fill(&mut dp);
        }
        // Every answer to a packet too big is sent: the model does not model the rate limit
        // (`fixtures/path_mtu.rs` tests it).
        dp.maps.set_icmp_budget(ICMP_UNLIMITED).unwrap();
        (dp, w)
    }
}
