//! Paths and digests as text for logs and JSON: one line, always serializable.

use std::path::Path;

use sha2::{Digest, Sha256};

/// A path as text for logs and JSON: as it is when it is UTF-8 without control
/// characters, else quoted and escaped (`"evt_\xFF.json"`, `"a\nb"`), so that one
/// problem is always one line and every report serializes.
pub fn path_text(path: &Path) -> String {
    match path.to_str() {
        Some(s) => name_text(s),
        None => format!("{path:?}"),
    }
}

/// A name from the data (a user, event or session id, a file name, a note read from a
/// file) as text for logs: as it is without control characters, else quoted and escaped
/// like [`path_text`] (`"a\nb"`, `"\u{1b}[31m"`), so that no name can start a line of
/// its own or drive a terminal. JSON output keeps names exact (serde escapes them).
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::name_text;
/// assert_eq!(name_text("u1"), "u1");
/// assert_eq!(name_text("u\n2099 ok"), "\"u\\n2099 ok\"");
/// assert_eq!(name_text("\x1b[2J"), "\"\\u{1b}[2J\"");
/// ```
pub fn name_text(s: &str) -> String {
    if s.chars().any(char::is_control) {
        format!("{s:?}")
    } else {
        s.to_owned()
    }
}

/// Free text meant to be one line of a log (a reason, a detail, an error's chain, a line
/// read from another log), with every control character escaped (`\n`, `\t`,
/// `\u{1b}`) and nothing else changed: whatever names it quotes, it stays one line and
/// cannot drive a terminal. Text output applies it where free text is printed; JSON
/// keeps the text exact.
///
/// # Examples
/// ```
/// use tmpa_core::maintenance::line_text;
/// assert_eq!(line_text("user a b: gone"), "user a b: gone");
/// assert_eq!(line_text("user a\nb"), "user a\\nb");
/// assert_eq!(line_text("\x1b[2J"), "\\u{1b}[2J");
/// ```
pub fn line_text(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Serializes a path with [`path_text`] (serde refuses paths that are not UTF-8).
///
/// # Errors
/// Whatever the serializer returns for a string.
pub fn serialize_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path_text(path))
}
/// SHA-256 of `bytes` as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lower-case hex (a SHA-256 as receipts write it).
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
