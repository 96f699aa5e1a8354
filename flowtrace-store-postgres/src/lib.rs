//! # flowtrace-store-postgres
//!
//! PostgreSQL storage for FlowTrace: a [`flowtrace_core::Checkpointer`] and a
//! [`flowtrace_core::TraceSink`] backed by sqlx.
//!
//! This release contains no store yet: the crate exists so the workspace
//! layout is final. The contracts it will implement live in
//! [`flowtrace_core::checkpoint`] and [`flowtrace_core::trace`].

pub use flowtrace_core::{checkpoint, trace};
