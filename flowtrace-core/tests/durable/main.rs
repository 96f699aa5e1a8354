//! Durable execution: checkpoints per super-step, resume, interrupts and
//! human decisions, and crash recovery of real processes killed with
//! SIGKILL.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

mod human_in_the_loop;
mod kill_resume;
mod kill_resume_hitl;
mod runs;
