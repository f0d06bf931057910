//! The reference device: the state a vhost-user-net back-end keeps for QEMU
//! and the race, behind [`BackendReqHandler`]. Negotiated features, the
//! memory table mapped through vm-memory's [`GuestMemoryMmap`] (or, for the
//! in-memory transport, which carries no descriptors here, recorded
//! unmapped), the dirty log's mapping, the vrings, an IOTLB of IOVA ranges
//! with permissions and the translation IOVA → front-end address → guest
//! physical address, postcopy, and the scenario's misses.
//!
//! Misses: once POSTCOPY_LISTEN has been served (or, with
//! [`ReferenceDevice::set_misses_from_device_start`], once an IOTLB_MSG has
//! been applied), the device hands the dispatch loop the next
//! [`Scenario::backend_miss`] whose IOVA the IOTLB cannot translate, one
//! before each read of the main socket, until the configured number is used
//! up.
//!
//! Leaves out: virtqueue processing (no descriptor is ever read), a real
//! userfaultfd unless asked for (POSTCOPY_ADVISE otherwise answers with a
//! memfd standing in for it, so that the reference needs no privileges),
//! registering memory with the userfaultfd, and dirty logging (the log is
//! mapped, never written).
//!
//! [`Scenario::backend_miss`]: crate::scenario::Scenario::backend_miss

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use super::handler::BackendReqHandler;
use super::{postcopy, BackendConfig, BackendError};
use super::{BACKEND_FEATURES, BACKEND_PROTOCOL_FEATURES, DEFAULT_MAX_QUEUE_PAIRS};
use crate::scenario::Scenario;
use crate::transport::TransportError;
use crate::wire::{
    IotlbMsg, IotlbPerm, IotlbType, MemoryRegion, ProtocolFeatures, Request, VringAddr,
};

/// One IOTLB entry: an IOVA range and where it points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IotlbEntry {
    /// First IOVA.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// Front-end address of `iova`.
    pub uaddr: u64,
    /// Allowed access.
    pub perm: IotlbPerm,
}

/// The back-end's IOTLB.
#[derive(Debug, Clone, Default)]
pub struct Iotlb {
    entries: Vec<IotlbEntry>,
}

impl Iotlb {
    /// Applies an update (replacing any entry at the same IOVA) or an
    /// invalidation; other types are errors.
    pub fn apply(&mut self, m: &IotlbMsg) -> Result<(), BackendError> {
        match m.kind {
            IotlbType::Update => {
                self.entries.retain(|e| e.iova != m.iova);
                self.entries.push(IotlbEntry {
                    iova: m.iova,
                    size: m.size,
                    uaddr: m.uaddr,
                    perm: m.perm,
                });
                Ok(())
            }
            IotlbType::Invalidate => {
                let end = m.iova.saturating_add(m.size);
                self.entries.retain(|e| e.iova + e.size <= m.iova || e.iova >= end);
                Ok(())
            }
            _ => Err(BackendError::Protocol("IOTLB_MSG of a type the front-end does not send")),
        }
    }

    /// The front-end address of `[iova, iova + len)` if one entry covers it
    /// with `perm`'s access.
    pub fn translate(&self, iova: u64, len: u64, perm: IotlbPerm) -> Option<u64> {
        let allows = |have: IotlbPerm| (have as u8) & (perm as u8) == perm as u8;
        self.entries
            .iter()
            .find(|e| {
                e.iova <= iova && iova.saturating_add(len) <= e.iova + e.size && allows(e.perm)
            })
            .map(|e| e.uaddr + (iova - e.iova))
    }
}

/// One virtqueue as the front-end has set it up.
#[derive(Debug, Default)]
pub struct Vring {
    /// SET_VRING_NUM.
    pub num: u32,
    /// SET_VRING_BASE (what GET_VRING_BASE returns).
    pub base: u32,
    /// SET_VRING_ADDR.
    pub addr: Option<VringAddr>,
    /// SET_VRING_KICK's eventfd (`None` also when the no-fd flag was set).
    pub kick: Option<OwnedFd>,
    /// SET_VRING_CALL's eventfd.
    pub call: Option<OwnedFd>,
    /// SET_VRING_ERR's eventfd.
    pub err: Option<OwnedFd>,
    /// SET_VRING_ENABLE.
    pub enabled: bool,
    /// Started by SET_VRING_KICK, stopped by GET_VRING_BASE.
    pub started: bool,
}

