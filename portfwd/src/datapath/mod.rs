//! The kernel side as userspace sees it: the embedded eBPF object, its programs (loaded here
//! by [`Program`]), where they are attached, and its maps.
//!
//! - this module: loading the object (against pinned maps, for the daemon), attaching the tc
//!   and XDP programs to an interface, test runs and verifier statistics;
//! - `attach`: what is attached where, and how each attachment is held;
//! - `pin`: the bpffs pins (maps and links) that let the datapath outlive the daemon;
//! - `maps`: typed access to every map; the only place where addresses and ports are converted
//!   to the network byte order the datapath uses;
//! - `flows`: the flow tables' fill level and evictions, from the datapath's insert counters;
//! - `generation`: the two generations of the forwarding tables, and switching between them in
//!   one step (a reload is atomic for the datapath);
//! - `cgroup`: attaching the socket hooks (host-local access) to the cgroup v2 root, or taking
//!   over the ones a previous daemon pinned;
//! - `link`: the raw `bpf(2)` calls that taking over a pinned cgroup link needs;
//! - `resize`: the flow tables' size (`max_flows:`), and carrying their flows over to tables of
//!   a new size.
mod attach;
pub mod cgroup;
pub mod flows;
pub mod generation;
mod link;
pub mod maps;
pub mod pin;
pub mod pools;
pub mod resize;

use std::{
    os::fd::AsFd as _,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader, TestRunOptions,
    maps::MapData,
    programs::{
        CgroupSockAddr, ProgramError, SchedClassifier, TcAttachType, TestRun as _, TestRunResult,
        Xdp, XdpMode,
        links::{FdLink, PinnedLink},
        tc::SchedClassifierLink,
        xdp::XdpLink,
    },
};

pub use attach::Attachments;
use attach::Handle;
pub use maps::Maps;
pub use resize::FlowSizes;

use portfwd_common::maps::Program;

use crate::error::{AttachError, Error, LoadError, chain};

/// The compiled `portfwd-ebpf` object, built by `build.rs`.
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portfwd-ebpf"));

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
pub struct Datapath {
    ebpf: Ebpf,
    pub maps: Maps,
    pub attachments: Attachments,
    /// Where maps and links are pinned; `None` for a process-local datapath (tests).
    pin_dir: Option<PathBuf>,
    /// Pinned flow tables replaced by tables of another size, whose last flows are carried over
    /// once the previous programs are swapped out (see [`resize`]).
    resized: Vec<resize::Carry>,
}

impl Datapath {
    /// Loads the object and its programs into the kernel (not yet attached anywhere), with
    /// fresh maps that live as long as this process holds them, the flow tables at their
    /// default sizes.
    pub fn load() -> Result<Self, Error> {
        Self::load_with(FlowSizes::default())
    }

    /// [`Datapath::load`] with the flow tables sized as `sizes` says.
    pub fn load_with(sizes: FlowSizes) -> Result<Self, Error> {
        let mut loader = EbpfLoader::new();
        sizes.apply(&mut loader);
        let ebpf = loader.load(EBPF_OBJECT).map_err(load_error)?;
        Self::finish_load(ebpf, None)
    }

    /// Loads the object against the maps pinned in `dir` (creating and pinning them when
    /// absent, replacing any whose layout changed), so that flows, forwards and counters of a
    /// previous daemon carry over. Mounts bpffs if needed. The flow tables are sized as `sizes`
    /// says; a pinned one of another size is replaced by a new one holding its flows (up to
    /// its capacity; see [`resize`]): the last of them are copied by
    /// [`Datapath::adopt_pinned_links`], once the previous programs no longer run.
    pub fn load_pinned(dir: &Path, sizes: FlowSizes) -> Result<Self, Error> {
        pin::prepare(dir)?;
        // What this binary's maps look like, from a throwaway load (maps only, no programs).
        let mut probe_loader = EbpfLoader::new();
        sizes.apply(&mut probe_loader);
        let probe = probe_loader.load(EBPF_OBJECT).map_err(load_error)?;
        // The object's data sections (`.rodata`: constants the compiler placed there) are maps
        // too, but they hold no state: each load makes its own, and they are not pinned.
        let expected: Vec<(String, pin::MapLayout)> = probe
            .maps()
            .filter(|(name, _)| !name.starts_with('.'))
            .filter_map(|(name, map)| {
                let info = map_data(map)?.info().ok()?;
                Some((name.to_owned(), pin::MapLayout::of(&info)))
            })
            .collect();
        drop(probe);
        let old_tables = pin::replace_incompatible_maps(dir, &expected, FlowSizes::is_flow_table);

        let maps_dir = pin::maps_dir(dir);
        let paths: Vec<(String, PathBuf)> = expected
            .iter()
            .map(|(n, _)| (n.clone(), maps_dir.join(n)))
            .collect();
        let mut loader = EbpfLoader::new();
        sizes.apply(&mut loader);
        for (name, path) in &paths {
            loader.map_pin_path(name.as_str(), path.as_path());
        }
        let ebpf = loader.load(EBPF_OBJECT).map_err(load_error)?;
        let resized = Self::carry_over(&ebpf, old_tables);
        let mut dp = Self::finish_load(ebpf, Some(dir.to_owned()))?;
        dp.resized = resized;
        Ok(dp)
    }

