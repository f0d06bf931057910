//! The variants (lock placements) and the scenario (threads and workload),
//! once, for the model, the reference run, the proofs, the checker and explain.
//!
//! Models: the five lock placements of the facts page (§3) and QEMU 9.2's
//! fail-start patch as an orthogonal switch; the front-end threads that share
//! the socket and the size of their work.
//!
//! Leaves out: the postcopy fault thread (no socket traffic), rollback
//! requests after a failed device start, and any request not on the race's
//! path (the handshake happens before the threads start).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where the locks sit: one per proposed or shipped fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum LockPolicy {
    /// QEMU up to 9.1: nothing serialises request/reply pairs.
    Qemu91,
    /// The July 2024 patch: one mutex per connection held from before the
    /// write until the reply is read, on every request path.
    Mutex,
    /// The listen thread takes the BQL around the whole postcopy cleanup.
    BqlListen,
    /// The BQL is taken inside `vhost_user_postcopy_end` only.
    BqlPostcopyEnd,
    /// QEMU 10.2: POSTCOPY_END is sent from a main-loop bottom half.
    Qemu102,
    /// This project's design (not in QEMU): no lock across a round trip.
    /// A request that wants a reply joins a per-connection queue in the same
    /// critical section as its write, so the queue is in wire order; a
    /// waiter with no reader ahead of it reads the next whole reply and hands
    /// it to the head of the queue; a BQL holder that waits for a reply lends
    /// the BQL to the back-end channel handler; a back-end miss is answered
    /// with an IOTLB update *without* NEED_REPLY and acknowledged on the
    /// back-end channel at once, so the handler never waits on the main
    /// socket. Threads and BQL placement otherwise as QEMU 9.1.
    ReplyQueue,
}

impl LockPolicy {
    /// Every policy, in the order of the matrix.
    pub const ALL: [LockPolicy; 6] = [
        LockPolicy::Qemu91,
        LockPolicy::Mutex,
        LockPolicy::BqlListen,
        LockPolicy::BqlPostcopyEnd,
        LockPolicy::Qemu102,
        LockPolicy::ReplyQueue,
    ];

    /// The name used on the command line and in the matrix.
    pub fn name(self) -> &'static str {
        match self {
            LockPolicy::Qemu91 => "qemu-9.1",
            LockPolicy::Mutex => "mutex",
            LockPolicy::BqlListen => "bql-listen",
            LockPolicy::BqlPostcopyEnd => "bql-postcopy-end",
            LockPolicy::Qemu102 => "qemu-10.2",
            LockPolicy::ReplyQueue => "reply-queue",
        }
    }

    /// Whether every request path holds the request/reply mutex from before
    /// the write until its reply is read.
    pub fn request_reply_mutex(self) -> bool {
        self == LockPolicy::Mutex
    }

    /// Whether the listen thread holds the BQL across the whole postcopy
    /// cleanup (fault-thread join and POSTCOPY_END).
    pub fn listen_cleanup_under_bql(self) -> bool {
        self == LockPolicy::BqlListen
    }

    /// Whether `vhost_user_postcopy_end` itself takes the BQL around its
    /// request and reply.
    pub fn postcopy_end_under_bql(self) -> bool {
        self == LockPolicy::BqlPostcopyEnd
    }

    /// Whether POSTCOPY_END runs in a main-loop bottom half (the main-loop
    /// thread, under the BQL) instead of the listen thread.
    pub fn postcopy_end_in_main_loop(self) -> bool {
        self == LockPolicy::Qemu102
    }

    /// Whether replies are routed through the per-connection reply queue
    /// (see [`LockPolicy::ReplyQueue`]): requests are written and enqueued
    /// atomically, replies are read whole by one waiter at a time and handed
    /// to the queue's head, the BQL is lent while its holder waits, and
    /// back-end misses are answered without NEED_REPLY.
    pub fn reply_queue(self) -> bool {
        self == LockPolicy::ReplyQueue
    }

    /// Whether QEMU shipped or was sent this placement (a binary can be built
    /// for it); [`LockPolicy::ReplyQueue`] exists only in this project.
    pub fn in_qemu(self) -> bool {
        self != LockPolicy::ReplyQueue
    }
}

