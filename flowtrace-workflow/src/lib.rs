//! JSON workflows: the router rule language ([`rules`](crate::rules)),
//! substitution-only templates ([`template`](crate::template)), and the
//! workflow format itself ([`spec`](crate::spec): typed spec, JSON Schema and
//! load-time validation reporting every problem with a JSON pointer). Executing a loaded
//! workflow on the executor is the job of
//! [`compile`](crate::compile). Everything a workflow document controls is
//! bounded by [`limits`](crate::limits).
pub mod compile;
pub mod limits;
pub mod pricing;
pub mod rules;
pub mod spec;
pub mod summary;
pub mod template;
