#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use flowtrace_core::checkpoint::MemoryCheckpointer;
use flowtrace_core::exec::Command;
use flowtrace_core::trace::{EventKind, MemorySink};
use flowtrace_core::{Cost, PriceTable, Pricing, RunStatus, StepStatus, TokenUsage};
use serde_json::json;

use super::test_support::{compile_json, node_failure, temp_dir};
use super::*;
use crate::spec::load;

const RESEARCH: &str = include_str!("../../../examples/workflows/research.json");

fn price(provider: &str, model: &str, input: u64, output: u64) -> Cost {
    PriceTable::builtin()
        .price(provider, model)
        .unwrap()
        .cost(&TokenUsage::new(input, output))
        .unwrap()
}

#[tokio::test]
async fn research_runs_offline_with_fallback_routing_and_cache() {
    let dir = temp_dir("research");
    std::fs::write(
        dir.join("notes.md"),
        "Three approaches to vector search, with benchmarks.",
    )
    .unwrap();
    let runtime = Runtime::offline(&dir);
    let workflow = compile_json(RESEARCH, &runtime);
    let config = workflow.config();
    assert_eq!(config.get_parallel(), Some(4));
    assert_eq!(config.get_budget().max_cost, Some("0.25".parse().unwrap()));
    assert_eq!(config.get_budget().max_node_executions, Some(20));
    assert_eq!(config.get_budget().max_tokens, Some(20000));
    assert_eq!(
        config.get_budget().max_duration,
        Some(Duration::from_secs(120))
    );

    let input = json!({"notes_path": "notes.md", "topic": "vector search"});
    let sink = MemorySink::new();
    let out = workflow
        .run(input.clone(), |c| c.sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.summary.status, RunStatus::Succeeded);
    // The primary is rate limited three times: retried twice with back-off
    // (200 ms, then 400 ms), then the chain falls back to the second model.
    let events = sink.events();
    let retries: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Retry {
                failed_attempt,
                delay_ms,
                error,
            } => Some((
                e.node.clone().unwrap(),
                *failed_attempt,
                *delay_ms,
                error.clone(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(retries.len(), 2, "{retries:?}");
    assert!(retries.iter().all(|r| r.0 == "summarize"));
    assert_eq!((retries[0].1, retries[0].2), (1, 200));
    assert_eq!((retries[1].1, retries[1].2), (2, 400));
    assert!(
        retries[0]
            .3
            .contains("simulated model \"gpt-4o-mini\" failed (rate_limited)"),
        "{}",
        retries[0].3
    );
    let fallbacks: Vec<_> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Fallback {
                from_model,
                to_model,
                reason,
                ..
            } => Some((from_model.clone(), to_model.clone(), reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        fallbacks,
        [(
            "gpt-4o-mini".to_string(),
            "claude-3-5-haiku".to_string(),
            "rate_limited".to_string()
        )]
    );
    let record = out.summary.steps_of("summarize").next().unwrap();
    assert_eq!(
        (record.attempts, record.call_retries, record.fallbacks),
        (1, 2, 1)
    );
    assert_eq!(record.model.as_deref(), Some("claude-3-5-haiku"));
    assert!(sink.kinds().contains(&"tool.response"));

    let notes = CompiledWorkflow::output(&out.state, "research").unwrap();
    assert_eq!(
        notes["content"],
        "Three approaches to vector search, with benchmarks."
    );
    let summary = CompiledWorkflow::output(&out.state, "summarize")
        .and_then(Value::as_str)
        .unwrap()
        .to_string();
    assert!(
        summary.starts_with("Summary (vector search): most failures come from tool calls"),
        "{summary}"
    );
    // The fallback's summary is long: the router takes the deep branch.
    assert!(summary.chars().count() > 120);
    let (taken, skipped, taken_cost) = (
        "deep",
        "shallow",
        price("simulated", "claude-3-5-sonnet", 900, 650),
    );
    let branch = CompiledWorkflow::output(&out.state, "decide").unwrap();
    assert_eq!(branch, taken);
    assert_eq!(
        out.summary.steps_of(taken).next().unwrap().status,
        StepStatus::Succeeded
    );
    assert_eq!(
        out.summary.steps_of(skipped).next().unwrap().status,
        StepStatus::Skipped
    );
    assert!(CompiledWorkflow::output(&out.state, skipped).is_none());
    assert!(CompiledWorkflow::output(&out.state, taken).is_some());

    let expected = price("simulated", "claude-3-5-haiku", 1900, 180) + taken_cost;
    assert!(expected > Cost::ZERO);
    assert_eq!(out.summary.cost, expected);

    // Same runtime cache: every model call is a hit and the run is free.
    let sink2 = MemorySink::new();
    let again = workflow
        .run(input, |c| c.sink(sink2.clone()))
        .await
        .unwrap();
    assert_eq!(again.summary.status, RunStatus::Succeeded);
    assert_eq!(again.summary.cost, Cost::ZERO);
    let kinds2 = sink2.kinds();
    assert_eq!(kinds2.iter().filter(|k| **k == "cache.hit").count(), 2);
    assert!(!kinds2.contains(&"fallback"));
    assert_eq!(
        CompiledWorkflow::output(&again.state, "summarize"),
        Some(&Value::String(summary))
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tool_nodes_read_files_and_transform_json() {
    let dir = temp_dir("tool");
    std::fs::write(dir.join("data.txt"), "hello").unwrap();
    let runtime = Runtime::offline(&dir);
    let workflow = compile_json(
        r#"{
          "version": "1", "entry": "read",
          "nodes": [
            { "id": "read", "type": "tool", "config": {"tool": "read_file", "path": "{{input.file}}"} },
            { "id": "pick", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{node.read.output}}", "expression": "bytes"} }
          ],
          "edges": [ { "from": "read", "to": "pick" } ]
        }"#,
        &runtime,
    );
    let out = workflow
        .run(json!({"file": "data.txt"}), |c| c)
        .await
        .unwrap();
    assert_eq!(
        CompiledWorkflow::output(&out.state, "read").unwrap()["content"],
        "hello"
    );
    assert_eq!(
        CompiledWorkflow::output(&out.state, "pick"),
        Some(&json!(5))
    );
    // Paths outside the root are refused.
    let err = workflow
        .run(json!({"file": "../outside.txt"}), |c| c)
        .await
        .unwrap_err();
    assert_eq!(err.summary.status, RunStatus::Failed);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn approval_interrupts_and_resumes() {
    let runtime = Runtime::offline(temp_dir("approval"));
    let workflow = compile_json(
        r#"{
          "version": "1", "entry": "draft",
          "nodes": [
            { "id": "draft", "type": "llm",
              "config": {"provider": "simulated", "model": "gpt-4o-mini",
                         "simulated": {"response": "Refund {{amount}} dollars", "usage": {"input": 10, "output": 5}}},
              "inputs": {"amount": "{{input.amount}}"} },
            { "id": "approve", "type": "approval",
              "config": {"message": "Approve: {{node.draft.output}}"} },
            { "id": "send", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{node.approve.output}}", "expression": "amount"} }
          ],
          "edges": [ { "from": "draft", "to": "approve" }, { "from": "approve", "to": "send" } ]
        }"#,
        &runtime,
    );
    let store = Arc::new(MemoryCheckpointer::new());
    let with_store = |c: RunConfig| c.checkpointer(store.clone()).thread("t-approval");
    let paused = workflow
        .run(json!({"amount": 42}), with_store)
        .await
        .unwrap();
    assert_eq!(paused.summary.status, RunStatus::Interrupted);
    assert_eq!(
        CompiledWorkflow::output(&paused.state, "draft"),
        Some(&json!("Refund 42 dollars"))
    );
    assert!(CompiledWorkflow::output(&paused.state, "send").is_none());
    let interrupt = paused.interrupt().cloned().unwrap();
    assert_eq!(interrupt.node.as_str(), "approve");

    let done = workflow
        .resume_with(
            Command::approve(interrupt.id, json!({"amount": 40})).by("alice"),
            with_store,
        )
        .await
        .unwrap();
    assert_eq!(done.summary.status, RunStatus::Succeeded);
    assert_eq!(
        CompiledWorkflow::output(&done.state, "approve"),
        Some(&json!({"amount": 40}))
    );
    assert_eq!(
        CompiledWorkflow::output(&done.state, "send"),
        Some(&json!(40))
    );
}

#[tokio::test]
async fn router_without_matching_edge_ends_the_run() {
    let runtime = Runtime::offline(temp_dir("router"));
    let workflow = compile_json(
        r#"{
          "version": "1", "entry": "route",
          "nodes": [
            { "id": "route", "type": "router", "config": {"rule": "n > 10 ? 'big' : 'small'"},
              "inputs": {"n": "{{input.n}}"} },
            { "id": "big", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{input}}", "expression": "n"} }
          ],
          "edges": [ { "from": "route", "to": "big", "when": "branch == 'big'" } ]
        }"#,
        &runtime,
    );
    let big = workflow.run(json!({"n": 20}), |c| c).await.unwrap();
    assert_eq!(
        CompiledWorkflow::output(&big.state, "big"),
        Some(&json!(20))
    );
    assert_eq!(
        big.state.get(&router_key("route")),
        Some(&json!({"branch": "big", "next": ["big"]}))
    );
    let small = workflow.run(json!({"n": 2}), |c| c).await.unwrap();
    assert_eq!(small.summary.status, RunStatus::Succeeded);
    assert_eq!(
        CompiledWorkflow::output(&small.state, "route"),
        Some(&json!("small"))
    );
    assert!(CompiledWorkflow::output(&small.state, "big").is_none());
    assert_eq!(
        small.state.get(&router_key("route")),
        Some(&json!({"branch": "small", "next": []}))
    );
}

#[tokio::test]
async fn fanout_routers_take_every_edge_whose_condition_holds() {
    let runtime = Runtime::offline(temp_dir("fanout"));
    let doc = |fanout: bool| {
        json!({
          "version": "1", "entry": "triage", "parallel": true,
          "nodes": [
            { "id": "triage", "type": "router",
              "config": {"rule": "amount > 1000 ? 'large' : 'small'", "fanout": fanout},
              "inputs": {"amount": "{{input.amount}}", "country": "{{input.country}}"} },
            { "id": "finance", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{input}}", "expression": "amount"} },
            { "id": "legal", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{input}}", "expression": "country"} },
            { "id": "standard", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{input}}", "expression": "'ok'"} },
            { "id": "merge", "type": "tool",
              "config": {"tool": "transform_json", "input": "{{input}}", "expression": "'merged'"} }
          ],
          "edges": [
            { "from": "triage", "to": "finance", "when": "branch == 'large'" },
            { "from": "triage", "to": "legal", "when": "country != 'US'" },
            { "from": "triage", "to": "standard", "when": "branch == 'small'" },
            { "from": "finance", "to": "merge" },
            { "from": "legal", "to": "merge" },
            { "from": "standard", "to": "merge" }
          ]
        })
        .to_string()
    };
    let ran = |out: &RunOutput<JsonState>| -> Vec<String> {
        out.summary
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .map(|s| s.node.as_str().to_string())
            .collect()
    };

    let fanout = compile_json(&doc(true), &runtime);
    let out = fanout
        .run(json!({"amount": 5000, "country": "FR"}), |c| c)
        .await
        .unwrap();
    assert_eq!(ran(&out), ["triage", "finance", "legal", "merge"]);
    assert_eq!(
        out.state.get(&router_key("triage")),
        Some(&json!({"branch": "large", "next": ["finance", "legal"]}))
    );
    let triage = out.summary.steps_of("triage").next().unwrap();
    assert_eq!(triage.branch.as_deref(), Some("finance,legal"));
    assert_eq!(
        out.summary.steps_of("standard").next().unwrap().status,
        StepStatus::Skipped
    );
    // The join ran once, after both branches.
    assert_eq!(out.summary.steps_of("merge").count(), 1);

    let out = fanout
        .run(json!({"amount": 10, "country": "US"}), |c| c)
        .await
        .unwrap();
    assert_eq!(ran(&out), ["triage", "standard", "merge"]);

    // Without fanout the first edge that holds wins.
    let first = compile_json(&doc(false), &runtime);
    let out = first
        .run(json!({"amount": 5000, "country": "FR"}), |c| c)
        .await
        .unwrap();
    assert_eq!(ran(&out), ["triage", "finance", "merge"]);
}

#[test]
fn unknown_provider_is_a_compile_error() {
    let spec = load(RESEARCH, &Runtime::offline(".").known()).unwrap();
    let runtime = Runtime::new().with_tool(Arc::new(ReadFile::new(".")));
    let err = compile(&spec, &runtime).unwrap_err();
    assert!(matches!(err, CompileError::UnknownProvider { .. }), "{err}");
}

#[tokio::test]
async fn rendered_tool_arguments_are_validated_before_the_call() {
    let runtime = Runtime::offline(temp_dir("tool-args"));
    let workflow = compile_json(
        r#"{
          "version": "1", "entry": "read",
          "nodes": [
            { "id": "read", "type": "tool",
              "config": {"tool": "read_file", "path": "{{input.path}}", "format": "{{input.format}}"} }
          ],
          "edges": []
        }"#,
        &runtime,
    );
    let sink = MemorySink::new();
    let failure = workflow
        .run(json!({"path": 5, "format": "xml"}), |c| {
            c.sink(sink.clone())
        })
        .await
        .unwrap_err();
    let message = failure.error.report().to_string();
    assert!(message.contains("node `read`"), "{message}");
    assert!(
        message.contains("the arguments for tool `read_file` do not fit its schema"),
        "{message}"
    );
    assert!(message.contains("/path: "), "{message}");
    assert!(message.contains("/format: "), "{message}");
    // Refused before the call, and not retried.
    assert!(!sink.kinds().contains(&"tool.request"));
    assert_eq!(failure.summary.steps_of("read").next().unwrap().attempts, 1);
}

#[tokio::test]
async fn cache_entries_are_scoped_by_what_decides_the_reply() {
    let runtime = Runtime::offline(temp_dir("cache-scope"));
    // a and b send the same request but simulate different replies; c is a
    // copy of a, so it may be answered from a's entry.
    let node = |id: &str, response: &str| {
        json!({"id": id, "type": "llm", "config": {
            "provider": "simulated", "model": "gpt-4o-mini", "prompt": "same prompt",
            "simulated": {"response": response, "usage": {"input": 10, "output": 2}}}})
    };
    let doc = json!({
        "version": "1", "entry": "a",
        "nodes": [node("a", "from a"), node("b", "from b"), node("c", "from a")],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "c"}]
    });
    let workflow = compile_json(&doc.to_string(), &runtime);
    let sink = MemorySink::new();
    let out = workflow
        .run(json!({}), |c| c.sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(
        CompiledWorkflow::output(&out.state, "a"),
        Some(&json!("from a"))
    );
    assert_eq!(
        CompiledWorkflow::output(&out.state, "b"),
        Some(&json!("from b"))
    );
    assert_eq!(
        CompiledWorkflow::output(&out.state, "c"),
        Some(&json!("from a"))
    );
    let hits: Vec<_> = sink
        .events()
        .into_iter()
        .filter(|e| e.kind.name() == "cache.hit")
        .map(|e| e.node.unwrap().as_str().to_string())
        .collect();
    assert_eq!(hits, ["c"]);
}

#[tokio::test]
async fn a_slow_primary_times_out_per_call_and_falls_back() {
    let runtime = Runtime::offline(temp_dir("slow-primary"));
    let workflow = compile_json(
        r#"{
          "version": "1", "entry": "ask",
          "nodes": [
            { "id": "ask", "type": "llm",
              "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "slow", "latencyMs": 3000},
                         "fallbacks": [{"provider": "simulated", "model": "claude-3-5-haiku",
                                        "simulated": {"response": "fast", "latencyMs": 10}}]},
              "retry": {"maxAttempts": 3, "initialDelayMs": 10},
              "timeoutMs": 300 }
          ],
          "edges": []
        }"#,
        &runtime,
    );
    let sink = MemorySink::new();
    let out = workflow
        .run(json!({}), |c| c.sink(sink.clone()))
        .await
        .unwrap();
    // The primary's call is cut at the timeout, not at its 3 s latency
    // (measured between events: the first call in a debug build also
    // loads the token estimator, which says nothing about the timeout).
    let events = sink.events();
    let at = |name: &str| {
        events
            .iter()
            .find(|e| e.kind.name() == name)
            .map(|e| e.ts.unix_micros())
            .unwrap()
    };
    let waited_us = at("fallback") - at("llm.request");
    assert!(waited_us < 2_000_000, "{waited_us} µs");
    assert_eq!(
        CompiledWorkflow::output(&out.state, "ask"),
        Some(&json!("fast"))
    );
    let record = out.summary.steps_of("ask").next().unwrap();
    assert_eq!(
        (record.attempts, record.call_retries, record.fallbacks),
        (1, 0, 1)
    );
    let reasons: Vec<String> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::Fallback { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, ["timeout"]);
}

