//! The store's settings that are secrets (`AWS_SECRET_ACCESS_KEY`...), given to the client
//! by a program from a file rather than from its environment: tmpa-archive reads them
//! from a file only root may read, before it becomes the tree's owner, so that they are
//! never in any process's environment (docs/OPERATIONS.md "Archiving to an object
//! store").

use std::fmt;

/// `NAME=value` settings of the store's client, named as its environment would name them
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL`,
/// `GOOGLE_SERVICE_ACCOUNT`, `AZURE_STORAGE_ACCOUNT_KEY`, ...). They apply over the
/// environment's. `Debug` shows the names, never the values.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    pairs: Vec<(String, String)>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.names()).finish()
    }
}

impl Credentials {
    /// Reads the text of a credentials file: `NAME=value` lines as `/etc/default/tmpa`
    /// has them (no `export`, no spaces around `=`; a value may be in double or single
    /// quotes), `#` comments and empty lines.
    ///
    /// # Errors
    /// A message naming the first line that is none of these.
    ///
    /// # Examples
    /// ```
    /// use tmpa_core::Credentials;
    /// let c = Credentials::parse("# key\nAWS_ACCESS_KEY_ID=AK\nAWS_SECRET_ACCESS_KEY=\"s k\"\n").unwrap();
    /// assert_eq!(c.names().collect::<Vec<_>>(), ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]);
    /// assert!(!format!("{c:?}").contains("s k"), "never the values");
    /// assert!(Credentials::parse("export AWS_REGION=x").is_err());
    /// ```
    pub fn parse(text: &str) -> Result<Credentials, String> {
        let mut pairs = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("line {}: not NAME=value", i + 1);
            let (name, value) = line.split_once('=').ok_or_else(bad)?;
            let name_ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !name_ok {
                return Err(bad());
            }
            let value = ['"', '\'']
                .iter()
                .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
                .unwrap_or(value);
            pairs.push((name.to_owned(), value.to_owned()));
        }
        Ok(Credentials { pairs })
    }

    /// The settings' names.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.pairs.iter().map(|(n, _)| n.as_str())
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The settings whose name starts with `prefix`, as the client's configuration keys
    /// name them (`aws_secret_access_key`); the names of the others with that prefix
    /// that `key` does not know.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) fn keys<K: std::str::FromStr>(&self, prefix: &str) -> (Vec<(K, &str)>, Vec<&str>) {
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for (name, value) in self.pairs.iter().filter(|(n, _)| n.starts_with(prefix)) {
            match name.to_ascii_lowercase().parse::<K>() {
                Ok(k) => known.push((k, value.as_str())),
                Err(_) => unknown.push(name.as_str()),
            }
        }
        (known, unknown)
    }
}
