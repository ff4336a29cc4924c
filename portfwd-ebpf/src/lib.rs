#![no_std]
// This library target exists so that `portfwd` can name this crate as a build dependency (cargo
// then rebuilds the embedded object when it changes). The programs are in the binary target.
