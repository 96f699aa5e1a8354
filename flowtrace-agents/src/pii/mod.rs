//! Redaction of personal data and credentials from events, before any sink
//! or live subscriber sees them.
//!
//! - [`Detector`] finds emails, phone numbers, SSN-like numbers and
//!   Luhn-checked card numbers ([`PiiKind`]).
//! - [`PiiRedactor`] is the [`EventRedactor`](flowtrace_core::EventRedactor)
//!   to install with [`RunConfig::redactor`](flowtrace_core::RunConfig::redactor):
//!   [`RedactionMode::Mask`] writes `[REDACTED_EMAIL]` and the like,
//!   [`RedactionMode::Tokenize`] writes stable tokens (`[EMAIL_1]`) that
//!   the host can reveal through its [`Vault`], and [`RedactionMode::Off`]
//!   leaves personal data. Credentials (API keys, auth headers, passwords,
//!   tokens, cookies) are removed in every mode.
//!
//! ```
//! use std::sync::Arc;
//! use flowtrace_agents::pii::{PiiRedactor, RedactionMode};
//! use flowtrace_core::RunConfig;
//!
//! let config = RunConfig::new().redactor(Arc::new(PiiRedactor::new(RedactionMode::Mask).unwrap()));
//! # let _ = config;
//! ```

mod credentials;
mod detect;
mod error;
mod redactor;
mod vault;

pub use credentials::{
    CREDENTIAL_KEY_SUFFIXES, CREDENTIAL_KEYS, CREDENTIAL_MASK, is_credential_key,
};
pub use detect::{Detector, PiiKind, PiiMatch, luhn_valid};
pub use error::PiiError;
pub use redactor::{MAX_SCANNED_STRING_BYTES, PiiRedactor, RedactionMode, TRUNCATION_MARKER};
pub use vault::{DEFAULT_VAULT_ENTRIES, MAX_VAULT_ENTRIES, Vault};
