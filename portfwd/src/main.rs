static EBPF: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd-ebpf"));
fn main() { let mut e = aya::Ebpf::load(EBPF).unwrap(); let p: &mut aya::programs::SchedClassifier = e.program_mut("portfwd_tc_ingress").unwrap().try_into().unwrap(); match p.load() { Ok(()) => println!("loaded ok"), Err(err) => { println!("{err:?}"); } } }