/// A lock policy with or without QEMU 9.2's fail-start patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Variant {
    /// Where the locks sit.
    pub policy: LockPolicy,
    /// Device start fails (and stops sending updates) on the first failed
    /// IOTLB update, as since QEMU 9.2 (commit 571bdc97b8).
    pub fail_start: bool,
}

impl Variant {
    /// Every variant: each policy without, then with fail-start.
    pub fn all() -> Vec<Variant> {
        LockPolicy::ALL
            .iter()
            .flat_map(|&policy| {
                [false, true].into_iter().map(move |fail_start| Variant { policy, fail_start })
            })
            .collect()
    }

    /// A policy without fail-start.
    pub const fn new(policy: LockPolicy) -> Self {
        Variant { policy, fail_start: false }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.policy.name())?;
        if self.fail_start {
            f.write_str("+fail-start")?;
        }
        Ok(())
    }
}

/// A variant name that is not one of [`Variant::all`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown variant '{0}' (known: {known})", known = known_names())]
pub struct UnknownVariant(pub String);

fn known_names() -> String {
    Variant::all().iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

impl FromStr for Variant {
    type Err = UnknownVariant;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (base, fail_start) = match s.strip_suffix("+fail-start") {
            Some(base) => (base, true),
            None => (s, false),
        };
        LockPolicy::ALL
            .iter()
            .find(|p| p.name() == base)
            .map(|&policy| Variant { policy, fail_start })
            .ok_or_else(|| UnknownVariant(s.to_string()))
    }
}

/// The front-end threads that use the socket (the back-end is separate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ThreadRole {
    /// `vhost_dev_start`: one IOTLB update per virtqueue.
    DeviceStart,
    /// `postcopy_ram_listen_thread`: POSTCOPY_END at the end of postcopy.
    PostcopyListen,
    /// The main loop: answers back-end IOTLB misses (and, in QEMU 10.2, runs
    /// the postcopy cleanup bottom half).
    MainLoop,
}

impl ThreadRole {
    /// Every role, in column order.
    pub const ALL: [ThreadRole; 3] =
        [ThreadRole::DeviceStart, ThreadRole::PostcopyListen, ThreadRole::MainLoop];

    /// The thread id its log lines carry (the facts page's example: the
    /// main thread is 4100, the listen thread 4133). Device start runs as a
    /// main-loop bottom half, so it shares the main thread's id.
    pub fn tid(self) -> u32 {
        match self {
            ThreadRole::DeviceStart | ThreadRole::MainLoop => crate::qemu_log::QEMU_PID,
            ThreadRole::PostcopyListen => 4133,
        }
    }

    /// Column title.
    pub fn name(self) -> &'static str {
        match self {
            ThreadRole::DeviceStart => "device start",
            ThreadRole::PostcopyListen => "postcopy listen",
            ThreadRole::MainLoop => "main loop",
        }
    }
}

/// Largest virtqueue count the tools accept (beyond it exhaustive checking
/// no longer fits in memory on a 24 GiB machine).
pub const MAX_VIRTQUEUES: u8 = 16;
/// Largest number of back-end misses the tools accept.
pub const MAX_BACKEND_MISSES: u8 = 8;

