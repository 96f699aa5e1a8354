//! pii.
