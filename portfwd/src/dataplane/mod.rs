//! The kernel side as userspace sees it: the embedded eBPF object, where its programs are
//! attached, and its maps.
//!
//! - `maps`: typed access to every map; the only place where addresses and ports are converted
//!   to the network byte order the datapath uses.
//! - `attach`: attaching and detaching the tc program per interface;
//! - `cgroup`: attaching the socket hooks (host-local access) to the cgroup v2 root.
mod attach;
pub mod cgroup;
mod count;
pub mod maps;
pub mod pin;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    programs::{
        SchedClassifier, TestRun as _, Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};

pub use attach::Attachments;
use attach::Handle;
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
    /// Where maps and links are pinned; `None` for a process-local datapath (tests).
    pin_dir: Option<PathBuf>,
}

impl Dataplane {
    /// Loads the object and its programs into the kernel (not yet attached anywhere), with
    /// fresh maps that live as long as this process holds them.
    pub fn load() -> Result<Self, Error> {
        let ebpf = Ebpf::load(EBPF_OBJECT).map_err(|e| Error::Load(e.to_string()))?;
        Self::finish_load(ebpf, None)
    }

    /// Loads the object against the maps pinned in `dir` (creating and pinning them when
    /// absent, replacing any whose layout changed), so that flows, forwards and counters of a
    /// previous daemon carry over. Mounts bpffs if needed.
    pub fn load_pinned(dir: &Path) -> Result<Self, Error> {
        pin::prepare(dir)?;
        // What this binary's maps look like, from a throwaway load (maps only, no programs).
        let probe = Ebpf::load(EBPF_OBJECT).map_err(|e| Error::Load(e.to_string()))?;
        let expected: Vec<(String, pin::MapLayout)> = probe
            .maps()
            .filter_map(|(name, map)| {
                let info = map_data(map)?.info().ok()?;
                Some((name.to_owned(), pin::MapLayout::of(&info)))
            })
            .collect();
        drop(probe);
        pin::replace_incompatible_maps(dir, &expected);

        let maps_dir = pin::maps_dir(dir);
        let paths: Vec<(String, PathBuf)> = expected
            .iter()
            .map(|(n, _)| (n.clone(), maps_dir.join(n)))
            .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let ebpf = loader
            .load(EBPF_OBJECT)
            .map_err(|e| Error::Load(e.to_string()))?;
        Self::finish_load(ebpf, Some(dir.to_owned()))
    }

