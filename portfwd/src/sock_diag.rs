//! The kernel's socket diagnostics (`NETLINK_SOCK_DIAG`), for UDP: the connected UDP sockets of
//! the caller's network namespace, and destroying one, which is what `ss -K` does.
//!
//! Both are per network namespace: a daemon only ever sees and destroys its own namespace's
//! sockets, never a container's. Destroying needs `CONFIG_INET_DIAG_DESTROY` and
//! `CAP_NET_ADMIN`. A destroyed UDP socket is disconnected: the application's next receive
//! fails with `ECONNABORTED`, its next send with `EDESTADDRREQ`.
//!
//! The messages are encoded by `netlink-packet-sock-diag`; this module only asks and reads.
use std::{
    io,
    net::{IpAddr, SocketAddr},
};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkDeserializable, NetlinkHeader, NetlinkMessage,
    NetlinkPayload, NetlinkSerializable,
};
use netlink_packet_sock_diag::{
    SockDiagDestroy, SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_UDP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr as NetlinkAddr, protocols::NETLINK_SOCK_DIAG};

/// Why asking the kernel about sockets failed.
#[derive(Debug, thiserror::Error)]
pub enum SockDiagError {
    #[error("socket diagnostics over netlink")]
    Io(#[from] io::Error),
    #[error("decoding the kernel's answer: {0}")]
    Decode(String),
    #[error("the kernel refused to destroy the socket")]
    Refused(#[source] io::Error),
}

/// A connected UDP socket, as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectedUdp {
    /// Its address (`getsockname`).
    pub local: SocketAddr,
    /// What it is connected to (`getpeername`). An IPv6 socket talking IPv4 reports an
    /// IPv4-mapped address.
    pub peer: SocketAddr,
    /// The socket cookie (`SO_COOKIE`, `bpf_get_socket_cookie`).
    pub cookie: u64,
    family: u8,
    id: SocketId,
}

/// Every connected UDP socket of the caller's network namespace, both families.
pub fn connected_udp() -> Result<Vec<ConnectedUdp>, SockDiagError> {
    let socket = open()?;
    let mut all = Vec::new();
    for (family, id) in [
        (AF_INET, SocketId::new_v4()),
        (AF_INET6, SocketId::new_v6()),
    ] {
        let request = inet_request(family, id);
        send(&socket, request, NLM_F_REQUEST | NLM_F_DUMP)?;
        'dump: loop {
            for payload in receive::<SockDiagMessage>(&socket)? {
                match payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        let id = r.header.socket_id;
                        all.push(ConnectedUdp {
                            local: SocketAddr::new(id.source_address, id.source_port),
                            peer: SocketAddr::new(id.destination_address, id.destination_port),
                            cookie: cookie(&id.cookie),
                            family,
                            id,
                        });
                    }
                    NetlinkPayload::Done(_) => break 'dump,
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(SockDiagError::Io(e.to_io()));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(all)
}

/// Destroys `sock` (found by its addresses and cookie, so a socket that was closed and whose
/// addresses were reused since is left alone). A socket that is already gone is not an error.
pub fn destroy(sock: &ConnectedUdp) -> Result<(), SockDiagError> {
    let socket = open()?;
    let request = SockDiagDestroy::new(inet_request(sock.family, sock.id.clone()));
    send(&socket, request, NLM_F_REQUEST | NLM_F_ACK)?;
    for payload in receive::<SockDiagDestroy>(&socket)? {
        if let NetlinkPayload::Error(e) = payload {
            return match e.code.map(|c| -c.get()) {
                None | Some(libc::ENOENT) => Ok(()),
                Some(_) => Err(SockDiagError::Refused(e.to_io())),
            };
        }
    }
    Err(SockDiagError::Decode("no acknowledgement".into()))
}

fn open() -> Result<Socket, SockDiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

/// A request about the connected UDP sockets of `family` matching `id`.
fn inet_request(family: u8, id: SocketId) -> SockDiagMessage {
    SockDiagMessage::InetRequest(InetRequest {
        family,
        protocol: IPPROTO_UDP,
        extensions: ExtensionFlags::empty(),
        // A connected UDP socket is in the "established" state; an unconnected one is "close".
        states: StateFlags::ESTABLISHED,
        socket_id: id,
    })
}

fn send<T: NetlinkSerializable + Into<NetlinkPayload<T>>>(
    socket: &Socket,
    message: T,
    flags: u16,
) -> Result<(), SockDiagError> {
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    let mut packet = NetlinkMessage::new(header, message.into());
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    Ok(())
}

/// The messages of one datagram from the kernel.
fn receive<T: NetlinkDeserializable>(
    socket: &Socket,
) -> Result<Vec<NetlinkPayload<T>>, SockDiagError> {
    let (buf, _) = socket.recv_from_full()?;
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let message = NetlinkMessage::<T>::deserialize(&buf[offset..])
            .map_err(|e| SockDiagError::Decode(e.to_string()))?;
        let len = message.header.length as usize;
        out.push(message.payload);
        if len == 0 {
            break;
        }
        offset += len;
    }
    Ok(out)
}

/// The kernel reports a cookie as two 32-bit words in host order, low word first.
fn cookie(raw: &[u8; 8]) -> u64 {
    let word = |i: usize| {
        u64::from(u32::from_ne_bytes([
            raw[i],
            raw[i + 1],
            raw[i + 2],
            raw[i + 3],
        ]))
    };
    word(0) | (word(4) << 32)
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, a dual-stack socket talking
/// IPv4) given as the IPv4 address it carries.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(
        match addr.ip() {
            IpAddr::V6(v6) => v6.to_canonical(),
            v4 => v4,
        },
        addr.port(),
    )
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    #[test]
    fn cookie_words_are_low_first() {
        let mut raw = [0u8; 8];
        raw[..4].copy_from_slice(&0x1122_3344u32.to_ne_bytes());
        raw[4..].copy_from_slice(&0x5566_7788u32.to_ne_bytes());
        assert_eq!(cookie(&raw), 0x5566_7788_1122_3344);
    }

    #[test]
    fn canonical_unmaps_ipv4_mapped_addresses() {
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:53".parse().unwrap();
        assert_eq!(canonical(mapped), "127.0.0.1:53".parse().unwrap());
        let v6: SocketAddr = "[::1]:53".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    /// Lists a connected socket and destroys it, in a network namespace of its own (root only:
    /// skipped otherwise, except under `CI=true`, where it fails).
    #[test]
    fn a_connected_socket_is_listed_and_destroyed() {
        if !crate::sys::is_root() {
            assert_ne!(std::env::var("CI").as_deref(), Ok("true"), "needs root");
            eprintln!("SKIPPED: needs root (a network namespace)");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            // A child process inherits this thread's namespace.
            let up = std::process::Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status()
                .unwrap();
            assert!(up.success());
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.connect("127.0.0.1:9").unwrap();
            let local = s.local_addr().unwrap();
            let all = connected_udp().unwrap();
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!(
                (all[0].local, all[0].peer),
                (local, "127.0.0.1:9".parse().unwrap())
            );
            assert_ne!(all[0].cookie, 0);
            destroy(&all[0]).unwrap();
            let err = s.recv(&mut [0u8; 8]).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::ECONNABORTED), "{err}");
            let err = s.send(b"x").unwrap_err();
            assert_eq!(
                err.raw_os_error(),
                Some(libc::EDESTADDRREQ),
                "no longer connected: {err}"
            );
            assert!(connected_udp().unwrap().is_empty());
            // Gone already: not an error.
            destroy(&all[0]).unwrap();
        })
        .join()
        .unwrap();
    }
}