/// A runtime with provider `blocking`: its factory waits (up to 2 s) until
/// `parties` factory calls are inside it at once, and counts the calls that
/// saw them all.
fn meeting_runtime(parties: usize) -> (Runtime, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let inside = Arc::new(AtomicUsize::new(0));
    let met = Arc::new(AtomicUsize::new(0));
    let (i, m) = (inside.clone(), met.clone());
    let runtime = Runtime::offline(temp_dir("meeting")).with_provider(
        "blocking",
        Arc::new(move |_model: &str, _config: &Value| {
            i.fetch_add(1, Ordering::SeqCst);
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while i.load(Ordering::SeqCst) < parties && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if i.load(Ordering::SeqCst) >= parties {
                m.fetch_add(1, Ordering::SeqCst);
            }
            let model = flowtrace_providers::simulated::SimulatedModel::new(
                flowtrace_providers::simulated::SimulatedConfig::new().response("ok"),
            );
            Ok(Arc::new(model) as Arc<dyn ChatModel>)
        }),
    );
    (runtime, met)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_factories_run_outside_the_node_lock() {
    let (runtime, met) = meeting_runtime(2);
    let workflow = Arc::new(compile_json(
        r#"{ "version": "1", "entry": "ask",
             "nodes": [ { "id": "ask", "type": "llm",
                          "config": {"provider": "blocking", "model": "m", "cache": false} } ] }"#,
        &runtime,
    ));
    // Two runs of one node build their models at the same time: neither
    // factory call waits for the other.
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let w = workflow.clone();
            tokio::spawn(async move { w.run(json!({}), |c| c).await })
        })
        .collect();
    for run in runs {
        let out = run.await.unwrap().unwrap();
        assert_eq!(
            CompiledWorkflow::output(&out.state, "ask"),
            Some(&json!("ok"))
        );
    }
    assert_eq!(met.load(std::sync::atomic::Ordering::SeqCst), 2);
}

