//! JSON workflows: the router rule language ([`rules`](crate::workflow::rules)),
//! substitution-only templates ([`template`](crate::workflow::template)), and the
//! workflow format itself ([`spec`](crate::workflow::spec): typed spec, JSON Schema and
//! load-time validation reporting every problem with a JSON pointer). Executing a loaded
//! workflow on the executor is the job of
//! `compile` (feature `providers`). Everything a workflow document controls is
//! bounded by [`limits`](crate::workflow::limits).
#[cfg(feature = "providers")]
pub mod compile;
pub mod limits;
pub mod pricing;
pub mod rules;
pub mod spec;
#[cfg(feature = "providers")]
pub mod summary;
pub mod template;
