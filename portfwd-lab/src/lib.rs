//! The network-namespace lab: a Docker-like host, a client machine and containers, each in a network
//! namespace that the lab creates (and deletes again when dropped).
//!
//! Topology (what `docker run -p` sees under the hood):
//!
//! ```text
//!  client ns                      host ns (ip_forward=1)                    container ns "c1"
//!  eth0 10.77.0.2/24  <--veth-->  eth0 10.77.0.1/24
//!  default via 10.77.0.1          docker0 (bridge) 172.17.0.1/16
//!                                   └─ vethXXXXXXX  <--------veth------->  eth0 172.17.0.2/16
//!                                                                          default via 172.17.0.1
//! ```
//!
//! Every namespace name starts with a prefix unique to the [`Lab`] (`pf{pid}x{counter}-{tag}`), so
//! several labs (parallel tests) coexist. All interfaces live inside the lab's namespaces (veth pairs
//! are created directly across namespaces), so interface names never collide between labs and the
//! root namespace is never touched. The lab's namespaces have no link to the root namespace: traffic
//! sent inside them cannot leave them.
//!
//! Servers and clients ([`tcp_server`], [`udp_server`], [`tcp_request`], [`tcp_session`],
//! [`udp_request`]) are plain std sockets created inside a namespace with [`Ns::run`]; every
//! blocking call they make is bounded by a timeout.
//!
//! Everything here needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and iproute2's `ip`.
//!
//! Module map:
//! - `lab`: the [`Lab`] (its namespaces, bridge, veths and [`Container`]s) and its teardown;
//!   `lab/exec.rs`: the processes a lab spawned and commands bounded by a time limit, below
//!   the [`Lab`] methods that wrap them;
//! - `ns`: a named namespace ([`Ns`]), and running code inside it from a thread;
//! - `ip`: iproute2 and sysctl calls that build and delete namespaces;
//! - `names`: unique namespace prefixes, and the cleanup of labs whose process is gone;
//! - `proc`: entering a namespace before exec, commands with a time limit, killing what is left;
//! - `net`: the line-echo servers and clients;
//! - `docker`: a real dockerd in a lab's host namespace ([`Docker`]), its API, the test image;
//! - `cni`: CNI plugins driven by hand in a lab's host namespace ([`CniNet`]), as libcni does;
//! - `podman`: a real podman with its CNI backend in a lab's host namespace ([`Podman`]).

#![warn(missing_docs)]

mod cni;
mod docker;
mod ip;
mod lab;
mod names;
mod net;
mod ns;
mod podman;
mod proc;
mod sys;

pub use cni::{ChainReply, CniNet, DEBIAN_CNI_DIR, PluginReply, Sandbox};
pub use docker::{Docker, Response as DockerResponse};
pub use lab::{Container, EXEC_TIMEOUT, Lab, parse_mac};
pub use names::cleanup_stale;
pub use net::{
    TcpServer, TcpSession, UdpServer, http_get, tcp_request, tcp_server, tcp_session, udp_request,
    udp_server,
};
pub use ns::{NETNS_DIR, Ns};
pub use podman::Podman;
pub use proc::is_root;
