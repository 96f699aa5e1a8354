//! PII redaction: real graph runs with the redactor installed (sink and
//! live stream), tokenization through the vault, credentials in every mode,
//! and properties of the detectors and the redactor.

mod graph;
mod props;
