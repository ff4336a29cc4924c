#![no_std]
// This library target exists so that `portfwd-pktgen` can name this crate as a build dependency
// (cargo then rebuilds the embedded object when it or `portfwd-common` changes). The program is
// in the binary target.
