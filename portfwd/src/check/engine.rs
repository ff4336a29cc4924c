//! Container engines' own holders of published host ports.
//!
//! Docker binds every published host port itself, as a reservation: docker-proxy listens on it
//! (userland-proxy on, Docker's default), or dockerd does and never accepts (userland-proxy
//! off). Podman's conmon does the same; rootless engines have a port forwarder of their own
//! (rootlessport, rootlesskit, slirp4netns, pasta). Such a socket on the host port of a forward
//! portfwd serves is no conflict: portfwd's kernel path takes the traffic before it reaches the
//! socket.
//!
//! A process is taken for one of them by its executable's file name (`/proc/PID/exe`) and its
//! `/proc/PID/comm`, both of which must name the same known program: a renamed copy or a
//! process that only calls itself `docker-proxy` is a conflict like any other.

use std::net::{IpAddr, SocketAddr};

/// The programs that hold a published port for an engine, by executable file name, with the
/// engine they belong to.
const HOLDERS: &[(&str, &str)] = &[
    ("docker-proxy", "Docker"),
    ("dockerd", "Docker"),
    ("conmon", "Podman"),
    ("rootlessport", "Podman (rootless)"),
    ("rootlesskit", "rootless Docker"),
    ("slirp4netns", "a rootless container engine"),
    ("pasta", "a rootless container engine"),
    ("pasta.avx2", "a rootless container engine"),
];

/// The kernel keeps at most this many bytes of a program's name in `comm` (TASK_COMM_LEN - 1).
const COMM_LEN: usize = 15;

/// The engine whose port holder a process is, from its `comm` and the target of its
/// `/proc/PID/exe` link (`/usr/sbin/docker-proxy`; ` (deleted)` after an upgrade is ignored);
/// `None` for any other process.
pub fn engine_of(comm: &str, exe: &str) -> Option<&'static str> {
    let exe = exe.strip_suffix(" (deleted)").unwrap_or(exe);
    let name = exe.rsplit('/').next()?;
    let (_, engine) = HOLDERS.iter().find(|(n, _)| *n == name)?;
    let short = name.get(..COMM_LEN.min(name.len()))?;
    (comm == short).then_some(*engine)
}

/// The program Docker runs per published port and address family (userland-proxy on).
pub const DOCKER_PROXY: &str = "docker-proxy";

/// Where a docker-proxy sends the connections it takes, from its command line
/// (`-container-ip 172.18.0.2 -container-port 3000`; Go's flags also take `--flag` and
/// `-flag=value`).
pub fn proxy_target<'a>(args: impl IntoIterator<Item = &'a str>) -> Option<SocketAddr> {
    let mut ip: Option<IpAddr> = None;
    let mut port: Option<u16> = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let flag = arg.trim_start_matches('-');
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (flag, None),
        };
        if name != "container-ip" && name != "container-port" {
            continue;
        }
        let Some(value) = inline.or_else(|| args.next()) else {
            break;
        };
        if name == "container-ip" {
            ip = value.parse().ok();
        } else {
            port = value.parse().ok();
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_proxys_target_is_read_from_its_arguments() {
        let args = "/usr/sbin/docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 \
                    -container-ip 172.18.0.2 -container-port 3000";
        assert_eq!(
            proxy_target(args.split(' ').filter(|a| !a.is_empty())),
            Some("172.18.0.2:3000".parse().unwrap())
        );
        assert_eq!(
            proxy_target(["--container-ip=fd00::2", "--container-port=80"]),
            Some("[fd00::2]:80".parse().unwrap())
        );
        assert_eq!(proxy_target(["-container-ip", "172.18.0.2"]), None);
        assert_eq!(proxy_target(["-container-port"]), None);
    }

    #[test]
    fn engines_are_known_by_exe_and_comm_together() {
        assert_eq!(
            engine_of("docker-proxy", "/usr/sbin/docker-proxy"),
            Some("Docker")
        );
        assert_eq!(
            engine_of("docker-proxy", "/usr/libexec/docker/docker-proxy"),
            Some("Docker")
        );
        assert_eq!(engine_of("dockerd", "/usr/bin/dockerd"), Some("Docker"));
        assert_eq!(
            engine_of("dockerd", "/usr/sbin/dockerd (deleted)"),
            Some("Docker")
        );
        assert_eq!(engine_of("conmon", "/usr/bin/conmon"), Some("Podman"));
        assert_eq!(
            engine_of("pasta.avx2", "/usr/bin/pasta.avx2"),
            Some("a rootless container engine")
        );
        // Only the name the kernel keeps (15 bytes) is compared with comm.
        assert_eq!(
            engine_of("rootlessport", "/usr/libexec/podman/rootlessport"),
            Some("Podman (rootless)")
        );
    }

    #[test]
    fn other_processes_are_not_engines() {
        // A process that calls itself docker-proxy, and a copy under another name.
        assert_eq!(engine_of("docker-proxy", "/usr/bin/python3.11"), None);
        assert_eq!(engine_of("nc", "/usr/sbin/docker-proxy"), None);
        assert_eq!(engine_of("nc", "/usr/bin/nc.openbsd"), None);
        assert_eq!(engine_of("dockerd", ""), None);
        assert_eq!(engine_of("", "/usr/sbin/dockerd"), None);
        assert_eq!(engine_of("containerd", "/usr/bin/containerd"), None);
    }
}