    /// Pass 1 of carrying the flows of resized tables over (see [`resize`]): into the new
    /// tables, which no program uses yet.
    fn carry_over(ebpf: &Ebpf, old_tables: Vec<(String, MapData)>) -> Vec<resize::Carry> {
        let new_map = |name: &str| -> Option<MapData> {
            let fd = map_data(ebpf.map(name)?)?
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .ok()?;
            MapData::from_fd(fd).ok()
        };
        let Some(inserts) = new_map(portfwd_common::maps::FLOW_INSERTS) else {
            tracing::warn!("no flow insert counters: resized flow tables start empty");
            return Vec::new();
        };
        let mut resized = Vec::new();
        for (name, old) in old_tables {
            let Some(name) = FlowSizes::flow_table(&name) else {
                continue;
            };
            let Some(new) = new_map(name) else {
                tracing::warn!(
                    map = name,
                    "resized flow table not in the object: flows lost"
                );
                continue;
            };
            let mut carry = resize::Carry::new(name, old, new);
            carry.first_pass(&inserts);
            resized.push(carry);
        }
        resized
    }

    fn finish_load(mut ebpf: Ebpf, pin_dir: Option<PathBuf>) -> Result<Self, Error> {
        let tc: &mut SchedClassifier = program_mut(&mut ebpf, Program::TcIngress)?;
        tc.load()
            .map_err(|e| LoadError::Verifier(Program::TcIngress, e))?;
        let egress: &mut SchedClassifier = program_mut(&mut ebpf, Program::TcEgress)?;
        egress
            .load()
            .map_err(|e| LoadError::Verifier(Program::TcEgress, e))?;
        let xdp: &mut Xdp = program_mut(&mut ebpf, Program::Xdp)?;
        xdp.load()
            .map_err(|e| LoadError::Verifier(Program::Xdp, e))?;
        let maps = Maps::take_from(&mut ebpf)?;
        Ok(Self {
            ebpf,
            maps,
            attachments: Attachments::default(),
            pin_dir,
            resized: Vec::new(),
        })
    }

    pub fn pin_dir(&self) -> Option<&Path> {
        self.pin_dir.as_deref()
    }

    /// Takes over the links a previous daemon pinned: each one gets this binary's program
    /// swapped in atomically, so interfaces are never left without a program nor given two.
    /// Links that cannot be taken over (interface gone, unknown file) are unpinned. Returns
    /// the adopted (ifindex, name, kind). Then the flow tables replaced by tables of another
    /// size get the flows the previous programs made while this daemon loaded (pass 2 of
    /// [`resize`]), and are freed.
    pub fn adopt_pinned_links(&mut self) -> Vec<(u32, String, String)> {
        let adopted = self.adopt_links();
        for carry in std::mem::take(&mut self.resized) {
            carry.second_pass();
        }
        adopted
    }

