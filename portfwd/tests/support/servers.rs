//! The servers a scenario runs in its containers (line-echo servers from `portfwd_lab`), kept for
//! the scenario's life and found again by the tag they answer with.

use portfwd_lab::{TcpServer, UdpServer};

/// A scenario's TCP and UDP servers. Stopped when dropped.
#[derive(Debug, Default)]
pub struct Servers {
    tcp: Vec<TcpServer>,
    udp: Vec<UdpServer>,
}

impl Servers {
    pub(super) fn add_tcp(&mut self, server: TcpServer) {
        assert!(
            self.tcp.iter().all(|s| s.tag() != server.tag()),
            "two TCP servers tagged {}",
            server.tag()
        );
        self.tcp.push(server);
    }

    pub(super) fn add_udp(&mut self, server: UdpServer) {
        assert!(
            self.udp.iter().all(|s| s.tag() != server.tag()),
            "two UDP servers tagged {}",
            server.tag()
        );
        self.udp.push(server);
    }

    /// The TCP server tagged `tag` (e.g. `"c1:3000"`).
    pub fn tcp(&self, tag: &str) -> &TcpServer {
        self.tcp
            .iter()
            .find(|s| s.tag() == tag)
            .unwrap_or_else(|| panic!("no TCP server tagged {tag}"))
    }

    /// Takes the TCP server tagged `tag` out of the scenario: dropping it stops it (a killed
    /// backend).
    pub fn take_tcp(&mut self, tag: &str) -> TcpServer {
        let i = self
            .tcp
            .iter()
            .position(|s| s.tag() == tag)
            .unwrap_or_else(|| panic!("no TCP server tagged {tag}"));
        self.tcp.remove(i)
    }

    /// Puts a TCP server (back) into the scenario.
    pub fn put_tcp(&mut self, server: TcpServer) {
        self.add_tcp(server);
    }

    /// The UDP server tagged `tag` (e.g. `"c1:53"`).
    pub fn udp(&self, tag: &str) -> &UdpServer {
        self.udp
            .iter()
            .find(|s| s.tag() == tag)
            .unwrap_or_else(|| panic!("no UDP server tagged {tag}"))
    }
}
