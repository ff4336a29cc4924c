//! [`Protocol`]: the transport protocol of a forward, `tcp` or `udp`. Parsed in `syntax`,
//! beside the rest of the grammar's pieces (its parse errors name a [`Protocol`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A transport protocol that can be published.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP, the default when no protocol is given.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// Every protocol, in the order they are listed in messages.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    /// The lowercase name used in the grammar and the config (`tcp`, `udp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
