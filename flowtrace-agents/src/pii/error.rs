//! Errors of the PII module.

/// The redactor could not be set up.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PiiError {
    /// A built-in pattern did not compile.
    #[error("PII pattern {name:?} does not compile")]
    Pattern {
        /// The pattern's name (`email`, `card`, …).
        name: &'static str,
        /// The cause.
        #[source]
        source: regex::Error,
    },
}
