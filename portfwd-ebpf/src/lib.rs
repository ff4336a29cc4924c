#![no_std]
// This library target exists so that `portfwd` can name this crate as a build dependency (cargo
// then rebuilds the embedded object when it changes). The programs are in the binary target.
//
// It also holds the programs' panic handler, for the BPF target only.

/// The verifier rejects any program that could reach a panic; there is nothing to unwind.
#[cfg(all(target_arch = "bpf", not(test)))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
