//! Paths as text for logs and JSON: one line, always serializable.

use std::path::Path;

/// A path as text for logs and JSON: as it is when it is UTF-8 without control
/// characters, else quoted and escaped (`"evt_\xFF.json"`, `"a\nb"`), so that one
/// problem is always one line and every report serializes.
pub fn path_text(path: &Path) -> String {
    match path.to_str() {
        Some(s) if !s.chars().any(char::is_control) => s.to_owned(),
        _ => format!("{path:?}"),
    }
}

/// Serializes a path with [`path_text`] (serde refuses paths that are not UTF-8).
///
/// # Errors
/// Whatever the serializer returns for a string.
pub fn serialize_path<S: serde::Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&path_text(path))
}
