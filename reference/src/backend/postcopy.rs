//! What a back-end must give QEMU for a real postcopy migration: a
//! userfaultfd in answer to POSTCOPY_ADVISE, and the dirty log's shared
//! memory kept mapped (SET_LOG_BASE with LOG_SHMFD); and the fault injection
//! that makes QEMU's two reply readers meet (a held IOTLB reply, a fixed
//! reply delay).
//!
//! QEMU 7.2 refuses anything but a real userfaultfd on which UFFDIO_API has
//! been done (a memfd makes its fault thread spin). The `userfaultfd` crate
//! generates its bindings with bindgen at build time, which needs libclang;
//! the two calls needed here are made directly instead.
//!
//! Leaves out: registering guest memory with the userfaultfd and resolving
//! page faults (QEMU 7.2 does not need it: the back-end never touches guest
//! pages), and writing the dirty log (the back-end writes no guest memory).

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use nix::libc;
use vm_memory::{FileOffset, MmapRegion};

/// `struct uffdio_api` from `linux/userfaultfd.h`.
#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `UFFD_API`.
const UFFD_API: u64 = 0xaa;

nix::ioctl_readwrite!(uffdio_api, 0xaa, 0x3f, UffdioApi);

/// A userfaultfd with the API handshake done, close-on-exec and non-blocking
/// (as QEMU's own `uffd_create_fd` makes them).
pub fn open_userfaultfd() -> std::io::Result<OwnedFd> {
    // SAFETY: userfaultfd(2) takes one flags argument and returns a new
    // descriptor or -1; nothing else is touched.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut api = UffdioApi { api: UFFD_API, features: 0, ioctls: 0 };
    // SAFETY: UFFDIO_API reads and writes exactly one `struct uffdio_api`,
    // which `api` is (same layout, `repr(C)`), on a userfaultfd we own.
    unsafe { uffdio_api(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut api) }
        .map_err(std::io::Error::from)?;
    Ok(fd)
}

/// Maps the dirty log QEMU passes with SET_LOG_BASE (`mmap_size` bytes at
/// `mmap_offset` of the descriptor), shared, as a back-end that logs would.
pub fn map_log(fd: OwnedFd, size: u64, offset: u64) -> std::io::Result<MmapRegion> {
    let size = usize::try_from(size).map_err(std::io::Error::other)?;
    if size == 0 {
        return Err(std::io::Error::other("a dirty log of size 0"));
    }
    MmapRegion::from_file(FileOffset::new(std::fs::File::from(fd), offset), size)
        .map_err(std::io::Error::other)
}

/// Fault injection to make QEMU's reply readers meet on the socket. Off by
/// default; not how any back-end behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultInjection {
    /// Hold the reply to the first IOTLB update with NEED_REPLY until
    /// POSTCOPY_END has arrived, then send it [`HELD_REPLY_PAUSE`] later,
    /// followed by POSTCOPY_END's own ack: device start and the listen
    /// thread then both wait for a reply at once. At most [`HOLD_LIMIT`].
    pub hold_first_iotlb_reply: bool,
    /// Wait this long before answering every IOTLB update.
    pub iotlb_reply_delay: Duration,
}

/// How long after POSTCOPY_END a held IOTLB reply goes out.
pub const HELD_REPLY_PAUSE: Duration = Duration::from_millis(20);

/// The longest a reply is held: then it goes out without POSTCOPY_END. A
/// front-end that serialises its request/reply pairs (the mutex variant)
/// sends POSTCOPY_END only once the held reply has come, so without a limit
/// the hold itself would hang it.
pub const HOLD_LIMIT: Duration = Duration::from_secs(3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_userfaultfd_with_the_api_handshake_done() {
        match open_userfaultfd() {
            Ok(fd) => {
                // A second UFFDIO_API on the same descriptor is refused:
                // proof that the first one happened.
                let mut api = UffdioApi { api: UFFD_API, features: 0, ioctls: 0 };
                // SAFETY: as in `open_userfaultfd`.
                let again = unsafe { uffdio_api(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut api) };
                assert!(again.is_err());
            }
            // Without the privilege (unprivileged_userfaultfd=0, no
            // CAP_SYS_PTRACE) the call is refused, which is not this code's
            // failure.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
            Err(e) => panic!("userfaultfd: {e}"),
        }
    }
}
