//! Which files some process has open, mapped or locked: a scan of `/proc` (once for the
//! proofs of a run, and again just before each deletion it proves).
//!
//! The scan reads every `/proc/{pid}/fd/*` (`statx` through the magic link, with
//! `AT_STATX_DONT_SYNC`, gives the open file's device and inode without asking a network
//! file system's server), every `/proc/{pid}/maps` (files mapped into memory, which stay
//! in use after their descriptor is closed) and `/proc/locks` (flock, POSIX and OFD
//! locks). Only files on the root's device are kept, so memory is bounded by what is
//! open on that file system, not on the whole machine.
//!
//! This is *evidence*, used only where the kernel gives no file lease (NFS, FUSE, overlay
//! file systems; a file of another user without `CAP_LEASE`): a file `/proc` shows open
//! or locked is kept. That `/proc` shows a file closed proves nothing by itself: `/proc`
//! shows only this pid namespace (a cron container beside the application's sees none of
//! the application's processes) and may hide processes even from root. tmpa-tmpclean
//! accepts it as proof only when the operator states, with `--proc-shows-all-writers`,
//! that `/proc` shows every process that can write the tree; and even then not when
//! `/proc` is missing, is not a procfs, or belongs to another pid namespace.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead};
use std::path::{Path, PathBuf};

/// Files in use on one device, as found by one scan.
#[derive(Debug, Default)]
pub struct InUse {
    /// Inodes open (or mapped) by some process.
    open: HashSet<u64>,
    /// Inodes some process holds a lock on.
    locked: HashSet<u64>,
    /// Why the scan cannot prove anything closed, if it cannot.
    blind: Option<String>,
    /// Why `/proc` is no evidence at all here (missing, not a procfs, another pid
    /// namespace's), if it is not.
    absent: Option<String>,
    /// Processes inspected.
    processes: u64,
}

/// Whether a file is known to be in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// No process has it open, mapped or locked (every process was inspected).
    Unused,
    /// Some process has it open or mapped.
    Open,
    /// Some process holds a lock on it.
    Locked,
    /// Some process could not be inspected: nothing can be proven closed.
    Unproven,
}