/// The threads and their work: what the model explores and the reference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scenario {
    /// Whether the device-start thread runs.
    pub device_start: bool,
    /// IOTLB updates device start sends, one per virtqueue.
    pub virtqueues: u8,
    /// Whether device start holds the BQL (it does on QEMU's usual paths).
    pub device_start_holds_bql: bool,
    /// Whether postcopy ends (POSTCOPY_END with NEED_REPLY) during the run.
    pub postcopy_end: bool,
    /// BACKEND_IOTLB_MSG misses the back-end sends; the main loop answers each.
    pub backend_misses: u8,
    /// Whether misses carry NEED_REPLY (the back-end then waits for the answer
    /// on the back-end channel before it reads the main socket again).
    pub miss_need_reply: bool,
    /// Whether a socket read may return fewer bytes than asked, so that
    /// `read_all` loops (off: each read returns all it asked for at once).
    /// A read may then end at any 4-byte step of what it asks for: a peer
    /// or transport that delivers a message in pieces.
    pub short_reads: bool,
    /// Whether a socket read returns what is queued, up to what it asks,
    /// so that `read_all` loops: Linux's Unix stream sockets, whose
    /// `unix_stream_read_generic` copies queued bytes, one reader at a time,
    /// until the request is met or the queue is empty, with a back-end that
    /// writes each message at once (one `sendmsg`: DPDK, rust-vmm's vhost,
    /// the reference). A read ends early only where the queued bytes end.
    #[serde(default)]
    pub queued_reads: bool,
    /// Whether the back-end writes a reply's header and its payload in two
    /// writes, as libvhost-user's `vu_message_write` does (`sendmsg` of the
    /// header, then `write` of the payload), so that a read may find the
    /// header alone (off: one write per reply, as DPDK and rust-vmm's vhost).
    #[serde(default)]
    pub split_replies: bool,
    /// Whether the device is stopped at the end (QEMU quitting): once every
    /// other thread is done, the main thread sends GET_VRING_BASE per
    /// virtqueue under the BQL and reads each reply.
    #[serde(default)]
    pub device_stop: bool,
}

impl Default for Scenario {
    /// The default scenario: 2 IOTLB updates, postcopy end, 1 back-end miss
    /// without NEED_REPLY (as DPDK sends it).
    fn default() -> Self {
        Scenario {
            device_start: true,
            virtqueues: 2,
            device_start_holds_bql: true,
            postcopy_end: true,
            backend_misses: 1,
            miss_need_reply: false,
            short_reads: false,
            queued_reads: false,
            split_replies: false,
            device_stop: false,
        }
    }
}

/// A scenario the tools refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScenarioError {
    /// Device start with no virtqueue sends nothing.
    #[error("device start needs at least one virtqueue")]
    ZeroVirtqueues,
    /// Too many virtqueues to check exhaustively.
    #[error("{0} virtqueues is too large (at most {MAX_VIRTQUEUES})")]
    TooManyVirtqueues(u8),
    /// Too many back-end misses to check exhaustively.
    #[error("{0} back-end misses is too large (at most {MAX_BACKEND_MISSES})")]
    TooManyMisses(u8),
    /// No thread uses the socket.
    #[error("the scenario has no front-end thread using the socket")]
    NoThreads,
    /// Two models of a socket read at once.
    #[error("short reads and queued reads are two models of a read: take one")]
    TwoReadModels,
}

/// The command line's spelling of each scenario knob (`vhost-race
/// --help`), for every output that names a scenario by its flags; the
/// checker's own tests hold its argument parser to these.
pub mod flag {
    /// IOTLB updates device start sends.
    pub const VIRTQUEUES: &str = "--virtqueues";
    /// No device-start thread.
    pub const NO_DEVICE_START: &str = "--no-device-start";
    /// Device start without the BQL.
    pub const WITHOUT_BQL: &str = "--device-start-without-bql";
    /// No postcopy end.
    pub const NO_POSTCOPY_END: &str = "--no-postcopy-end";
    /// Back-end misses.
    pub const MISSES: &str = "--misses";
    /// Misses with NEED_REPLY.
    pub const MISS_NEED_REPLY: &str = "--miss-need-reply";
    /// Reads that may end at any 4-byte step.
    pub const SHORT_READS: &str = "--short-reads";
    /// Reads of what is queued.
    pub const QUEUED_READS: &str = "--queued-reads";
    /// Replies written as header, then payload.
    pub const SPLIT_REPLIES: &str = "--split-replies";
    /// Device stop at quit.
    pub const DEVICE_STOP: &str = "--device-stop";
    /// Every one, in `--help` order.
    pub const ALL: [&str; 10] = [
        VIRTQUEUES,
        NO_DEVICE_START,
        WITHOUT_BQL,
        NO_POSTCOPY_END,
        MISSES,
        MISS_NEED_REPLY,
        SHORT_READS,
        QUEUED_READS,
        SPLIT_REPLIES,
        DEVICE_STOP,
    ];
}

