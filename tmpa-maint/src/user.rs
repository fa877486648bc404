//! `--user` (`TMPA_USER`): a program started as root does its work as the configured user,
//! as logrotate's `su` and runuser do, but only after it has read what only root may
//! read: the operator's files named on the command line (`--apply-plan`, `--save-plan`,
//! the patrol's `--log` files) and the credentials in its environment
//! (docs/OPERATIONS.md "Who runs the jobs").
//!
//! # Guarantees
//! - The switch is for good: the real, effective and saved user and group ids and the
//!   supplementary groups all become the user's, so no capability is left and none can
//!   be regained.
//! - The process is then not dumpable: its `/proc/PID/environ`, `mem` and `fd/` belong
//!   to root, and the user's other processes (the backend) can neither read them nor
//!   ptrace it. The credentials it was started with stay root's.
//!
//! # Not guaranteed
//! - Users come from `/etc/passwd` and `/etc/group` only (no NSS: LDAP or sssd accounts
//!   are not found): the jobs' user is a local service account.
//! - The ids are changed for the calling thread ([`rustix::thread`]), which is the whole
//!   process only when no other thread has been started: [`become_user`] is called
//!   before a program starts any.

use std::fmt;
use std::path::Path;

use rustix::process::{Gid, Uid};

use crate::exit::StartError;

/// Largest `/etc/passwd` or `/etc/group` read.
const ACCOUNT_FILE_BYTES_MAX: u64 = 16 << 20;

/// A local account: its name, ids and groups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
    /// Its supplementary groups (`/etc/group` lines naming it), the primary one first.
    pub groups: Vec<u32>,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (uid {})", self.name, self.uid)
    }
}

impl Account {
    /// The account called `name` in `passwd` and `group` (the texts of `/etc/passwd` and
    /// `/etc/group`).
    ///
    /// # Errors
    /// A message when no line of `passwd` names it, or its line is malformed.
    ///
    /// # Examples
    /// ```
    /// use tmpa_maint::Account;
    /// let passwd = "root:x:0:0::/root:/bin/sh\napp:x:999:998::/opt/app:/usr/sbin/nologin\n";
    /// let group = "adm:x:4:syslog,app\napp:x:998:\n";
    /// let a = Account::parse("app", passwd, group).unwrap();
    /// assert_eq!((a.uid, a.gid, a.groups), (999, 998, vec![998, 4]));
    /// assert!(Account::parse("nobody", passwd, group).is_err());
    /// ```
    pub fn parse(name: &str, passwd: &str, group: &str) -> Result<Account, String> {
        let line = passwd
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .ok_or_else(|| format!("no user {name:?} in /etc/passwd"))?;
        let f: Vec<&str> = line.split(':').collect();
        let id = |i: usize, what: &str| -> Result<u32, String> {
            f.get(i)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("/etc/passwd: the line of {name:?} has no {what}"))
        };
        let (uid, gid) = (id(2, "uid")?, id(3, "gid")?);
        let mut groups = vec![gid];
        for l in group.lines() {
            let g: Vec<&str> = l.split(':').collect();
            let (Some(id), Some(members)) = (g.get(2).and_then(|s| s.parse().ok()), g.get(3))
            else {
                continue;
            };
            if members.split(',').any(|m| m.trim() == name) && !groups.contains(&id) {
                groups.push(id);
            }
        }
        Ok(Account {
            name: name.to_owned(),
            uid,
            gid,
            groups,
        })
    }

    /// The account called `name` on this machine (`/etc/passwd`, `/etc/group`).
    ///
    /// # Errors
    /// A message naming the file that cannot be read, or saying there is no such user.
    pub fn lookup(name: &str) -> Result<Account, String> {
        let read = |p: &str| -> Result<String, String> {
            use std::io::Read;
            let mut text = String::new();
            std::fs::File::open(Path::new(p))
                .and_then(|f| f.take(ACCOUNT_FILE_BYTES_MAX).read_to_string(&mut text))
                .map_err(|e| format!("{p}: {e}"))?;
            Ok(text)
        };
        Account::parse(name, &read("/etc/passwd")?, &read("/etc/group")?)
    }
}

