//! Typed names that are always safe file names inside their directory.
//!
//! Every name that comes from data (a user id in an event, a session file's stem) passes
//! through one of these types before it becomes part of a path, so no caller can reach
//! outside the root. A name is whatever the backend can write (docs/FORMAT.md "Temporaries"): not empty, not
//! `.` or `..`, without `/` or NUL, and short enough that the file it names fits in 255
//! bytes (`evt_{id}.json`: ids up to 246 bytes). One more refusal keeps data from being
//! taken for debris: a name whose file would look like a temporary (`{final}.tmp` or
//! `{final}.tmp.{suffix}`, e.g. the session `a.json.tmp`, whose file `a.json.tmp.json`
//! is a temporary of `a.json`), which tmpa-tmpclean could otherwise remove.

use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::error::{Error, NameKind, Result};
use crate::fs::temp_final_name;

/// Longest file name, in bytes (Linux `NAME_MAX`).
pub(crate) const FILE_NAME_BYTES_MAX: usize = 255;

/// The file names a name of `kind` appears in, as (prefix, suffix) around it.
fn wrappers(kind: NameKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        NameKind::Event => &[("evt_", ".json")],
        NameKind::Notification => &[("ntf_", ".json"), ("ntf_", ".ack")],
        NameKind::Session => &[("", ".json"), ("", ".json.gz")],
        NameKind::User | NameKind::Day => &[("", "")],
    }
}

fn check_name(kind: NameKind, s: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            kind,
            value: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return bad("empty");
    }
    if s == "." || s == ".." {
        return bad("is '.' or '..'");
    }
    if s.contains('/') {
        return bad("contains '/'");
    }
    if s.contains('\0') {
        return bad("contains NUL");
    }
    let longest = wrappers(kind)
        .iter()
        .map(|(p, x)| p.len() + s.len() + x.len())
        .max()
        .unwrap_or(s.len());
    if longest > FILE_NAME_BYTES_MAX {
        return bad("too long: its file name would exceed 255 bytes");
    }
    // A wrapped name can look like a temporary only through a ".tmp" of the name itself:
    // the wrappers' suffixes start with ".j", ".a" or ".g". Checked first, so that
    // validating the names of a listing costs no allocation.
    if kind != NameKind::User
        && s.contains(".tmp")
        && wrappers(kind)
            .iter()
            .any(|(p, x)| temp_final_name(OsStr::new(&format!("{p}{s}{x}"))).is_some())
    {
        return bad(
            "its file name would look like a temporary ('.tmp' at its end or followed by '.')",
        );
    }
    Ok(())
}

macro_rules! component_name {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s`: not empty, not `.` or `..`, no `/` or NUL, short enough for
            /// its file name (255 bytes), and not making its file look like a temporary.
            ///
            /// # Errors
            /// [`Error::InvalidName`] when `s` is empty, `.` or `..`, holds `/` or NUL, is
            /// too long for its file name, or would name a file that looks like a
            /// temporary.
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                check_name($kind, &s)?;
                Ok(Self(s))
            }

            /// The name as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }
    };
}

component_name!(
    /// An event id: the `{id}` in `token_stats/{day}/evt_{id}.json` (up to 246 bytes).
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::EventId;
    /// assert!(EventId::new("01HF7Z").is_ok());
    /// assert!(EventId::new("i".repeat(240)).is_ok());
    /// assert!(EventId::new("../../etc/passwd").is_err());
    /// assert!(EventId::new("i".repeat(247)).is_err()); // evt_{id}.json > 255 bytes
    /// ```
    EventId,
    NameKind::Event
);
component_name!(
    /// A user id: a directory name under `notifications/` and `chat_history/` (up to 255
    /// bytes).
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::UserId;
    /// assert!(UserId::new("alice@example.com").is_ok());
    /// assert!(UserId::new(".hidden -and- odd").is_ok()); // only what could leave is refused
    /// assert!(UserId::new("a/b").is_err());
    /// assert!(UserId::new("..").is_err());
    /// ```
    UserId,
    NameKind::User
);
component_name!(
    /// A chat session name: the `{session}` in `sessions/{session}.json` (up to 247 bytes,
    /// so that its archive `{session}.json.gz` fits too).
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::SessionId;
    /// assert!(SessionId::new("s-2026-10-01").is_ok());
    /// assert!(SessionId::new("a.json.tmp").is_err()); // its file would look like a temporary
    /// assert!(SessionId::new("s".repeat(248)).is_err());
    /// ```
    SessionId,
    NameKind::Session
);
component_name!(
    /// A notification id: the `{id}` in `inbox/ntf_{id}.json` (without the `ntf_` prefix;
    /// up to 246 bytes).
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::NotificationId;
    /// assert_eq!(NotificationId::new("42").unwrap().to_string(), "42");
    /// assert!(NotificationId::new("").is_err());
    /// ```
    NotificationId,
    NameKind::Notification
);

/// A calendar day, always valid, written `YYYY-MM-DD` (the name of a `token_stats/` directory).
///
/// # Examples
/// ```
/// use tmpa_core::Day;
/// let d: Day = "2026-11-23".parse().unwrap();
/// assert_eq!(d.to_string(), "2026-11-23");
/// assert!("2026-02-30".parse::<Day>().is_err());
/// assert!("2026-1-3".parse::<Day>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Day(NaiveDate);

impl Day {
    /// The day of a date.
    pub fn from_date(d: NaiveDate) -> Self {
        Day(d)
    }

    /// The date.
    pub fn date(self) -> NaiveDate {
        self.0
    }

    /// Today in the machine's local time zone (what cron means by "today").
    pub fn today_local() -> Self {
        Day(chrono::Local::now().date_naive())
    }
}

impl FromStr for Day {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason| Error::InvalidName {
            kind: NameKind::Day,
            value: s.to_owned(),
            reason,
        };
        // Strict shape first: chrono alone would accept "2026-1-3".
        let shape_ok = s.len() == 10
            && s.bytes().enumerate().all(|(i, b)| match i {
                4 | 7 => b == b'-',
                _ => b.is_ascii_digit(),
            });
        if !shape_ok {
            return Err(bad("not of the form YYYY-MM-DD"));
        }
        NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .map(Day)
            .map_err(|_| bad("not a calendar date"))
    }
}

impl fmt::Display for Day {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_only_what_could_leave_the_directory_or_be_taken_for_debris() {
        for bad in ["", ".", "..", "../x", "a/b", "a\0b"] {
            assert!(UserId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(UserId::new("x".repeat(255)).is_ok());
        assert!(UserId::new("x".repeat(256)).is_err());
        for good in [
            "u1",
            "alice@example.com",
            "01HF7Z.x",
            "name with space",
            ".hidden",
            "-rf",
            "x..y",
            "a\\b",
            "tab\there",
        ] {
            assert!(UserId::new(good).is_ok(), "{good:?} refused");
            assert!(EventId::new(good).is_ok(), "{good:?} refused");
        }
        assert!(EventId::new("i".repeat(246)).is_ok());
        assert!(EventId::new("i".repeat(247)).is_err());
        assert!(SessionId::new("s".repeat(247)).is_ok());
        assert!(SessionId::new("s".repeat(248)).is_err());
        for temp_like in ["a.json.tmp", "x.tmp", "x.tmp.y"] {
            assert!(SessionId::new(temp_like).is_err(), "{temp_like:?}");
            assert!(EventId::new(temp_like).is_err(), "{temp_like:?}");
        }
        assert!(SessionId::new("a.tmpl").is_ok());
    }
}