impl Scenario {
    /// The flags that make this scenario from the default one, as typed on
    /// the command line, in `--help` order (none for the default).
    pub fn flags(&self) -> Vec<String> {
        let d = Scenario::default();
        let mut f = Vec::new();
        if self.virtqueues != d.virtqueues {
            f.push(format!("{} {}", flag::VIRTQUEUES, self.virtqueues));
        }
        let switches = [
            (!self.device_start, flag::NO_DEVICE_START),
            (!self.device_start_holds_bql, flag::WITHOUT_BQL),
            (!self.postcopy_end, flag::NO_POSTCOPY_END),
        ];
        f.extend(switches.iter().filter(|(on, _)| *on).map(|(_, name)| name.to_string()));
        if self.backend_misses != d.backend_misses {
            f.push(format!("{} {}", flag::MISSES, self.backend_misses));
        }
        let switches = [
            (self.miss_need_reply, flag::MISS_NEED_REPLY),
            (self.short_reads, flag::SHORT_READS),
            (self.queued_reads, flag::QUEUED_READS),
            (self.split_replies, flag::SPLIT_REPLIES),
            (self.device_stop, flag::DEVICE_STOP),
        ];
        f.extend(switches.iter().filter(|(on, _)| *on).map(|(_, name)| name.to_string()));
        f
    }