#[tokio::test]
async fn provider_factory_errors_keep_their_kind_and_source() {
    let runtime = Runtime::offline(temp_dir("factory-error")).with_provider(
        "keyless",
        Arc::new(|_model: &str, _config: &Value| {
            Err(
                ProviderFactoryError::missing_credential("KEYLESS_API_KEY is not set")
                    .with_source(std::env::VarError::NotPresent),
            )
        }),
    );
    let workflow = compile_json(
        r#"{ "version": "1", "entry": "ask",
             "nodes": [ { "id": "ask", "type": "llm",
                          "config": {"provider": "keyless", "model": "k-1"} } ] }"#,
        &runtime,
    );
    let failure = workflow.run(json!({}), |c| c).await.unwrap_err();
    let NodeFailure::Provider {
        node,
        provider,
        model,
        source,
    } = node_failure(&failure)
    else {
        panic!("not a provider failure")
    };
    assert_eq!(
        (node.as_str(), provider.as_str(), model.as_str()),
        ("ask", "keyless", "k-1")
    );
    assert_eq!(source.kind(), ProviderFactoryErrorKind::MissingCredential);
    // Each message once: the node's, the factory's, then the cause.
    let failure = NodeFailure::Provider {
        node,
        provider,
        model,
        source,
    };
    assert_eq!(
        failure.to_string(),
        "node `ask`: provider `keyless` could not build model `k-1`"
    );
    let source = std::error::Error::source(&failure).unwrap();
    assert_eq!(source.to_string(), "KEYLESS_API_KEY is not set");
    assert_eq!(
        source.source().unwrap().to_string(),
        std::env::VarError::NotPresent.to_string()
    );
}

#[test]
fn compile_errors_print_each_cause_once() {
    let runtime = Runtime::offline(temp_dir("compile-error"));
    let spec = crate::spec::WorkflowSpec::new(
        "r",
        vec![crate::spec::NodeSpec::new(
            "r",
            NodeKind::Router(crate::spec::RouterConfig::new("1 +")),
        )],
    );
    let error = compile(&spec, &runtime).unwrap_err();
    assert!(matches!(error, CompileError::Rule { .. }), "{error:?}");
    assert_eq!(error.to_string(), "node `r`, rule: invalid rule");
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(!error.to_string().contains(&cause));
    assert!(!cause.is_empty());
}
