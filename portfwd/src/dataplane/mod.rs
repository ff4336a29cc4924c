//! The kernel side as userspace sees it: the embedded eBPF object, where its programs are
//! attached, and its maps.
//!
//! - `maps`: typed access to every map; the only place where addresses and ports are converted
//!   to the network byte order the datapath uses.
//! - `attach`: attaching and detaching the tc program per interface;
//! - `cgroup`: attaching the socket hooks (host-local access) to the cgroup v2 root.
mod attach;
pub mod cgroup;
pub mod maps;

use aya::{
    Ebpf, TestRunOptions,
    programs::{SchedClassifier, TestRun as _, Xdp, XdpMode},
};

pub use attach::Attachments;
pub use maps::Maps;

use crate::error::Error;

/// The compiled `portfwd-ebpf` object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd-ebpf"));

/// Name of the tc ingress program in the object.
pub const TC_INGRESS: &str = "portfwd_tc_ingress";
/// Name of the XDP program in the object.
pub const XDP: &str = "portfwd_xdp";

/// Whether to put the XDP program in front of tc on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum XdpPolicy {
    /// tc only.
    Off,
    /// Native XDP when the driver supports it, tc only otherwise.
    IfSupported,
    /// Native XDP or an error. Never generic (skb) XDP: that would be slower than tc.
    Required,
}

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
        let xdp: &mut Xdp = ebpf
            .program_mut(XDP)
            .ok_or_else(|| Error::Load(format!("program {XDP} missing from the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| Error::Load(e.to_string()))?;
        xdp.load()
            .map_err(|e| Error::Load(format!("verifier rejected {XDP}: {e}")))?;
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

    fn xdp_program(&mut self) -> Result<&mut Xdp, Error> {
        self.ebpf
            .program_mut(XDP)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| Error::Load(format!("program {XDP} missing")))
    }

    /// Attaches tc ingress to `name` (ifindex `index`) unless already attached there, and XDP in
    /// front of it as `xdp` says. Returns whether XDP is attached.
    pub fn attach(&mut self, index: u32, name: &str, xdp: XdpPolicy) -> Result<bool, Error> {
        if !self.attachments.is_attached(index, name) {
            // An interface that was replaced keeps its name but not its index (or the reverse):
            // drop the stale record first.
            self.detach(index);
            let prog = self.tc_program()?;
            let link = attach::attach_tc(prog, name)?;
            self.attachments.insert(index, name, link);
        }
        let has_xdp = self.attachments.xdp(index).is_some();
        match xdp {
            XdpPolicy::Off => {
                if let Some(link) = self.attachments.take_xdp(index)
                    && let Ok(prog) = self.xdp_program()
                {
                    let _ = prog.detach(link);
                }
                Ok(false)
            }
            _ if has_xdp => Ok(true),
            XdpPolicy::IfSupported if self.attachments.xdp_unsupported(index) => Ok(false),
            _ => {
                let prog = self.xdp_program()?;
                match prog.attach(name, XdpMode::Driver) {
                    Ok(link) => {
                        self.attachments.set_xdp(index, link);
                        Ok(true)
                    }
                    Err(e) if xdp == XdpPolicy::Required => Err(Error::XdpUnsupported {
                        interface: name.to_owned(),
                        message: e.to_string(),
                    }),
                    Err(e) => {
                        tracing::info!(interface = name, "no native XDP ({e}): tc only");
                        self.attachments.mark_xdp_unsupported(index);
                        Ok(false)
                    }
                }
            }
        }
    }

    /// Detaches from interface `index` if attached. An interface that disappeared took its
    /// attachments with it, so errors are only logged.
    pub fn detach(&mut self, index: u32) {
        if let Some((tc, xdp)) = self.attachments.remove(index) {
            if let Some(link) = xdp
                && let Ok(prog) = self.xdp_program()
                && let Err(e) = prog.detach(link)
            {
                tracing::debug!(ifindex = index, "xdp detach: {e}");
            }
            if let Ok(prog) = self.tc_program()
                && let Err(e) = prog.detach(tc)
            {
                tracing::debug!(ifindex = index, "tc detach: {e}");
            }
        }
    }

    /// Runs the tc program once on `frame` with BPF_PROG_TEST_RUN (the same program that is
    /// attached; nothing is sent). `ctx` is an optional `struct __sk_buff` (e.g. to set the
    /// ingress ifindex). Returns the program's return code and the frame as it left.
    pub fn test_run(&mut self, frame: &[u8], ctx: Option<&[u8]>) -> Result<(i32, Vec<u8>), Error> {
        self.test_run_program(TC_INGRESS, frame, ctx)
    }

    /// Like [`Dataplane::test_run`] for the program named `name` ([`TC_INGRESS`] or [`XDP`]).
    /// For XDP, `ctx` is an optional `struct xdp_md`.
    pub fn test_run_program(
        &mut self,
        name: &str,
        frame: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<(i32, Vec<u8>), Error> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx,
            ..Default::default()
        };
        let res = if name == XDP {
            self.xdp_program()?.test_run(opts)
        } else {
            self.tc_program()?.test_run(opts)
        }
        .map_err(|e| Error::Load(format!("BPF_PROG_TEST_RUN: {e}")))?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value as i32, out))
    }

    /// Instructions the verifier processed for the tc program (its complexity budget).
    pub fn verified_insns(&mut self) -> Result<Option<u32>, Error> {
        self.verified_insns_of(TC_INGRESS)
    }

    /// Instructions the verifier processed for the program named `name`.
    pub fn verified_insns_of(&mut self, name: &str) -> Result<Option<u32>, Error> {
        let info = if name == XDP {
            self.xdp_program()?.info()
        } else {
            self.tc_program()?.info()
        }
        .map_err(|e| Error::Load(e.to_string()))?;
        Ok(info.verified_instruction_count())
    }

    /// Detaches everywhere.
    pub fn detach_all(&mut self) {
        for index in self.attachments.indexes() {
            self.detach(index);
        }
    }
}