    /// The scenario in words, as every output names it: "device start: 2
    /// IOTLB updates under the BQL, postcopy end, 1 back-end miss without
    /// NEED_REPLY".
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.device_start {
            parts.push(format!(
                "device start: {} IOTLB update{} {}",
                self.virtqueues,
                if self.virtqueues == 1 { "" } else { "s" },
                if self.device_start_holds_bql { "under the BQL" } else { "without the BQL" }
            ));
        }
        if self.postcopy_end {
            parts.push("postcopy end".to_string());
        }
        if self.backend_misses > 0 {
            parts.push(format!(
                "{} back-end miss{} {}",
                self.backend_misses,
                if self.backend_misses == 1 { "" } else { "es" },
                if self.miss_need_reply { "with NEED_REPLY" } else { "without NEED_REPLY" }
            ));
        }
        if self.short_reads {
            parts.push("short reads".to_string());
        }
        if self.queued_reads {
            parts.push("reads return what is queued".to_string());
        }
        if self.split_replies {
            parts.push("replies written as header, then payload".to_string());
        }
        if self.device_stop && self.device_start {
            parts.push("device stop at quit".to_string());
        }
        parts.join(", ")
    }

    /// Checks the bounds every tool shares.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        if self.device_start && self.virtqueues == 0 {
            return Err(ScenarioError::ZeroVirtqueues);
        }
        if self.virtqueues > MAX_VIRTQUEUES {
            return Err(ScenarioError::TooManyVirtqueues(self.virtqueues));
        }
        if self.backend_misses > MAX_BACKEND_MISSES {
            return Err(ScenarioError::TooManyMisses(self.backend_misses));
        }
        if !self.device_start && !self.postcopy_end && self.backend_misses == 0 {
            return Err(ScenarioError::NoThreads);
        }
        if self.short_reads && self.queued_reads {
            return Err(ScenarioError::TwoReadModels);
        }
        Ok(())
    }

    /// Whether a read may return fewer bytes than it asks for (short or
    /// queued reads), so that bytes arriving change what a read takes.
    pub fn partial_reads(&self) -> bool {
        self.short_reads || self.queued_reads
    }

    /// The roles that have work in this scenario under `policy` (in QEMU 10.2
    /// the main loop also runs the postcopy bottom half).
    pub fn threads(&self, policy: LockPolicy) -> Vec<ThreadRole> {
        ThreadRole::ALL
            .into_iter()
            .filter(|r| match r {
                ThreadRole::DeviceStart => self.device_start,
                ThreadRole::PostcopyListen => self.postcopy_end,
                ThreadRole::MainLoop => {
                    self.backend_misses > 0
                        || (self.postcopy_end && policy.postcopy_end_in_main_loop())
                }
            })
            .collect()
    }

    /// The IOTLB update device start sends for virtqueue `vq` (its used ring):
    /// distinct per virtqueue so that every request is recognisable.
    pub fn iotlb_update(vq: u8) -> crate::wire::IotlbMsg {
        let vq = u64::from(vq);
        crate::wire::IotlbMsg {
            iova: 0x1_0000 + 0x1000 * vq,
            size: 0x1000,
            uaddr: 0x7f00_0000_0000 + 0x1000 * vq,
            perm: crate::wire::IotlbPerm::Rw,
            kind: crate::wire::IotlbType::Update,
        }
    }

    /// The miss the back-end sends as its `n`th, and the update that answers it.
    pub fn backend_miss(n: u8) -> crate::wire::IotlbMsg {
        let n = u64::from(n);
        crate::wire::IotlbMsg {
            iova: 0x8_0000 + 0x1000 * n,
            size: 0,
            uaddr: 0,
            perm: crate::wire::IotlbPerm::Rw,
            kind: crate::wire::IotlbType::Miss,
        }
    }

    /// The update the main loop sends in answer to miss `n`.
    pub fn miss_answer(n: u8) -> crate::wire::IotlbMsg {
        let miss = Self::backend_miss(n);
        crate::wire::IotlbMsg {
            size: 0x1000,
            uaddr: 0x7f00_0008_0000 + 0x1000 * u64::from(n),
            kind: crate::wire::IotlbType::Update,
            ..miss
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names_round_trip() {
        let all = Variant::all();
        assert_eq!(all.len(), 12);
        for v in all {
            assert_eq!(v.to_string().parse::<Variant>(), Ok(v));
        }
        assert_eq!(
            "mutex+fail-start".parse::<Variant>(),
            Ok(Variant { policy: LockPolicy::Mutex, fail_start: true })
        );
        let err = "qemu-9.0".parse::<Variant>().unwrap_err();
        assert!(err.to_string().starts_with("unknown variant 'qemu-9.0' (known: qemu-9.1,"));
    }

    #[test]
    fn default_scenario_is_valid_and_bounds_hold() {
        assert_eq!(Scenario::default().validate(), Ok(()));
        let zero = Scenario { virtqueues: 0, ..Scenario::default() };
        assert_eq!(zero.validate(), Err(ScenarioError::ZeroVirtqueues));
        let big = Scenario { virtqueues: 17, ..Scenario::default() };
        assert_eq!(big.validate(), Err(ScenarioError::TooManyVirtqueues(17)));
        let none = Scenario {
            device_start: false,
            postcopy_end: false,
            backend_misses: 0,
            ..Scenario::default()
        };
        assert_eq!(none.validate(), Err(ScenarioError::NoThreads));
    }

    #[test]
    fn qemu_10_2_moves_postcopy_end_to_the_main_loop() {
        let s = Scenario { backend_misses: 0, ..Scenario::default() };
        assert_eq!(
            s.threads(LockPolicy::Qemu102),
            vec![ThreadRole::DeviceStart, ThreadRole::PostcopyListen, ThreadRole::MainLoop]
        );
        assert_eq!(
            s.threads(LockPolicy::Qemu91),
            vec![ThreadRole::DeviceStart, ThreadRole::PostcopyListen]
        );
    }
}