/// The reference device of one connection.
pub struct ReferenceDevice {
    map_memory: bool,
    misses: u8,
    max_queue_pairs: u64,
    features: u64,
    protocol_features: ProtocolFeatures,
    owner: bool,
    regions: Vec<MemoryRegion>,
    memory: Option<GuestMemoryMmap>,
    vrings: BTreeMap<u32, Vring>,
    log: Option<MmapRegion>,
    iotlb: Iotlb,
    listening: bool,
    misses_sent: u8,
    real_userfaultfd: bool,
    misses_from_device_start: bool,
    misses_armed: bool,
}

impl std::fmt::Debug for ReferenceDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferenceDevice")
            .field("features", &self.features)
            .field("protocol_features", &self.protocol_features)
            .field("regions", &self.regions.len())
            .field("listening", &self.listening)
            .finish_non_exhaustive()
    }
}

impl ReferenceDevice {
    /// A device before the handshake, with `cfg`'s memory mapping and misses.
    pub fn new(cfg: &BackendConfig) -> Self {
        ReferenceDevice {
            map_memory: cfg.map_memory,
            misses: cfg.misses,
            max_queue_pairs: DEFAULT_MAX_QUEUE_PAIRS,
            features: 0,
            protocol_features: ProtocolFeatures::empty(),
            owner: false,
            regions: Vec::new(),
            memory: None,
            vrings: BTreeMap::new(),
            log: None,
            iotlb: Iotlb::default(),
            listening: false,
            misses_sent: 0,
            real_userfaultfd: false,
            misses_from_device_start: false,
            misses_armed: false,
        }
    }

    /// Hands out the configured misses once an IOTLB_MSG (device start's
    /// first update) has been applied, instead of after POSTCOPY_LISTEN: the
    /// model's `--miss-need-reply` scenario on a QEMU that is not migrating.
    pub fn set_misses_from_device_start(&mut self, on: bool) {
        self.misses_from_device_start = on;
    }

    /// Answers POSTCOPY_ADVISE with a real userfaultfd (QEMU's binary needs
    /// one) instead of a memfd standing in for it (which needs no privilege).
    pub fn set_real_userfaultfd(&mut self, on: bool) {
        self.real_userfaultfd = on;
    }

    /// The queue pairs GET_QUEUE_NUM announces.
    pub fn set_max_queue_pairs(&mut self, n: u64) {
        self.max_queue_pairs = n;
    }

    /// Puts the device in the state QEMU's handshake and POSTCOPY_ADVISE /
    /// POSTCOPY_LISTEN leave it in (for runners that skip them).
    pub fn assume_negotiated(&mut self) {
        self.features = BACKEND_FEATURES;
        self.protocol_features = BACKEND_PROTOCOL_FEATURES;
        self.owner = true;
        self.listening = true;
    }

    /// The negotiated virtio features.
    pub fn acked_features(&self) -> u64 {
        self.features
    }

    /// The IOTLB.
    pub fn iotlb(&self) -> &Iotlb {
        &self.iotlb
    }

    /// The virtqueues set up so far, by index.
    pub fn vrings(&self) -> &BTreeMap<u32, Vring> {
        &self.vrings
    }

    /// Whether guest memory is mapped (SET_MEM_TABLE with descriptors).
    pub fn memory_mapped(&self) -> bool {
        self.memory.is_some()
    }

    /// Reads guest memory at an IOVA (through [`BackendReqHandler::translate`]).
    pub fn read_iova(&self, iova: u64, buf: &mut [u8]) -> Option<()> {
        use vm_memory::Bytes;
        let gpa = self.translate(iova, buf.len() as u64, IotlbPerm::Ro)?;
        self.memory.as_ref()?.read_slice(buf, gpa).ok()
    }

    /// The memory table with each region's `userspace_addr` replaced by
    /// where this device mapped it (QEMU uses them to translate faults).
    fn mapped_table(&self, memory: &GuestMemoryMmap) -> Result<Vec<MemoryRegion>, BackendError> {
        let mut mapped = self.regions.clone();
        for r in &mut mapped {
            let region = memory
                .find_region(GuestAddress(r.guest_phys_addr))
                .ok_or(BackendError::Protocol("a region vanished from the mapping"))?;
            r.userspace_addr = region.as_ptr() as u64;
        }
        Ok(mapped)
    }

    fn vring(&mut self, index: u32) -> &mut Vring {
        self.vrings.entry(index).or_default()
    }
}

impl BackendReqHandler for ReferenceDevice {
    fn get_features(&mut self) -> u64 {
        BACKEND_FEATURES
    }

    fn set_features(&mut self, features: u64) -> Result<(), BackendError> {
        self.features = features & BACKEND_FEATURES;
        Ok(())
    }

