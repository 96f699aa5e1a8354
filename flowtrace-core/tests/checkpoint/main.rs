//! The checkpoint stores: the conformance kit, the file store facing hostile
//! files, and the file store's memory bound.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod conformance;
mod file_store_hostile;
mod memory;
