//! Docker: the containers the Engine API describes, and the forwards their published ports
//! make. The daemon follows them (see `daemon::docker`); this module knows Docker, not the
//! daemon.
//!
//! - `container`: a running container as portfwd needs it (name, address on the network
//!   Docker's own DNAT uses, published ports), read from `GET /containers/{id}/json`;
//! - `bindings`: the forwards a container's bindings make, and the bindings portfwd leaves;
//! - `engine`: the Engine API client (bollard): version negotiation, listing, inspecting and
//!   the event stream.
pub mod bindings;
pub mod container;
pub mod engine;

pub use bindings::{Derived, NotServed, forwards_of};
pub use container::{Binding, Container};
pub use engine::{Engine, EngineError, Event};