impl InUse {
    /// Scans `proc_dir` (normally `/proc`) for files of device `dev`, skipping this
    /// process itself.
    pub fn scan(proc_dir: &Path, dev: u64) -> InUse {
        let mut s = InUse::default();
        let me = std::process::id();
        let rd = match fs::read_dir(proc_dir) {
            Ok(rd) => rd,
            Err(e) => {
                let why = format!("cannot list {}: {e}", proc_dir.display());
                s.blind = Some(why.clone());
                s.absent = Some(why);
                return s;
            }
        };
        let mut unreadable: Vec<u32> = Vec::new();
        for entry in rd.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if pid == me {
                continue;
            }
            let dir = entry.path();
            match s.scan_process(&dir, dev) {
                Ok(()) => s.processes += 1,
                Err(e) if gone(&e) => {}
                Err(_) => unreadable.push(pid),
            }
        }
        if let Some(why) = not_our_proc(proc_dir, me) {
            s.blind = Some(why.clone());
            s.absent = Some(why);
        }
        if !unreadable.is_empty() {
            unreadable.sort_unstable();
            let shown: Vec<String> = unreadable.iter().take(5).map(u32::to_string).collect();
            s.blind = Some(format!(
                "the open files of {} process(es) cannot be read (pid {}{}); {}",
                unreadable.len(),
                shown.join(", "),
                if unreadable.len() > 5 { ", ..." } else { "" },
                if rustix::process::geteuid().is_root() {
                    "even root cannot read them here (a sandbox, an LSM, or a process of \
                     another user namespace)"
                } else {
                    "run as root"
                }
            ));
        }
        let locks = proc_dir.join("locks");
        match fs::File::open(&locks) {
            Ok(f) => {
                for line in io::BufReader::new(f).split(b'\n') {
                    match line {
                        Ok(line) => {
                            if let Some((d, ino)) = parse_lock_line(&line)
                                && d == dev
                            {
                                s.locked.insert(ino);
                            }
                        }
                        Err(e) => {
                            s.blind = Some(format!("cannot read {}: {e}", locks.display()));
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                s.blind
                    .get_or_insert_with(|| format!("cannot read {}: {e}", locks.display()));
            }
        }
        s
    }

    /// Records the open and mapped files of one process.
    fn scan_process(&mut self, dir: &Path, dev: u64) -> io::Result<()> {
        for entry in fs::read_dir(dir.join("fd"))? {
            // Through the magic link: the open file's own device and inode, from the
            // attributes the kernel has (`AT_STATX_DONT_SYNC`: a network file system is
            // not asked, so a dead server cannot block the scan).
            use rustix::fs::{AtFlags, StatxFlags};
            let path = entry?.path();
            match rustix::fs::statx(
                rustix::fs::CWD,
                &path,
                AtFlags::STATX_DONT_SYNC,
                StatxFlags::INO,
            ) {
                Ok(st) if rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor) == dev => {
                    self.open.insert(st.stx_ino);
                }
                Ok(_) => {}
                // Closed between listing and stat, or a target that cannot be stated
                // (a deleted file on a vanished mount): not one of ours either way.
                Err(rustix::io::Errno::NOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let maps = fs::File::open(dir.join("maps"))?;
        for line in io::BufReader::new(maps).split(b'\n') {
            if let Some((d, ino)) = parse_maps_line(&line?)
                && d == dev
            {
                self.open.insert(ino);
            }
        }
        Ok(())
    }

    /// Whether the file `(dev, ino)` of the scanned device is in use.
    pub fn verdict(&self, ino: u64) -> Use {
        if self.open.contains(&ino) {
            Use::Open
        } else if self.locked.contains(&ino) {
            Use::Locked
        } else if self.blind.is_some() {
            Use::Unproven
        } else {
            Use::Unused
        }
    }

    /// Why nothing can be proven closed, when that is so.
    pub fn blind(&self) -> Option<&str> {
        self.blind.as_deref()
    }

    /// Why `/proc` is no evidence at all here, when that is so.
    pub fn absent(&self) -> Option<&str> {
        self.absent.as_deref()
    }

    /// How many processes were inspected.
    pub fn processes(&self) -> u64 {
        self.processes
    }

    /// A scan result built by hand, for tests of the decision rule.
    #[doc(hidden)]
    pub fn from_parts(open: &[u64], locked: &[u64], blind: Option<&str>) -> InUse {
        InUse {
            open: open.iter().copied().collect(),
            locked: locked.iter().copied().collect(),
            blind: blind.map(str::to_owned),
            absent: None,
            processes: 1,
        }
    }
}

/// Why `proc_dir` cannot vouch for every process of this pid namespace, if it cannot: it
/// is not a procfs, or it is the procfs of another pid namespace (this process is not in
/// it).
fn not_our_proc(proc_dir: &Path, me: u32) -> Option<String> {
    const PROC_SUPER_MAGIC: rustix::fs::FsWord = 0x9fa0;
    match rustix::fs::statfs(proc_dir) {
        Ok(st) if st.f_type == PROC_SUPER_MAGIC => {}
        Ok(_) => return Some(format!("{} is not a procfs", proc_dir.display())),
        Err(e) => return Some(format!("cannot statfs {}: {e}", proc_dir.display())),
    }
    if !proc_dir.join(me.to_string()).exists() {
        return Some(format!(
            "{} belongs to another pid namespace (this process is not in it)",
            proc_dir.display()
        ));
    }
    None
}

/// The path of the proc file system.
pub fn proc_dir() -> PathBuf {
    PathBuf::from("/proc")
}

/// A process that exited (or a descriptor closed) while being read.
fn gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(3) // ESRCH
}

fn hex_dev(maj: &[u8], min: &[u8]) -> Option<u64> {
    let maj = u32::from_str_radix(std::str::from_utf8(maj).ok()?, 16).ok()?;
    let min = u32::from_str_radix(std::str::from_utf8(min).ok()?, 16).ok()?;
    Some(rustix::fs::makedev(maj, min))
}

/// Parses a `/proc/locks` line (`1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`, or a
/// waiter's `1: -> FLOCK ...`) into (device, inode).
///
/// # Examples
/// ```
/// use tmpa_tmpclean::inuse::parse_lock_line;
/// let dev = rustix::fs::makedev(8, 1);
/// assert_eq!(parse_lock_line(b"1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"), Some((dev, 5678)));
/// assert_eq!(parse_lock_line(b"not a lock"), None);
/// ```
pub fn parse_lock_line(line: &[u8]) -> Option<(u64, u64)> {
    line.split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .find_map(|w| {
            let mut parts = w.split(|&b| b == b':');
            let (maj, min, ino) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || maj.is_empty() || min.is_empty() {
                return None;
            }
            let ino: u64 = std::str::from_utf8(ino).ok()?.parse().ok()?;
            Some((hex_dev(maj, min)?, ino))
        })
}

/// Parses a `/proc/{pid}/maps` line (`addr perms offset MAJ:MIN inode path`) into
/// (device, inode); anonymous mappings (inode 0) give `None`.
pub fn parse_maps_line(line: &[u8]) -> Option<(u64, u64)> {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let dev = words.nth(3)?;
    let ino: u64 = std::str::from_utf8(words.next()?).ok()?.parse().ok()?;
    if ino == 0 {
        return None;
    }
    let mut parts = dev.split(|&b| b == b':');
    let (maj, min) = (parts.next()?, parts.next()?);
    Some((hex_dev(maj, min)?, ino))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_locks_lines() {
        let dev = rustix::fs::makedev(0x08, 0x01);
        assert_eq!(
            parse_lock_line(b"1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"),
            Some((dev, 5678))
        );
        assert_eq!(
            parse_lock_line(b"2: -> POSIX  ADVISORY  WRITE 99 08:01:42 0 EOF"),
            Some((dev, 42))
        );
        assert_eq!(
            parse_lock_line(b"3: OFDLCK ADVISORY  READ  -1 00:2e:7 0 EOF"),
            Some((rustix::fs::makedev(0, 0x2e), 7))
        );
        assert_eq!(parse_lock_line(b"garbage"), None);
    }

    #[test]
    fn parses_maps_lines() {
        assert_eq!(
            parse_maps_line(b"7f00-7f10 r--p 00000000 fd:01 1234   /usr/lib/x.so"),
            Some((rustix::fs::makedev(0xfd, 1), 1234))
        );
        assert_eq!(
            parse_maps_line(b"7f00-7f10 rw-p 00000000 00:00 0 [heap]"),
            None
        );
    }

    #[test]
    fn finds_a_file_this_test_holds_open_through_a_child() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("held.json.tmp");
        std::fs::write(&p, b"x").unwrap();
        let st = std::fs::metadata(&p).unwrap();
        use std::os::unix::fs::MetadataExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&p).unwrap())
            .spawn()
            .unwrap();
        let s = InUse::scan(&proc_dir(), st.dev());
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(s.verdict(st.ino()), Use::Open, "{s:?}");
        assert!(s.processes() > 0);
    }

    #[test]
    fn blind_scan_proves_nothing_closed() {
        let s = InUse::from_parts(&[1], &[2], Some("pid 7 unreadable"));
        assert_eq!(s.verdict(1), Use::Open);
        assert_eq!(s.verdict(2), Use::Locked);
        assert_eq!(s.verdict(3), Use::Unproven);
        assert_eq!(InUse::from_parts(&[], &[], None).verdict(3), Use::Unused);
        let none = InUse::scan(Path::new("/nonexistent-proc"), 1);
        assert_eq!(none.verdict(3), Use::Unproven);
    }
}
