//! The kernel side as userspace sees it: the embedded eBPF object, where its programs are
//! attached, and its maps.
//!
//! - `maps`: typed access to every map; the only place where addresses and ports are converted
//!   to the network byte order the datapath uses.
//! - `attach`: attaching and detaching the tc program per interface.
mod attach;
pub mod maps;

use aya::{
    Ebpf, TestRunOptions,
    programs::{SchedClassifier, TestRun as _},
};

pub use attach::Attachments;
pub use maps::Maps;

use crate::error::Error;

/// The compiled `portfwd-ebpf` object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd-ebpf"));

/// Name of the tc ingress program in the object.
pub const TC_INGRESS: &str = "portfwd_tc_ingress";

/// The loaded programs and their maps.
pub struct Dataplane {
    ebpf: Ebpf,
    pub maps: Maps,
    pub attachments: Attachments,
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (not yet attached anywhere).
    pub fn load() -> Result<Self, Error> {
        let mut ebpf = Ebpf::load(EBPF_OBJECT).map_err(|e| Error::Load(e.to_string()))?;
        let prog: &mut SchedClassifier = ebpf
            .program_mut(TC_INGRESS)
            .ok_or_else(|| Error::Load(format!("program {TC_INGRESS} missing from the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| Error::Load(format!("verifier rejected {TC_INGRESS}: {e}")))?;
        let maps = Maps::take_from(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            attachments: Attachments::default(),
        })
    }

    fn tc_program(&mut self) -> Result<&mut SchedClassifier, Error> {
        self.ebpf
            .program_mut(TC_INGRESS)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| Error::Load(format!("program {TC_INGRESS} missing")))
    }

    /// Attaches the tc ingress program to `name` (ifindex `index`) unless already attached there.
    pub fn attach(&mut self, index: u32, name: &str) -> Result<(), Error> {
        if self.attachments.is_attached(index, name) {
            return Ok(());
        }
        // An interface that was replaced keeps its name but not its index (or the reverse):
        // drop the stale record first.
        self.detach(index);
        let prog = self.tc_program()?;
        let link = attach::attach_tc(prog, name)?;
        self.attachments.insert(index, name, link);
        Ok(())
    }

    /// Detaches from interface `index` if attached. An interface that disappeared took its
    /// attachment with it, so errors are only logged.
    pub fn detach(&mut self, index: u32) {
        if let Some(link) = self.attachments.remove(index)
            && let Ok(prog) = self.tc_program()
            && let Err(e) = prog.detach(link)
        {
            tracing::debug!(ifindex = index, "detach: {e}");
        }
    }

    /// Runs the tc program once on `frame` with BPF_PROG_TEST_RUN (the same program that is
    /// attached; nothing is sent). `ctx` is an optional `struct __sk_buff` (e.g. to set the
    /// ingress ifindex). Returns the program's return code and the frame as it left.
    pub fn test_run(&mut self, frame: &[u8], ctx: Option<&[u8]>) -> Result<(i32, Vec<u8>), Error> {
        let mut out = vec![0u8; frame.len() + 256];
        let prog = self.tc_program()?;
        let res = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: ctx,
                ..Default::default()
            })
            .map_err(|e| Error::Load(format!("BPF_PROG_TEST_RUN: {e}")))?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value as i32, out))
    }

    /// Instructions the verifier processed for the tc program (its complexity budget).
    pub fn verified_insns(&mut self) -> Result<Option<u32>, Error> {
        let prog = self.tc_program()?;
        let info = prog.info().map_err(|e| Error::Load(e.to_string()))?;
        Ok(info.verified_instruction_count())
    }

    /// Detaches everywhere.
    pub fn detach_all(&mut self) {
        for index in self.attachments.indexes() {
            self.detach(index);
        }
    }
}
