//! MCP tools end to end: the real `mcp-server-time` over stdio, and a real
//! rmcp server over Streamable HTTP on 127.0.0.1.

#![cfg(feature = "mcp")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod http;
mod stdio_time;
mod support;
