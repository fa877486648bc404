//! File leases (`fcntl(F_SETLEASE, F_WRLCK)`): the kernel's own proof that no other open
//! file description of a file exists, in any process of any pid, mount or user namespace,
//! mapped files included. A write lease is granted only then; while it is held, anyone
//! opening the file waits (up to `/proc/sys/fs/lease-break-time`, 45 s by default) and
//! the holder is told with `SIGIO`.
//!
//! `SIGIO` ends a process by default: [`Lease::take`] first installs a handler (once per
//! process, with `signal-hook`); whether a lease is still intact is read from the kernel
//! with `F_GETLEASE` ([`Lease::intact`]), which reports a pending break.
//!
//! Neither `rustix` nor `nix` wraps `F_SETLEASE`; [`fcntl_lease`] is one of the two audited
//! `unsafe` calls of the workspace (the other is `write_back` in fs/journal.rs).

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;

/// Why a lease could not be had.
#[derive(Debug)]
pub enum LeaseRefused {
    /// Another open file description of the file exists (`EAGAIN`): it is open or mapped
    /// somewhere.
    Busy,
    /// The file system or the kernel gives no leases here (`EINVAL` on NFS, FUSE,
    /// overlay; `EACCES`/`EPERM` for a file of another user without `CAP_LEASE`; leases
    /// disabled): other evidence is needed.
    Unavailable(io::Error),
}

/// A write lease held on an open file; released when dropped (the descriptor closes).
#[derive(Debug)]
pub struct Lease {
    file: File,
}

/// `fcntl(fd, cmd, arg)` for the lease commands (`F_SETLEASE`, `F_GETLEASE`).
#[allow(unsafe_code)]
fn fcntl_lease(fd: BorrowedFd<'_>, cmd: libc::c_int, arg: libc::c_int) -> io::Result<libc::c_int> {
    debug_assert!(cmd == libc::F_SETLEASE || cmd == libc::F_GETLEASE);
    // SAFETY: F_SETLEASE and F_GETLEASE take an int argument (or none) and read or write
    // no memory of this process; `fd` is a descriptor that stays open for the call (it is
    // borrowed). The only effect is on the kernel's lease table for that open file.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Lease {
    /// Takes a write lease on `file` (which should be open read-only: a write lease needs
    /// the caller's own descriptor to be the only one).
    ///
    /// # Errors
    /// [`LeaseRefused::Busy`] when the file is open or mapped elsewhere,
    /// [`LeaseRefused::Unavailable`] when no lease can be had here; the file is handed back.
    pub fn take(file: File) -> Result<Lease, (File, LeaseRefused)> {
        if !handler_installed() {
            return Err((
                file,
                LeaseRefused::Unavailable(io::Error::other("no SIGIO handler")),
            ));
        }
        match fcntl_lease(file.as_fd(), libc::F_SETLEASE, libc::F_WRLCK) {
            Ok(_) => Ok(Lease { file }),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err((file, LeaseRefused::Busy)),
            Err(e) => Err((file, LeaseRefused::Unavailable(e))),
        }
    }

    /// Whether the lease is still held with no break pending: nobody has tried to open
    /// the file since it was taken.
    pub fn intact(&self) -> bool {
        fcntl_lease(self.file.as_fd(), libc::F_GETLEASE, 0).is_ok_and(|t| t == libc::F_WRLCK)
    }

    /// The leased file (read from it freely: the holder's own reads break nothing).
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        // Closing the descriptor releases the lease too; unlocking first lets a waiting
        // opener go on at once.
        let _ = fcntl_lease(self.file.as_fd(), libc::F_SETLEASE, libc::F_UNLCK);
    }
}

/// Whether the `SIGIO` handler is in place, installing it on first use. Without it the
/// first lease break would kill the process, so no lease is taken then. The handler only
/// sets a flag nobody needs to read: [`Lease::intact`] asks the kernel per lease.
fn handler_installed() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGIO, flag).is_ok()
    })
}
