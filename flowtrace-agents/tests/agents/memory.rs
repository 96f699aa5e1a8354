//! Conversation memory windows and the episodic store.

use std::sync::Arc;

use flowtrace_agents::agents::{ReasoningAgent, agent_node};
use flowtrace_agents::memory::{
    ConversationMemory, Episode, EpisodeOutcome, EpisodicStore, InMemoryEpisodicStore,
    MAX_GOAL_BYTES, MemoryErrorKind, WindowMemory,
};
use flowtrace_core::model::{Role, ToolCall};
use flowtrace_core::testing::ScriptedModel;
use flowtrace_core::{GraphBuilder, JsonState, Message, RunConfig, TokenUsage};
use serde_json::json;

use crate::support::registry;

fn call_turn(id: &str) -> Message {
    Message::assistant("").with_tool_calls(vec![ToolCall {
        id: id.into(),
        name: "search".into(),
        arguments: json!({}),
    }])
}

#[tokio::test]
async fn the_window_keeps_the_latest_messages_without_orphan_tool_results() {
    let memory = WindowMemory::new().max_messages(3);
    memory
        .append(
            "t",
            &[
                Message::user("q1"),
                call_turn("c1"),
                Message::tool_result("c1", "r1"),
                Message::assistant("a1"),
            ],
        )
        .await
        .unwrap();
    // Four messages, window of three: the user message goes; the window
    // then starts with the call turn.
    let kept = memory.messages("t").await.unwrap();
    assert_eq!(kept.len(), 3);
    assert_eq!(kept[0].tool_calls[0].id, "c1");

    memory.append("t", &[Message::user("q2")]).await.unwrap();
    // Dropping the call turn leaves its result orphaned: it goes too.
    let kept = memory.messages("t").await.unwrap();
    assert_eq!(kept, vec![Message::assistant("a1"), Message::user("q2")]);

    // Threads are separate; unknown threads are empty; clear forgets.
    assert!(memory.messages("other").await.unwrap().is_empty());
    memory.clear("t").await.unwrap();
    assert!(memory.messages("t").await.unwrap().is_empty());
}

#[tokio::test]
async fn the_window_is_bounded_by_tokens() {
    // One token per byte of content, to make the arithmetic visible.
    let memory = WindowMemory::new()
        .max_messages(None)
        .max_tokens(10)
        .token_counter(|m: &Message| m.content.len() as u64);
    memory
        .append("t", &[Message::user("aaaa"), Message::assistant("bbbb")])
        .await
        .unwrap();
    assert_eq!(memory.tokens("t"), 8);
    memory.append("t", &[Message::user("cc")]).await.unwrap();
    assert_eq!(memory.tokens("t"), 10, "exactly at the limit");
    assert_eq!(memory.messages("t").await.unwrap().len(), 3);
    memory.append("t", &[Message::user("d")]).await.unwrap();
    assert_eq!(memory.tokens("t"), 7);
    let kept: Vec<String> = memory
        .messages("t")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    assert_eq!(kept, ["bbbb", "cc", "d"]);
    // A message larger than the whole window is not kept.
    memory
        .append("t", &[Message::user("x".repeat(11))])
        .await
        .unwrap();
    assert!(memory.messages("t").await.unwrap().is_empty());
    assert_eq!(memory.tokens("t"), 0);
}

#[tokio::test]
async fn the_least_recently_used_thread_is_forgotten() {
    let memory = WindowMemory::new().max_threads(2);
    memory.append("a", &[Message::user("1")]).await.unwrap();
    memory.append("b", &[Message::user("2")]).await.unwrap();
    memory.messages("a").await.unwrap(); // "a" is now more recent than "b"
    memory.append("c", &[Message::user("3")]).await.unwrap();
    assert_eq!(memory.messages("a").await.unwrap().len(), 1);
    assert!(memory.messages("b").await.unwrap().is_empty());
    assert_eq!(memory.messages("c").await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_agent_node_keeps_the_thread_in_memory() {
    let memory = Arc::new(WindowMemory::new().max_messages(10));
    let model = Arc::new(
        ScriptedModel::new("openai")
            .reply("Nice to meet you, Ada.", TokenUsage::new(10, 5))
            .reply("Your name is Ada.", TokenUsage::new(20, 5)),
    );
    let agent = ReasoningAgent::new("chat", model.clone(), "gpt-4o-mini", registry(&[]));
    let graph = GraphBuilder::<JsonState>::new("chat")
        .add_node(
            "agent",
            agent_node(Arc::new(agent)).memory(memory.clone(), "thread"),
        )
        .set_entry("agent")
        .set_finish("agent")
        .compile()
        .unwrap();
    for text in ["I am Ada.", "What is my name?"] {
        let mut input = JsonState::new();
        input.values.insert("thread".into(), json!("t-1"));
        input.values.insert("messages".into(), json!(text));
        graph.invoke(input, RunConfig::new()).await.unwrap();
    }
    let second = &model.requests()[1].messages;
    let contents: Vec<&str> = second.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        contents,
        ["I am Ada.", "Nice to meet you, Ada.", "What is my name?"]
    );
    let kept = memory.messages("t-1").await.unwrap();
    assert_eq!(kept.len(), 4);
    assert_eq!(kept[3].role, Role::Assistant);
    assert_eq!(kept[3].content, "Your name is Ada.");
}

#[tokio::test]
async fn the_episodic_store_is_bounded_and_ranks_matches() {
    let store = InMemoryEpisodicStore::with_capacity(3);
    let ok = |a: &str| EpisodeOutcome::Succeeded { answer: a.into() };
    store
        .record(Episode::new("Convert EUR to USD", json!(1), ok("old")))
        .await
        .unwrap();
    store
        .record(Episode::new(
            "Weather in Paris tomorrow",
            json!(2),
            ok("rain"),
        ))
        .await
        .unwrap();
    store
        .record(Episode::new("Convert EUR to USD", json!(3), ok("1.08")))
        .await
        .unwrap();
    store
        .record(Episode::new("Paris hotel prices", json!(4), ok("high")))
        .await
        .unwrap();
    // Capacity 3: the first episode is gone.
    assert_eq!(store.len(), 3);
    let exact = store.exact("convert eur to  usd", 10).await.unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0].plan, json!(3));

    // Exact first, then by shared keywords, newest first among equals.
    store
        .record(Episode::new("Paris weather", json!(5), ok("sun")))
        .await
        .unwrap();
    let similar = store.similar("Paris weather", 10).await.unwrap();
    let plans: Vec<_> = similar.iter().map(|e| e.plan.clone()).collect();
    // Now holding 3 (EUR), 4 (Paris hotel), 5 (Paris weather, exact);
    // 2 (Paris weather tomorrow) was evicted.
    assert_eq!(plans, [json!(5), json!(4)]);
    assert_eq!(store.similar("Paris weather", 1).await.unwrap().len(), 1);
    assert!(
        store
            .similar("quantum chromodynamics", 10)
            .await
            .unwrap()
            .is_empty()
    );

    let long = "x".repeat(MAX_GOAL_BYTES + 1);
    let err = store
        .record(Episode::new(long, json!(0), ok("-")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, MemoryErrorKind::LimitExceeded);
    assert!(!err.is_retryable());
}
