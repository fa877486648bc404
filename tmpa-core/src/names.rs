//! Typed names that are always safe single path components.
//!
//! Every name that comes from data (a user id in an event, a session file's stem) passes
//! through one of these types before it is joined to a path, so no caller can build a path
//! outside the root: the constructors refuse `/`, `\`, NUL, control characters, `..`, a
//! leading `.` or `-`, the empty string and anything over [`NAME_BYTES_MAX`] bytes.

use std::fmt;
use std::str::FromStr;

use chrono::NaiveDate;

use crate::error::{Error, Result};

/// Longest accepted name, in bytes. File names on Linux stop at 255; the longest suffix the
/// tree adds is `.json.gz.tmp.{unique}` (well under 55 bytes).
pub const NAME_BYTES_MAX: usize = 200;

fn check_component(kind: &'static str, s: &str) -> Result<()> {
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
    if s.len() > NAME_BYTES_MAX {
        return bad("longer than 200 bytes");
    }
    if s.contains("..") {
        return bad("contains '..'");
    }
    if s.starts_with('.') || s.starts_with('-') {
        return bad("starts with '.' or '-'");
    }
    if s.chars().any(|c| c == '/' || c == '\\' || c.is_control()) {
        return bad("contains '/', '\\' or a control character");
    }
    Ok(())
}

macro_rules! component_name {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as a single safe path component.
            ///
            /// # Errors
            /// [`Error::InvalidName`] when `s` is empty, too long, or holds `/`, `\`, NUL,
            /// a control character or `..`, or starts with `.` or `-`.
            pub fn new(s: impl Into<String>) -> Result<Self> {
                let s = s.into();
                check_component($kind, &s)?;
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
    };
}

component_name!(
    /// An event id: the `{id}` in `evt_{id}.json`.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::EventId;
    /// assert!(EventId::new("01HF7Z").is_ok());
    /// assert!(EventId::new("../../etc/passwd").is_err());
    /// ```
    EventId,
    "event id"
);
component_name!(
    /// A user id: a directory name under `notifications/` and `chat_history/`.
    UserId,
    "user id"
);
component_name!(
    /// A chat session name: the `{session}` in `sessions/{session}.json`.
    SessionId,
    "session id"
);
component_name!(
    /// A notification id: the `{id}` in `inbox/ntf_{id}.json` (without the `ntf_` prefix).
    NotificationId,
    "notification id"
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
            kind: "day",
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
    fn refuses_escapes() {
        for bad in [
            "", "..", "../x", "a/b", "a\0b", ".hidden", "-rf", "a\nb", "a\\b", "x..y",
        ] {
            assert!(UserId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(UserId::new("x".repeat(201)).is_err());
        for good in ["u1", "alice@example.com", "01HF7Z.x", "name with space"] {
            assert!(UserId::new(good).is_ok(), "{good:?} refused");
        }
    }
}
