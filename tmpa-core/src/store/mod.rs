//! The archive tier: where archived chat sessions live when `{root}/tmpa.toml` names an
//! object store (`[archive] url = "s3://bucket/prefix"`), and the client that reaches it
//! (feature `object-store`).
//!
//! The configuration ([`ArchiveConfig`], [`StoreUrl`]) is read by every build; the client
//! ([`client::Store`]) only with the feature. A build without it that meets a tree whose
//! archives are in a store says so ([`crate::Error::StoreUnsupported`]) instead of
//! reporting those sessions missing.

#[cfg(feature = "object-store")]
pub(crate) mod client;
mod config;
mod credentials;
#[cfg(feature = "object-store")]
mod local;
#[cfg(feature = "object-store")]
mod object;

pub use config::{
    ArchiveConfig, CONFIG_NAME, ETC_CONFIG_DIR, StoreScheme, StoreUrl, TIMEOUT_SECS_DEFAULT,
};
#[cfg(feature = "maintenance")]
pub use config::{etc_config_dirs, is_whole, read_config_text};
pub use credentials::Credentials;