/// Who the program runs as after [`become_user`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Became {
    /// No user configured, or `root`: the program runs as it was started.
    AsStarted,
    /// It was started as this user already (runuser, systemd's `User=`).
    Already(Account),
    /// It was started as root and is now this user, for good.
    Switched(Account),
}

/// Makes the program the configured user `name` (`--user`, `TMPA_USER`): for good when
/// started as root; nothing when started as that user already, or when `name` is
/// empty, absent or `root`. Call it before the program starts any thread (see the
/// module's "Not guaranteed"), after it has opened what only root may open.
///
/// # Errors
/// [`StartError::Usage`] (exit 2): no such user; started as another user, who cannot
/// become it; or the system refused a step (the message names it).
pub fn become_user(name: Option<&str>) -> Result<Became, StartError> {
    let Some(name) = name
        .map(str::trim)
        .filter(|n| !n.is_empty() && *n != "root")
    else {
        return Ok(Became::AsStarted);
    };
    let usage = |why: String| StartError::Usage(format!("TMPA_USER / --user {name}: {why}"));
    let account = Account::lookup(name).map_err(usage)?;
    let euid = rustix::process::geteuid().as_raw();
    if euid == account.uid {
        return Ok(Became::Already(account));
    }
    if euid != 0 {
        return Err(usage(format!(
            "this program runs as uid {euid}, which cannot become {account}: start it as \
             root (sudo tmpa PROGRAM ...: it reads /etc/default/tmpa) or as {}",
            account.name
        )));
    }
    if account.uid == 0 {
        return Ok(Became::AsStarted);
    }
    switch(&account).map_err(|e| usage(format!("cannot become it: {e}")))?;
    Ok(Became::Switched(account))
}

/// Groups, then group ids, then user ids (the order in which root may still set each),
/// checked afterwards; then not dumpable.
fn switch(a: &Account) -> Result<(), String> {
    // The ids below are the calling thread's: a thread started earlier would stay root.
    // Where /proc shows the threads, that is checked; elsewhere the callers' order (before
    // any thread) is what holds it.
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        let n = tasks.count();
        if n > 1 {
            return Err(format!(
                "this process has {n} threads, which would keep root's ids (a program \
                 starts none before the switch: a bug to report)"
            ));
        }
    }
    let gid = Gid::from_raw(a.gid);
    let uid = Uid::from_raw(a.uid);
    let groups: Vec<Gid> = a.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    rustix::thread::set_thread_groups(&groups).map_err(|e| format!("setgroups: {e}"))?;
    rustix::thread::set_thread_res_gid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    rustix::thread::set_thread_res_uid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    let now = (
        rustix::process::getuid(),
        rustix::process::geteuid(),
        rustix::process::getgid(),
        rustix::process::getegid(),
    );
    if now != (uid, uid, gid, gid) {
        return Err(format!("the ids are {now:?} after the switch"));
    }
    // Root cannot be had back: the saved ids are the user's too.
    if rustix::thread::set_thread_res_uid(Uid::ROOT, Uid::ROOT, Uid::ROOT).is_ok() {
        return Err("root could be regained after the switch".into());
    }
    // The kernel makes a process that changed its ids undumpable unless fs.suid_dumpable
    // says otherwise; this says it whatever the sysctl.
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_read_from_passwd_and_group() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      app:x:999:999:App:/opt/app:/usr/sbin/nologin\n\
                      broken:x:abc:1::/:/bin/sh\n";
        let group = "root:x:0:\nadm:x:4:syslog, app\njournal:x:101:appx\napp:x:999:\n";
        let a = Account::parse("app", passwd, group).unwrap();
        assert_eq!(a.groups, vec![999, 4], "appx is another user");
        assert!(Account::parse("ap", passwd, group).is_err());
        assert!(
            Account::parse("broken", passwd, group)
                .unwrap_err()
                .contains("uid")
        );
    }

    #[test]
    fn no_user_or_root_changes_nothing() {
        assert_eq!(become_user(None).unwrap(), Became::AsStarted);
        assert_eq!(become_user(Some("")).unwrap(), Became::AsStarted);
        assert_eq!(become_user(Some("root")).unwrap(), Became::AsStarted);
        assert!(matches!(
            become_user(Some("no-such-user-here")),
            Err(StartError::Usage(m)) if m.contains("no user")
        ));
    }
}
