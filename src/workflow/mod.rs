//! Building blocks of JSON workflows: the router rule language ([`rules`])
//! and substitution-only templates ([`template`]). The loader that compiles
//! a JSON workflow onto the executor is not part of this release yet.
pub mod rules;
pub mod template;