    fn adopt_links(&mut self) -> Vec<(u32, String, String)> {
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
                    tracing::warn!(
                        path = %f.path.display(),
                        "not taking over pinned link: {}",
                        chain(&e)
                    );
                    let _ = std::fs::remove_file(&f.path);
                }
            }
        }
        adopted
    }

    fn adopt_one(&mut self, f: &pin::PinnedLinkFile) -> Result<(), AttachError> {
        let fd = FdLink::from(PinnedLink::from_pin(&f.path).map_err(AttachError::Pinned)?);
        let handle = |link: FdLink| Handle::Pinned {
            link,
            path: f.path.clone(),
        };
        match f.kind.as_str() {
            kind @ ("tc" | "egress") => {
                let egress = kind == "egress";
                if egress && !self.attachments.is_attached(f.ifindex, &f.ifname) {
                    return Err(AttachError::NoTcLink);
                }
                let at = if egress {
                    TcAttachType::Egress
                } else {
                    TcAttachType::Ingress
                };
                let link = SchedClassifierLink::try_from(fd).map_err(AttachError::Pinned)?;
                let prog = self.tc_program_at(at)?;
                let id = prog.attach_to_link(link)?;
                let link = FdLink::try_from(prog.take_link(id)?).map_err(AttachError::Pinned)?;
                if !egress {
                    self.attachments.insert(f.ifindex, &f.ifname, handle(link));
                } else if let Some(a) = self.attachments.links.get_mut(&f.ifindex) {
                    a.egress = Some(handle(link));
                }
                Ok(())
            }
            "xdp" => {
                if !self.attachments.is_attached(f.ifindex, &f.ifname) {
                    return Err(AttachError::NoTcLink);
                }
                let link = XdpLink::try_from(fd).map_err(AttachError::Pinned)?;
                let prog = self.xdp_program()?;
                let id = prog.attach_to_link(link)?;
                let link = FdLink::try_from(prog.take_link(id)?).map_err(AttachError::Pinned)?;
                if let Some(a) = self.attachments.links.get_mut(&f.ifindex) {
                    a.xdp = Some(handle(link));
                }
                Ok(())
            }
            other => Err(AttachError::UnknownKind(other.to_owned())),
        }
    }

    /// Pins a freshly made link of an interface under the pin directory.
    fn pin_link(
        &self,
        index: u32,
        name: &str,
        kind: &'static str,
        fd: FdLink,
    ) -> Result<Handle, AttachError> {
        let dir = self.pin_dir.as_deref().ok_or(AttachError::NoPinDir)?;
        pin_link_at(pin::link_path(dir, index, name, kind), kind, fd)
    }

    fn tc_program(&mut self) -> Result<&mut SchedClassifier, LoadError> {
        program_mut(&mut self.ebpf, Program::TcIngress)
    }

    fn tc_program_at(&mut self, at: TcAttachType) -> Result<&mut SchedClassifier, LoadError> {
        match at {
            TcAttachType::Egress => self.egress_program(),
            _ => self.tc_program(),
        }
    }

    fn egress_program(&mut self) -> Result<&mut SchedClassifier, LoadError> {
        program_mut(&mut self.ebpf, Program::TcEgress)
    }

    fn xdp_program(&mut self) -> Result<&mut Xdp, LoadError> {
        program_mut(&mut self.ebpf, Program::Xdp)
    }

    /// Attaches tc ingress and egress to `name` (ifindex `index`) unless already attached there,
    /// and XDP in front of tc ingress as `xdp` says. Returns whether XDP is attached.
    pub fn attach(&mut self, index: u32, name: &str, xdp: XdpPolicy) -> Result<bool, Error> {
        let attach_error = |source| Error::Attach {
            interface: name.to_owned(),
            source: Box::new(source),
        };
        if !self.attachments.is_attached(index, name) {
            // An interface that was replaced keeps its name but not its index (or the reverse):
            // drop the stale record first.
            self.detach(index);
            let handle = self
                .attach_tc(index, name, TcAttachType::Ingress)
                .map_err(attach_error)?;
            self.attachments.insert(index, name, handle);
        }
        if !self.attachments.has_egress(index) {
            let handle = self
                .attach_tc(index, name, TcAttachType::Egress)
                .map_err(attach_error)?;
            if let Some(a) = self.attachments.links.get_mut(&index) {
                a.egress = Some(handle);
            }
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
            _ => match self.attach_xdp(index, name).map_err(attach_error)? {
                Ok(handle) => {
                    if let Some(a) = self.attachments.links.get_mut(&index) {
                        a.xdp = Some(handle);
                    }
                    Ok(true)
                }
                Err(refusal) if xdp == XdpPolicy::Required => Err(Error::XdpUnsupported {
                    interface: name.to_owned(),
                    refusal: Box::new(refusal),
                }),
                Err(refusal) => {
                    tracing::info!(interface = name, "no native XDP ({refusal}): tc only");
                    self.attachments.mark_xdp_unsupported(index);
                    Ok(false)
                }
            },
        }
    }

    /// Attaches the tc program of `at` (ingress or egress) to `name`, pinning the link when
    /// there is a pin directory.
    fn attach_tc(
        &mut self,
        index: u32,
        name: &str,
        at: TcAttachType,
    ) -> Result<Handle, AttachError> {
        let pinning = self.pin_dir.is_some();
        let (kind, held): (_, fn(_) -> Handle) = match at {
            TcAttachType::Egress => ("egress", Handle::TcEgress),
            _ => ("tc", Handle::Tc),
        };
        let prog = self.tc_program_at(at)?;
        let id = attach::attach_tc(prog, name, at)?;
        if !pinning {
            return Ok(held(id));
        }
        match FdLink::try_from(prog.take_link(id)?) {
            Ok(fd) => self.pin_link(index, name, kind, fd),
            Err(e) => {
                // A legacy (netlink) tc attachment is no bpf_link and cannot be pinned;
                // converting consumed it, so attach again, process-local.
                tracing::warn!(
                    interface = name,
                    "tc link cannot be pinned ({e}): a daemon crash will detach it"
                );
                let prog = self.tc_program_at(at)?;
                Ok(held(attach::attach_tc(prog, name, at)?))
            }
        }
    }

    /// Attaches the XDP program to `name` in native mode, pinning the link when there is a pin
    /// directory. The inner error is the driver's refusal.
    fn attach_xdp(
        &mut self,
        index: u32,
        name: &str,
    ) -> Result<Result<Handle, ProgramError>, AttachError> {
        let pinning = self.pin_dir.is_some();
        let prog = self.xdp_program()?;
        let id = match prog.attach(name, XdpMode::Driver) {
            Ok(id) => id,
            Err(refusal) => return Ok(Err(refusal)),
        };
        if !pinning {
            return Ok(Ok(Handle::Xdp(id)));
        }
        let fd = FdLink::try_from(prog.take_link(id)?)
            .map_err(|e| AttachError::NotPinnable("XDP", e))?;
        self.pin_link(index, name, "xdp", fd).map(Ok)
    }

    /// Detaches from interface `index` if attached. An interface that disappeared took its
    /// attachments with it, so errors are only logged.
    pub fn detach(&mut self, index: u32) {
        if let Some(a) = self.attachments.links.remove(&index) {
            if let Some(h) = a.xdp {
                self.release(h);
            }
            if let Some(h) = a.egress {
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
            Handle::TcEgress(id) => {
                if let Ok(prog) = self.egress_program()
                    && let Err(e) = prog.detach(id)
                {
                    tracing::debug!("tc egress detach: {e}");
                }
            }
            Handle::Xdp(id) => {
                if let Ok(prog) = self.xdp_program()
                    && let Err(e) = prog.detach(id)
                {
                    tracing::debug!("xdp detach: {e}");
                }
            }
            Handle::Cgroup(program, id) => {
                if let Ok(prog) = program_mut::<CgroupSockAddr>(&mut self.ebpf, program)
                    && let Err(e) = prog.detach(id)
                {
                    tracing::debug!(%program, "socket hook detach: {e}");
                }
            }
        }
    }

    /// Runs `program` (the tc or the XDP program) once on `frame` with BPF_PROG_TEST_RUN (the
    /// same program that is attached; nothing is sent). `ctx` is an optional context: a
    /// `struct __sk_buff` for tc (e.g. to set the ingress ifindex), a `struct xdp_md` for XDP.
    /// Returns the program's return code and the frame as it left.
    pub fn test_run_program(
        &mut self,
        program: Program,
        frame: &[u8],
        ctx: Option<&[u8]>,
    ) -> Result<(i32, Vec<u8>), Error> {
        let (res, mut out) = self.test_run_repeated(program, frame, ctx, 1)?;
        out.truncate(res.data_size_out as usize);
        Ok((res.return_value as i32, out))
    }

    /// Runs `program` `repeat` times on `frame` in the kernel (BPF_PROG_TEST_RUN's own loop, so
    /// each run sees the frame as the previous one left it): the mean time per run, as the
    /// kernel measured it. For per-packet costs of verdicts that leave the frame unchanged.
    pub fn time_program(
        &mut self,
        program: Program,
        frame: &[u8],
        ctx: Option<&[u8]>,
        repeat: u32,
    ) -> Result<std::time::Duration, Error> {
        Ok(self
            .test_run_repeated(program, frame, ctx, repeat)?
            .0
            .duration)
    }

    /// BPF_PROG_TEST_RUN of `program`, `repeat` times: the kernel's answer and the output
    /// buffer (as long as the kernel may write).
    fn test_run_repeated(
        &mut self,
        program: Program,
        frame: &[u8],
        ctx: Option<&[u8]>,
        repeat: u32,
    ) -> Result<(TestRunResult, Vec<u8>), Error> {
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: ctx,
            repeat,
            ..Default::default()
        };
        let res = match program {
            Program::Xdp => self.xdp_program()?.test_run(opts),
            Program::TcEgress => self.egress_program()?.test_run(opts),
            _ => self.tc_program()?.test_run(opts),
        }
        .map_err(LoadError::TestRun)?;
        Ok((res, out))
    }

    /// Instructions the verifier processed for `program` (its complexity budget); a socket
    /// hook is loaded, not attached, if it was not yet.
    pub fn verified_insns_of(&mut self, program: Program) -> Result<Option<u32>, Error> {
        let info = match program {
            Program::Xdp => self.xdp_program()?.info(),
            Program::TcIngress => self.tc_program()?.info(),
            Program::TcEgress => self.egress_program()?.info(),
            _ => self.socket_hook(program)?.info(),
        }
        .map_err(|e| LoadError::Program(program, e))?;
        Ok(info.verified_instruction_count())
    }

    /// The socket hook `program`, loaded (verified) if it was not yet.
    fn socket_hook(&mut self, program: Program) -> Result<&mut CgroupSockAddr, LoadError> {
        let prog: &mut CgroupSockAddr = program_mut(&mut self.ebpf, program)?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| LoadError::Verifier(program, e))?;
        }
        Ok(prog)
    }

    /// Detaches everywhere.
    pub fn detach_all(&mut self) {
        for index in self.attachments.indexes() {
            self.detach(index);
        }
    }
}