    fn get_protocol_features(&mut self) -> ProtocolFeatures {
        BACKEND_PROTOCOL_FEATURES
    }

    fn set_protocol_features(&mut self, features: ProtocolFeatures) -> Result<(), BackendError> {
        self.protocol_features = features & BACKEND_PROTOCOL_FEATURES;
        Ok(())
    }

    fn acked_protocol_features(&self) -> ProtocolFeatures {
        self.protocol_features
    }

    fn get_queue_num(&mut self) -> u64 {
        self.max_queue_pairs
    }

    fn set_owner(&mut self) -> Result<(), BackendError> {
        self.owner = true;
        Ok(())
    }

    /// Maps each region from its descriptor (or, without mapping, takes
    /// none); while postcopy listens, answers with the mapping's addresses,
    /// as the specification asks.
    fn set_mem_table(
        &mut self,
        regions: Vec<MemoryRegion>,
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Vec<MemoryRegion>>, BackendError> {
        let takes = if self.map_memory { regions.len() } else { 0 };
        if fds.len() != takes {
            return Err(BackendError::UnexpectedFds {
                request: Request::SetMemTable,
                count: fds.len(),
                takes,
            });
        }
        if self.map_memory {
            self.memory = Some(map_regions(&regions, fds)?);
        }
        self.regions = regions;
        match &self.memory {
            Some(memory) if self.listening => self.mapped_table(memory).map(Some),
            _ => Ok(None),
        }
    }

    fn set_log_base(
        &mut self,
        size: u64,
        offset: u64,
        fd: Option<OwnedFd>,
    ) -> Result<(), BackendError> {
        if let Some(fd) = fd {
            let log = postcopy::map_log(fd, size, offset)
                .map_err(|e| BackendError::Memory(format!("dirty log: {e}")))?;
            self.log = Some(log);
        }
        Ok(())
    }

    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<(), BackendError> {
        self.vring(index).num = num;
        Ok(())
    }

    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<(), BackendError> {
        self.vring(index).base = base;
        Ok(())
    }

    fn set_vring_addr(&mut self, addr: VringAddr) -> Result<(), BackendError> {
        self.vring(addr.index).addr = Some(addr);
        Ok(())
    }

    fn get_vring_base(&mut self, index: u32) -> Result<u32, BackendError> {
        let ring = self.vring(index);
        ring.started = false;
        ring.kick = None;
        Ok(ring.base)
    }

    fn set_vring_kick(&mut self, index: u32, fd: Option<OwnedFd>) -> Result<(), BackendError> {
        let ring = self.vring(index);
        ring.kick = fd;
        ring.started = true;
        Ok(())
    }

    fn set_vring_call(&mut self, index: u32, fd: Option<OwnedFd>) -> Result<(), BackendError> {
        self.vring(index).call = fd;
        Ok(())
    }

    fn set_vring_err(&mut self, index: u32, fd: Option<OwnedFd>) -> Result<(), BackendError> {
        self.vring(index).err = fd;
        Ok(())
    }

    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<(), BackendError> {
        self.vring(index).enabled = enable;
        Ok(())
    }

    fn iotlb_msg(&mut self, msg: &IotlbMsg) -> bool {
        let applied = self.iotlb.apply(msg).is_ok();
        self.misses_armed |= self.misses_from_device_start;
        applied
    }

    /// Through the IOTLB and the memory table (checked against the
    /// vm-memory mapping when memory is mapped).
    fn translate(&self, iova: u64, len: u64, perm: IotlbPerm) -> Option<GuestAddress> {
        let uaddr = self.iotlb.translate(iova, len, perm)?;
        let r = self.regions.iter().find(|r| {
            r.userspace_addr <= uaddr
                && uaddr.saturating_add(len) <= r.userspace_addr + r.memory_size
        })?;
        let gpa = GuestAddress(r.guest_phys_addr + (uaddr - r.userspace_addr));
        match &self.memory {
            Some(m) if !m.address_in_range(gpa) => None,
            _ => Some(gpa),
        }
    }

    /// The scenario's misses in order, skipping those the IOTLB already
    /// translates.
    fn next_miss(&mut self) -> Option<IotlbMsg> {
        while (self.listening || self.misses_armed) && self.misses_sent < self.misses {
            let miss = Scenario::backend_miss(self.misses_sent);
            self.misses_sent += 1;
            if self.iotlb.translate(miss.iova, 1, miss.perm).is_none() {
                return Some(miss);
            }
        }
        None
    }

    fn postcopy_advise(&mut self) -> Result<OwnedFd, BackendError> {
        if self.real_userfaultfd {
            postcopy::open_userfaultfd()
                .map_err(|e| BackendError::Memory(format!("userfaultfd: {e}")))
        } else {
            // Stand-in for the userfaultfd (see the module doc).
            nix::sys::memfd::memfd_create(c"vhost-user-ufd", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(|e| BackendError::Transport(TransportError::from(std::io::Error::from(e))))
        }
    }

    fn postcopy_listen(&mut self) -> Result<(), BackendError> {
        self.listening = true;
        Ok(())
    }

    /// Nothing to undo: no memory was registered with the userfaultfd.
    fn postcopy_end(&mut self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// Maps each region from its descriptor with vm-memory.
fn map_regions(
    regions: &[MemoryRegion],
    fds: Vec<OwnedFd>,
) -> Result<GuestMemoryMmap, BackendError> {
    let mut mapped = Vec::with_capacity(regions.len());
    for (r, fd) in regions.iter().zip(fds) {
        let size =
            usize::try_from(r.memory_size).map_err(|e| BackendError::Memory(e.to_string()))?;
        let file = File::from(fd);
        let m = MmapRegion::from_file(FileOffset::new(file, r.mmap_offset), size)
            .map_err(|e| BackendError::Memory(e.to_string()))?;
        let g = GuestRegionMmap::new(m, GuestAddress(r.guest_phys_addr))
            .ok_or(BackendError::Memory("region overflows the address space".into()))?;
        mapped.push(g);
    }
    mapped.sort_by_key(vm_memory::GuestMemoryRegion::start_addr);
    GuestMemoryMmap::from_regions(mapped).map_err(|e| BackendError::Memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{guest_ram_region, GUEST_RAM_UADDR};
    use std::os::unix::fs::FileExt;

    /// Guest RAM as the front-end shares it (the harness's memfd).
    fn memfd() -> File {
        File::from(crate::harness::guest_ram_memfd().unwrap())
    }

    #[test]
    fn iotlb_updates_translate_into_the_mapped_guest_memory() {
        let ram = memfd();
        let region = guest_ram_region();
        let mut d = ReferenceDevice::new(&BackendConfig::default());
        let answer = d.set_mem_table(vec![region], vec![ram.try_clone().unwrap().into()]).unwrap();
        assert!(answer.is_none() && d.memory_mapped(), "mapped, acked (postcopy not listening)");
        let u = Scenario::iotlb_update(3);
        assert_eq!(d.translate(u.iova, 8, IotlbPerm::Ro), None, "a miss before the update");
        assert!(d.iotlb_msg(&u));
        // The front-end writes at the update's uaddr; the back-end reads it
        // through IOVA -> uaddr -> guest physical -> its own mapping.
        ram.write_all_at(b"vhost!", u.uaddr - GUEST_RAM_UADDR).unwrap();
        let mut got = [0u8; 6];
        d.read_iova(u.iova, &mut got).unwrap();
        assert_eq!(&got, b"vhost!");
        assert_eq!(d.translate(u.iova + u.size - 4, 8, IotlbPerm::Ro), None, "past the entry");
        assert!(d.iotlb_msg(&IotlbMsg { kind: IotlbType::Invalidate, ..u }));
        assert_eq!(d.translate(u.iova, 8, IotlbPerm::Ro), None, "invalidated");
        assert!(d.iotlb_msg(&IotlbMsg { perm: IotlbPerm::Ro, ..u }));
        assert_eq!(d.translate(u.iova, 8, IotlbPerm::Wo), None, "read-only entry");
        assert!(!d.iotlb_msg(&IotlbMsg { kind: IotlbType::Miss, ..u }), "a miss is refused");
    }

    #[test]
    fn misses_skip_what_the_iotlb_translates_and_wait_for_postcopy_listen() {
        let cfg = BackendConfig { map_memory: false, misses: 3, ..BackendConfig::default() };
        let mut d = ReferenceDevice::new(&cfg);
        assert_eq!(d.next_miss(), None, "none before POSTCOPY_LISTEN");
        d.postcopy_listen().unwrap();
        let m1 = Scenario::backend_miss(1);
        assert!(d.iotlb_msg(&IotlbMsg { kind: IotlbType::Update, size: 0x1000, ..m1 }));
        assert_eq!(d.next_miss(), Some(Scenario::backend_miss(0)));
        assert_eq!(d.next_miss(), Some(Scenario::backend_miss(2)), "miss 1 is translated");
        assert_eq!(d.next_miss(), None, "all three used up");
    }
}
