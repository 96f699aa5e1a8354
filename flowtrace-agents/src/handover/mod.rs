//! handover.
