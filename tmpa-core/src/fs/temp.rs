//! Temporary names (docs/FORMAT.md "Temporaries"): what the atomic write calls its temporaries, and how a
//! name is recognised as one and mapped back to the file it would have replaced.
//!
//! A name is a temporary when it is `{final}.tmp` or `{final}.tmp.{suffix}`, with a
//! non-empty `{final}` and any non-empty `{suffix}`, dots included
//! (`x.json.tmp.4242.9f3a`). When several splits fit, `{final}` is the longest one (the
//! writer appended `.tmp…` to the end of the final name). `x.tmpl`, `x.tmpfoo`, `x.tmp.`
//! and `.tmp` are not temporaries.
//!
//! The library names its own temporaries `{final}.tmp.{unique}`. When that would be longer
//! than a file name may be (255 bytes), it uses
//! `{first 160 bytes of final}~{16 hex digits}.tmp.{unique}` instead, the hex digits being
//! the start of the SHA-256 of the final name: [`temporary_of`] recognises that shape
//! ([`FinalName::Abbreviated`]), and the final file is the entry of the same directory
//! that [`Abbreviation::matches`].

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use sha2::{Digest, Sha256};

/// Longest file name, in bytes (Linux `NAME_MAX`).
pub const TEMP_NAME_BYTES_MAX: usize = 255;
/// Bytes of the final name an abbreviated temporary keeps.
const PREFIX_BYTES: usize = 160;
/// Hex digits of the final name's SHA-256 an abbreviated temporary carries.
const HASH_HEX: usize = 16;

/// If `name` is a temporary (see the module docs), the name of the file it would replace.
///
/// # Examples
/// ```
/// use std::ffi::OsStr;
/// use tmpa_core::temp_final_name;
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmp")), Some(OsStr::new("a.json")));
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmp.4711-0-ff")), Some(OsStr::new("a.json")));
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmp.4242.9f3a")), Some(OsStr::new("a.json")));
/// assert_eq!(temp_final_name(OsStr::new("a.json.tmpl")), None);
/// assert_eq!(temp_final_name(OsStr::new("x.tmpfoo")), None);
/// ```
pub fn temp_final_name(name: &OsStr) -> Option<&OsStr> {
    let b = name.as_bytes();
    // Every ".tmp" from the right: the first that ends the name or is followed by "." and
    // a non-empty suffix gives the longest final name.
    let mut end = b.len();
    while let Some(at) = find_last(&b[..end], b".tmp") {
        let rest = &b[at + 4..];
        let fits = rest.is_empty() || (rest[0] == b'.' && rest.len() > 1);
        if fits && at > 0 {
            return Some(OsStr::from_bytes(&b[..at]));
        }
        end = at + 3; // look for an earlier ".tmp" (they cannot overlap by more)
        if end < 4 {
            break;
        }
    }
    None
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

/// What a temporary stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalName<'a> {
    /// `{final}.tmp…`: the final file's name.
    Exact(&'a OsStr),
    /// The library's short temporary of a long name (see the module docs): the final file
    /// is the entry that [`Abbreviation::matches`]; `exact` is what the name says before
    /// `.tmp`, which is the final name if such an entry exists.
    Abbreviated(Abbreviation<'a>),
}

/// The start of a long final name and of its SHA-256, as an abbreviated temporary holds
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abbreviation<'a> {
    /// What precedes `.tmp` in the temporary's name.
    pub exact: &'a OsStr,
    prefix: &'a [u8],
    hash: &'a [u8],
}

impl Abbreviation<'_> {
    /// Whether `name` is the long final name this temporary abbreviates.
    pub fn matches(&self, name: &OsStr) -> bool {
        let b = name.as_bytes();
        b.len() > PREFIX_BYTES && b.starts_with(self.prefix) && hash_hex(b).as_bytes() == self.hash
    }

    /// The bytes every candidate final name starts with.
    pub fn prefix(&self) -> &OsStr {
        OsStr::from_bytes(self.prefix)
    }
}

fn hash_hex(b: &[u8]) -> String {
    let digest = Sha256::digest(b);
    let mut s = String::with_capacity(HASH_HEX);
    for byte in &digest[..HASH_HEX / 2] {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// If `name` is a temporary, what it stands for.
pub fn temporary_of(name: &OsStr) -> Option<FinalName<'_>> {
    let f = temp_final_name(name)?;
    let b = f.as_bytes();
    let abbreviated = b.len() == PREFIX_BYTES + 1 + HASH_HEX
        && b[PREFIX_BYTES] == b'~'
        && b[PREFIX_BYTES + 1..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
    Some(if abbreviated {
        FinalName::Abbreviated(Abbreviation {
            exact: f,
            prefix: &b[..PREFIX_BYTES],
            hash: &b[PREFIX_BYTES + 1..],
        })
    } else {
        FinalName::Exact(f)
    })
}

/// The library's temporary for `final_name`: `{final}.tmp.{unique}`, or the abbreviated
/// form when that would exceed [`TEMP_NAME_BYTES_MAX`].
pub(crate) fn temp_name_for(final_name: &OsStr, unique: &str) -> OsString {
    let f = final_name.as_bytes();
    let mut out = Vec::with_capacity(TEMP_NAME_BYTES_MAX);
    if f.len() + ".tmp.".len() + unique.len() <= TEMP_NAME_BYTES_MAX {
        out.extend_from_slice(f);
    } else {
        out.extend_from_slice(&f[..PREFIX_BYTES.min(f.len())]);
        out.push(b'~');
        out.extend_from_slice(hash_hex(f).as_bytes());
    }
    out.extend_from_slice(b".tmp.");
    out.extend_from_slice(unique.as_bytes());
    OsString::from_vec(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fin(s: &str) -> Option<&str> {
        temp_final_name(OsStr::new(s)).map(|f| f.to_str().unwrap())
    }

    #[test]
    fn temporaries_and_their_finals() {
        assert_eq!(fin("a.json.tmp"), Some("a.json"));
        assert_eq!(fin("a.json.tmp.1"), Some("a.json"));
        assert_eq!(fin("ntf_a.json.tmp.4242.9f3a"), Some("ntf_a.json"));
        assert_eq!(fin("a.tmp.json.tmp"), Some("a.tmp.json"));
        assert_eq!(fin("a.tmp.x.tmp."), Some("a"));
        assert_eq!(fin("x.tmp.tmp"), Some("x.tmp"));
        for not in [
            "a.json.tmpl",
            "x.tmpfoo",
            "x.tmp.",
            ".tmp",
            ".tmp.1",
            "tmp",
            "",
            "a.json",
        ] {
            assert_eq!(fin(not), None, "{not:?}");
        }
    }

    #[test]
    fn long_names_get_abbreviated_temporaries_that_map_back() {
        let long = format!("evt_{}.json", "é".repeat(120));
        assert!(long.len() > 240);
        let t = temp_name_for(OsStr::new(&long), "4242-0-ff");
        assert!(t.len() <= TEMP_NAME_BYTES_MAX);
        let Some(FinalName::Abbreviated(a)) = temporary_of(&t) else {
            panic!("{t:?}")
        };
        assert!(a.matches(OsStr::new(&long)));
        assert!(!a.matches(OsStr::new(&format!("{long}x"))));
        let short = temp_name_for(OsStr::new("a.json"), "1-2-3");
        assert_eq!(short, "a.json.tmp.1-2-3");
        assert_eq!(
            temporary_of(&short),
            Some(FinalName::Exact(OsStr::new("a.json")))
        );
    }
}
