//! Running tools: the [`ToolRegistry`] and the
//! [`ToolGrants`] that decide which dangerous tools a caller may use.

mod grants;
mod registry;

pub use grants::ToolGrants;
pub use registry::{RegistryError, ToolRegistry, ToolRegistryBuilder};
