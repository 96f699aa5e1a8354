//! PII redaction: real graph runs with the redactor installed (sink and
//! live stream), tokenization through the vault, credentials in every mode,
//! and properties of the detectors and the redactor.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod graph;
mod props;
