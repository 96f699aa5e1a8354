//! Agents: what a tool-calling loop costs as its conversation grows.
//!
//! This binary counts every byte allocated (`stats_alloc` as the global
//! allocator), so it holds only tests that measure, one at a time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::System;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use flowtrace_core::model::ToolCall;
use flowtrace_core::{
    Agent, ChatModel, ChatRequest, ChatResponse, ChatStream, GraphBuilder, JsonState, Message,
    ModelError, NodeContext, NodeOutput, RunConfig, TokenUsage, Tool, ToolError, ToolLoopAgent,
    node_fn,
};
use serde_json::json;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Bytes allocated (by any thread: this binary runs one test at a time on
/// a current-thread runtime) while `f` ran.
async fn allocated_by<F: std::future::Future>(f: F) -> (F::Output, usize) {
    let region = Region::new(GLOBAL);
    let out = f.await;
    let stats = region.change();
    (
        out,
        stats.bytes_allocated + stats.bytes_reallocated.max(0) as usize,
    )
}

// ===== A model that calls a tool a set number of times =====

/// Asks for the `echo` tool on every turn before the last, then answers.
/// Keeps nothing of the requests it gets.
struct Looping {
    tool_turns: u32,
    calls: AtomicU32,
}

#[async_trait]
impl ChatModel for Looping {
    fn provider(&self) -> &str {
        "test"
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ModelError> {
        let turn = self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = ChatResponse::text(request.model, "", TokenUsage::new(1, 1));
        if turn < self.tool_turns {
            let call = ToolCall {
                id: format!("c{turn}"),
                name: "echo".into(),
                arguments: json!({}),
            };
            Ok(reply.with_tool_calls(vec![call]))
        } else {
            Ok(ChatResponse::text("m", "done", TokenUsage::new(1, 1)))
        }
    }

    fn chat_stream(&self, request: ChatRequest) -> ChatStream<'_> {
        let _ = request;
        Box::pin(futures::stream::empty())
    }
}

struct Echo;

#[async_trait]
impl Tool for Echo {
    fn name(&self) -> &str {
        "echo"
    }
    fn description(&self) -> &str {
        "Answers ok."
    }
    fn parameters(&self) -> serde_json::Value {
        json!({"type": "object"})
    }
    async fn call(&self, _args: serde_json::Value) -> Result<serde_json::Value, ToolError> {
        Ok(json!("ok"))
    }
}

/// Runs a `ToolLoopAgent` of `tool_turns` tool calls (plus the answer) on a
/// conversation opening with a `prompt_bytes` user message; returns the
/// turns taken and the bytes the run allocated.
async fn agent_run(tool_turns: u32, prompt_bytes: usize) -> (u32, usize) {
    let model = Arc::new(Looping {
        tool_turns,
        calls: AtomicU32::new(0),
    });
    let agent = Arc::new(
        ToolLoopAgent::new("loop", model as Arc<dyn ChatModel>, "m")
            .tool(Arc::new(Echo))
            .max_turns(tool_turns + 1),
    );
    let turns = Arc::new(AtomicU32::new(0));
    let graph = {
        let turns = turns.clone();
        GraphBuilder::<JsonState>::new("agent")
            .add_node(
                "agent",
                node_fn(move |_s: Arc<JsonState>, ctx: NodeContext| {
                    let agent = agent.clone();
                    let turns = turns.clone();
                    async move {
                        let prompt = vec![Message::user("x".repeat(prompt_bytes))];
                        let out = agent.run(prompt, &ctx).await?;
                        turns.store(out.turns, Ordering::SeqCst);
                        Ok(NodeOutput::none())
                    }
                }),
            )
            .set_entry("agent")
            .set_finish("agent")
            .compile()
            .unwrap()
    };
    let (out, bytes) = allocated_by(graph.invoke(JsonState::default(), RunConfig::new())).await;
    out.unwrap();
    (turns.load(Ordering::SeqCst), bytes)
}

/// A run of 40 turns over a 1 MiB prompt allocates about the prompt once
/// (the prompt itself, plus a little per turn), not once per turn: the
/// history is shared with each turn's request, never copied into it. A loop
/// that cloned the history every turn would allocate 40 MiB here.
#[tokio::test]
async fn tool_loop_history_is_not_copied_every_turn() {
    const MIB: usize = 1 << 20;
    let (turns, small) = agent_run(39, 16).await;
    assert_eq!(turns, 40);
    let (turns, big) = agent_run(39, MIB).await;
    assert_eq!(turns, 40);
    // What the big prompt adds over the small one: the prompt itself (once)
    // and nothing that grows with the number of turns.
    let extra = big.saturating_sub(small);
    assert!(
        extra < 3 * MIB,
        "a 40-turn run over a 1 MiB prompt allocated {extra} bytes more than over a 16-byte one"
    );
}
