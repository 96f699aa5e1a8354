//! Building blocks of JSON workflows: the router rule language ([`rules`](crate::workflow::rules))
//! and substitution-only templates ([`template`](crate::workflow::template)). The loader that compiles
//! a JSON workflow onto the executor is not part of this release yet.
pub mod rules;
pub mod template;