    fn finish_load(mut ebpf: Ebpf, pin_dir: Option<PathBuf>) -> Result<Self, Error> {
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
            pin_dir,
        })
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Takes over the links a previous daemon pinned: each one gets this binary's program
    /// swapped in atomically, so interfaces are never left without a program nor given two.
    /// Links that cannot be taken over (interface gone, unknown file) are unpinned. Returns
    /// the adopted (ifindex, name, kind).
    pub fn adopt_pinned_links(&mut self) -> Vec<(u32, String, String)> {
        let Some(dir) = self.pin_dir.clone() else {
            return Vec::new();
        };
        let mut files = pin::pinned_links(&dir);
        // tc first: an interface's record is created by its tc link.
        files.sort_by_key(|f| (f.kind != "tc", f.ifindex));
        let mut adopted = Vec::new();
        for f in files {
            match self.adopt_one(&f) {
                Ok(()) => adopted.push((f.ifindex, f.ifname.clone(), f.kind.clone())),
                Err(e) => {
                    tracing::warn!(path = %f.path.display(), "not taking over pinned link: {e}");
                    let _ = std::fs::remove_file(&f.path);
                }
            }
        }
        adopted
    }

    fn adopt_one(&mut self, f: &pin::PinnedLinkFile) -> Result<(), String> {
        let fd = FdLink::from(PinnedLink::from_pin(&f.path).map_err(|e| e.to_string())?);
        match f.kind.as_str() {
            "tc" => {
                let link = SchedClassifierLink::try_from(fd).map_err(|e| e.to_string())?;
                let prog = self.tc_program().map_err(|e| e.to_string())?;
                let id = prog.attach_to_link(link).map_err(|e| e.to_string())?;
                let link = prog.take_link(id).map_err(|e| e.to_string())?;
                let link = FdLink::try_from(link).map_err(|e| e.to_string())?;
                self.attachments.insert(
                    f.ifindex,
                    &f.ifname,
                    Handle::Pinned {
                        link,
                        path: f.path.clone(),
                    },
                );
                Ok(())
            }
            "xdp" => {
                if !self.attachments.is_attached(f.ifindex, &f.ifname) {
                    return Err("no tc link for this interface".into());
                }
                let link = XdpLink::try_from(fd).map_err(|e| e.to_string())?;
                let prog = self.xdp_program().map_err(|e| e.to_string())?;
                let id = prog.attach_to_link(link).map_err(|e| e.to_string())?;
                let link = prog.take_link(id).map_err(|e| e.to_string())?;
                let link = FdLink::try_from(link).map_err(|e| e.to_string())?;
                if let Some(a) = self.attachments.links.get_mut(&f.ifindex) {
                    a.xdp = Some(Handle::Pinned {
                        link,
                        path: f.path.clone(),
                    });
                }
                Ok(())
            }
            other => Err(format!("unknown link kind {other}")),
        }
    }

    /// Pins a freshly made link under the pin directory.
    fn pin_link(&self, index: u32, name: &str, kind: &str, fd: FdLink) -> Result<Handle, Error> {
        let dir = self.pin_dir.as_deref().ok_or_else(|| Error::Attach {
            interface: name.to_owned(),
            message: "no pin directory".into(),
        })?;
        let path = pin::link_path(dir, index, name, kind);
        // A stale file (same ifindex and name, previous daemon) would make the pin fail.
        let _ = std::fs::remove_file(&path);
        let pinned = fd.pin(&path).map_err(|e| Error::Attach {
            interface: name.to_owned(),
            message: format!(
                "pinning the {kind} link at {}: {}",
                path.display(),
                error_chain(&e)
            ),
        })?;
        Ok(Handle::Pinned {
            link: FdLink::from(pinned),
            path,
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
            let pinning = self.pin_dir.is_some();
            let prog = self.tc_program()?;
            let id = attach::attach_tc(prog, name)?;
            let handle = if pinning {
                let link = prog.take_link(id).map_err(|e| Error::Attach {
                    interface: name.to_owned(),
                    message: e.to_string(),
                })?;
                match FdLink::try_from(link) {
                    Ok(fd) => self.pin_link(index, name, "tc", fd)?,
                    Err(e) => {
                        // A legacy (netlink) tc attachment is no bpf_link and cannot be pinned;
                        // converting consumed it, so attach again, process-local.
                        tracing::warn!(
                            interface = name,
                            "tc link cannot be pinned ({e}): a daemon crash will detach it"
                        );
                        let prog = self.tc_program()?;
                        Handle::Tc(attach::attach_tc(prog, name)?)
                    }
                }
            } else {
                Handle::Tc(id)
            };
            self.attachments.insert(index, name, handle);
        }
        let has_xdp = self.attachments.has_xdp(index);
        match xdp {
            XdpPolicy::Off => {
                let handle = self
                    .attachments
                    .links
                    .get_mut(&index)
                    .and_then(|a| a.xdp.take());
                if let Some(h) = handle {
                    self.release(h);
                }
                Ok(false)
            }
            _ if has_xdp => Ok(true),
            XdpPolicy::IfSupported if self.attachments.xdp_unsupported(index) => Ok(false),
            _ => {
                let pinning = self.pin_dir.is_some();
                let prog = self.xdp_program()?;
                match prog.attach(name, XdpMode::Driver) {
                    Ok(id) => {
                        let handle = if pinning {
                            let link = prog.take_link(id).map_err(|e| Error::Attach {
                                interface: name.to_owned(),
                                message: e.to_string(),
                            })?;
                            let fd = FdLink::try_from(link).map_err(|e| Error::Attach {
                                interface: name.to_owned(),
                                message: format!("XDP link cannot be pinned: {e}"),
                            })?;
                            self.pin_link(index, name, "xdp", fd)?
                        } else {
                            Handle::Xdp(id)
                        };
                        if let Some(a) = self.attachments.links.get_mut(&index) {
                            a.xdp = Some(handle);
                        }
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
        if let Some(a) = self.attachments.links.remove(&index) {
            if let Some(h) = a.xdp {
                self.release(h);
            }
            self.release(a.tc);
        }
    }

    /// Detaches one attachment: a pinned link loses its pin and its last fd.
    fn release(&mut self, handle: Handle) {
        match handle {
            Handle::Pinned { link, path } => {
                let _ = std::fs::remove_file(&path);
                drop(link);
            }
            Handle::Tc(id) => {
                if let Ok(prog) = self.tc_program()
                    && let Err(e) = prog.detach(id)
                {
                    tracing::debug!("tc detach: {e}");
                }
            }
            Handle::Xdp(id) => {
                if let Ok(prog) = self.xdp_program()
                    && let Err(e) = prog.detach(id)
                {
                    tracing::debug!("xdp detach: {e}");
                }
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

    /// Instructions the verifier processed for the program named `name`: [`TC_INGRESS`],
    /// [`XDP`], or one of [`cgroup::SOCKET_PROGRAMS`] (loaded, not attached, if it was not yet).
    pub fn verified_insns_of(&mut self, name: &str) -> Result<Option<u32>, Error> {
        let info = match name {
            XDP => self.xdp_program()?.info(),
            TC_INGRESS => self.tc_program()?.info(),
            _ => cgroup::loaded_program(self, name)?.info(),
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

/// The `MapData` behind any map variant (for reading its layout).
fn map_data(map: &aya::maps::Map) -> Option<&aya::maps::MapData> {
    use aya::maps::Map;
    Some(match map {
        Map::HashMap(m) | Map::LruHashMap(m) | Map::PerCpuArray(m) | Map::DevMapHash(m) => m,
        Map::Array(m) | Map::PerCpuHashMap(m) | Map::PerCpuLruHashMap(m) => m,
        _ => return None,
    })
}

/// `e` and its sources, `: `-separated (aya's errors keep the errno in a source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(&format!(": {inner}"));
        cur = inner.source();
    }
    s
}