/// Pins a freshly made link at `path`.
fn pin_link_at(path: PathBuf, kind: &'static str, fd: FdLink) -> Result<Handle, AttachError> {
    // A stale file (a link of a previous daemon that was not taken over) would make the pin
    // fail.
    let _ = std::fs::remove_file(&path);
    let pinned = fd.pin(&path).map_err(|source| AttachError::Pin {
        kind,
        path: path.clone(),
        source,
    })?;
    Ok(Handle::Pinned {
        link: FdLink::from(pinned),
        path,
    })
}

/// The `MapData` behind any map variant (for reading its layout). Every kind is listed: a map
/// left out here would be neither compared nor pinned, and would come back empty after a
/// restart.
fn map_data(map: &aya::maps::Map) -> Option<&MapData> {
    use aya::maps::Map;
    Some(match map {
        Map::Array(m) | Map::ArrayOfMaps(m) | Map::BloomFilter(m) | Map::CgroupArray(m) => m,
        Map::CgroupStorage(m) | Map::CgrpStorage(m) | Map::CpuMap(m) | Map::DevMap(m) => m,
        Map::DevMapHash(m) | Map::HashMap(m) | Map::HashOfMaps(m) | Map::InodeStorage(m) => m,
        Map::LpmTrie(m) | Map::LruHashMap(m) | Map::PerCpuArray(m) => m,
        Map::PerCpuCgroupStorage(m) | Map::PerCpuHashMap(m) | Map::PerCpuLruHashMap(m) => m,
        Map::PerfEventArray(m) | Map::ProgramArray(m) | Map::Queue(m) => m,
        Map::ReusePortSockArray(m) | Map::RingBuf(m) | Map::SockHash(m) | Map::SockMap(m) => m,
        Map::SkStorage(m) | Map::Stack(m) | Map::StackTraceMap(m) | Map::XskMap(m) => m,
        Map::Unsupported(_) => return None,
    })
}

/// The program `program` of `ebpf`, as its type.
fn program_mut<'a, T>(ebpf: &'a mut Ebpf, program: Program) -> Result<&'a mut T, LoadError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(program.name())
        .ok_or(LoadError::MissingProgram(program))?
        .try_into()
        .map_err(|e| LoadError::Program(program, e))
}

fn load_error(e: aya::EbpfError) -> Error {
    LoadError::Object(e).into()
}
