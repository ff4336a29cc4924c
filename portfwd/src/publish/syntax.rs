//! The pieces of syntax the two sides of a forward share: the protocol name, `HOST:PORT`
//! with IPv6 in brackets, a port or port range, and how addresses and ports are written back.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use super::{error::PublishError, protocol::Protocol};

impl FromStr for Protocol {
    type Err = PublishError;

    /// Parses `tcp` or `udp`, in any case. `sctp` is recognised and refused
    /// ([`PublishError::SctpUnsupported`]).
    fn from_str(s: &str) -> Result<Self, PublishError> {
        if s.eq_ignore_ascii_case("sctp") {
            return Err(PublishError::SctpUnsupported);
        }
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| PublishError::UnknownProtocol(s.to_owned()))
    }
}

/// An address as the grammar writes it: IPv6 in brackets.
pub(super) fn write_addr(f: &mut fmt::Formatter<'_>, addr: IpAddr) -> fmt::Result {
    match addr {
        IpAddr::V4(a) => write!(f, "{a}"),
        IpAddr::V6(a) => write!(f, "[{a}]"),
    }
}

pub(super) fn write_ports(f: &mut fmt::Formatter<'_>, port: u16, end: u16) -> fmt::Result {
    if end == port {
        write!(f, "{port}")
    } else {
        write!(f, "{port}-{end}")
    }
}

/// Splits `HOST:PORT` into the host's address and the port text; without a host the whole is
/// the port. An IPv6 host is bracketed (`[fd00::2]:3000`, Docker's form); an unbracketed one
/// is refused, since its last group cannot be told apart from a port.
pub(super) fn split_host_port(s: &str) -> Result<(Option<IpAddr>, &str), PublishError> {
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| PublishError::NotIpv6(s.to_owned()))?;
        let addr = inner
            .parse::<Ipv6Addr>()
            .map_err(|_| PublishError::NotIpv6(format!("[{inner}]")))?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((Some(IpAddr::V6(addr)), port)),
            None if after.is_empty() => Err(PublishError::MissingPort(s.to_owned())),
            None => Err(PublishError::NotIpv6(s.to_owned())),
        };
    }
    match s.rsplit_once(':') {
        Some((host, _))
            if host.contains(':')
                && (host.parse::<Ipv6Addr>().is_ok() || s.parse::<Ipv6Addr>().is_ok()) =>
        {
            Err(PublishError::Ipv6WithoutBrackets(s.to_owned()))
        }
        Some((host, port)) => Ok((Some(IpAddr::V4(parse_ipv4(host)?)), port)),
        None => Ok((None, s)),
    }
}

/// `PORT` or `LOW-HIGH`: the first and last port (equal for a single port).
pub(super) fn parse_port_range(s: &str) -> Result<(u16, u16), PublishError> {
    match s.split_once('-') {
        // A leading '-' is not a range ("-1" is reported as not a port).
        Some((low, high)) if !low.is_empty() => {
            let (low, high) = (parse_port(low)?, parse_port(high)?);
            if high < low {
                return Err(PublishError::ReversedRange(low, high));
            }
            Ok((low, high))
        }
        _ => parse_port(s).map(|p| (p, p)),
    }
}

/// A decimal port in 1-65535.
pub(super) fn parse_port(s: &str) -> Result<u16, PublishError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PublishError::NotAPort(s.to_owned()));
    }
    // Leading zeros are accepted (as Docker does) and dropped from messages.
    let digits = match s.trim_start_matches('0') {
        "" => "0",
        digits => digits,
    };
    match digits.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(PublishError::PortOutOfRange(digits.to_owned())),
    }
}

pub(super) fn parse_ipv4(s: &str) -> Result<Ipv4Addr, PublishError> {
    s.parse()
        .map_err(|_| PublishError::NotAnAddress(s.to_owned()))
}
