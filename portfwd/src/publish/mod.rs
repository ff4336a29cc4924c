//! The grammar of a published port, shared by the command line and the config file.
//!
//! A forward is a [`Listen`] side on the host and a [`Target`] side in a container:
//!
//! ```text
//! LISTEN = [HOST_IP:]HOST_PORT[-END][/PROTO]   8080   8000-8010/udp   10.0.0.1:8080/tcp
//!                                              [::]:8080   [2001:db8::1]:8000-8010/udp
//! TARGET = IP:PORT[-END]                       172.17.0.2:3000   [fd00::2]:9000-9010
//! TARGETS = TARGET[*WEIGHT][,TARGET[*WEIGHT]...]  172.17.0.2:3000,172.17.0.3:3000*2
//! PROTO  = tcp | udp                           (default tcp, case-insensitive)
//! ALLOW  = IP[/LEN]                            10.0.0.0/8   192.0.2.7 (= /32)   2001:db8::/32
//! ```
//!
//! An IPv6 address is written in brackets before a port (`[fd00::2]:3000`, Docker's form);
//! without brackets it is refused, since `fd00::2:3000` is itself an IPv6 address.
//!
//! This is Docker's `-p` syntax. A range maps port by port (`8000-8010 -> 172.17.0.2:9000-9010`
//! sends 8005 to 9005), so the two sides of a forward must be the same length; a range with a
//! single target port (which Docker reads as "pick one free host port") is refused. Parsing is
//! split into small steps (protocol suffix, host/port split, address, port range).
//!
//! Recognised but refused with a clear one-line error, so that a Docker user learns why rather
//! than reading "not a port number": `sctp` (this portfwd forwards tcp and udp only).
//!
//! # Address families
//!
//! A forward is IPv4 or IPv6, and both its sides are of that family ([`Family`]): portfwd
//! translates addresses in place and does not translate between IPv4 and IPv6, so
//! `[::]:8080 -> 172.17.0.2:80` is refused with [`PublishError::FamilyMismatch`]. The same port
//! published for IPv4 and for IPv6 is two forwards, which do not overlap.
//!
//! Without a host address a forward listens on every host address of its target's family.
//! `0.0.0.0` is every IPv4 address: a forward keeps it as "no address"
//! ([`Listen::normalized`]), so `0.0.0.0:8080 -> 172.17.0.2:80` and `8080 -> 172.17.0.2:80` are
//! the same forward and print as `8080/tcp`. Unlike a bare port it is IPv4 only, as in Docker:
//! `0.0.0.0:8080 -> [fd00::2]:80` is refused. A forward to an IPv6 target stores "every IPv6
//! address" as `[::]` ([`Forward::new`] does it), so `8080 -> [fd00::2]:80` prints as
//! `[::]:8080/tcp -> [fd00::2]:80`.
//!
//! An allowlist may mix IPv4 and IPv6 prefixes (one list for a dual-stack service); a prefix of
//! the other family never matches a forward, and a list with no prefix of the forward's family
//! is refused ([`PublishError::AllowlistWithoutFamily`]), as an empty list is.
//!
//! Everything that parses also prints back to a string that parses to the same value
//! ([`Display`](std::fmt::Display) is canonical: the protocol is always written).
//!
//! # Files
//!
//! From the bottom up (each file uses only those above it):
//!
//! - `protocol`, `family`: [`Protocol`] and [`Family`], the plain words of the grammar;
//! - `error`: [`PublishError`], every message of the grammar;
//! - `syntax`: the pieces both sides share (protocol names, `HOST:PORT`, port ranges);
//! - `listen`: the host side, [`Listen`] and [`ListenKey`], and which ones conflict;
//! - `target`: the container side, [`Target`];
//! - `allow`: an allowlist entry, [`AllowPrefix`];
//! - `pool`: several targets of one forward, [`Pool`] and its [`Weighted`] targets;
//! - `forward`: a whole [`Forward`], its two sides and its allowlist;
//! - `named`: a forward of the config to a container by name, [`NamedForward`];
//! - this file: the module list and the public names, and the `serde_as_string!` macro that
//!   `listen`, `target` and `allow` use.

/// Serde for a type through its canonical string form ([`Display`](std::fmt::Display) out,
/// [`FromStr`](std::str::FromStr) in, with the parse error as the message), e.g.
/// `"10.0.0.1:8080/udp"`.
macro_rules! serde_as_string {
    ($type:ty) => {
        impl serde::Serialize for $type {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> serde::Deserialize<'de> for $type {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <String as serde::Deserialize>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

mod allow;
mod error;
mod family;
mod forward;
mod listen;
mod named;
mod pool;
mod protocol;
mod syntax;
mod target;

pub use allow::AllowPrefix;
pub(crate) use error::printable;
pub use error::{PoolError, PublishError};
pub use family::Family;
pub use forward::Forward;
pub use listen::{Listen, ListenKey};
pub use named::{AnyForward, AnyTarget, ContainerTarget, NamedForward, address_targets};
pub use pool::{
    AllDown, DEFAULT_GRACE, HealthSpec, MAX_POOL_TARGETS, MAX_WEIGHT, Pool, PoolOptions, Targets,
    Weighted, parse_targets,
};
pub use protocol::Protocol;
pub use target::Target;
