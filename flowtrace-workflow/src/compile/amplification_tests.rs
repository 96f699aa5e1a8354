//! Template amplification (issue #3): small workflows that would render,
//! copy or store far more than they are, on every rendering path.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use flowtrace_core::trace::{EventKind, MemorySink};
use serde_json::json;

use super::test_support::{compile_value, node_failure, temp_dir};
use super::*;
use crate::limits::LimitKind;
use crate::template::TemplateErrorKind;

async fn run_failing(workflow: &CompiledWorkflow, input: Value) -> (NodeFailure, Duration) {
    let started = Instant::now();
    let failure = workflow.run(input, |c| c).await.unwrap_err();
    (node_failure(&failure), started.elapsed())
}

/// A `read` node reading `big.txt` (of `size` bytes) in `dir`.
fn with_big_file(name: &str, size: usize) -> (PathBuf, Runtime) {
    let dir = temp_dir(name);
    std::fs::write(dir.join("big.txt"), "x".repeat(size)).unwrap();
    let runtime = Runtime::offline(&dir);
    (dir, runtime)
}

fn read_node() -> Value {
    json!({ "id": "read", "type": "tool", "config": {"tool": "read_file", "path": "big.txt"} })
}

const CONTENT: &str = "{{node.read.output.content}}";

#[tokio::test]
async fn a_thousand_references_in_tool_arguments_stop_at_the_limits() {
    // A 4 MB output referenced 1,000 times: the first copy is over the
    // per-template limit.
    let (dir, runtime) = with_big_file("args-4mb", 4 * 1024 * 1024);
    let doc = json!({
        "version": "1", "entry": "read",
        "nodes": [ read_node(),
            { "id": "amplify", "type": "tool",
              "config": {"tool": "transform_json", "expression": "length(@)",
                         "input": vec![CONTENT; 1000]} } ],
        "edges": [ {"from": "read", "to": "amplify"} ]
    });
    assert!(doc.to_string().len() < 40_000);
    let workflow = compile_value(&doc, &runtime);
    let (failure, took) = run_failing(&workflow, json!({})).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(failure.node(), "amplify");
    let limit = failure.limit().unwrap();
    assert_eq!(limit.limit, LimitKind::TemplateOutputBytes);
    assert!(limit.value > limit.max);
    assert!(failure.to_string().contains("config.input.0"), "{failure}");

    // 900 KB fits one template, but not a thousand of them: the node's
    // total stops it.
    std::fs::write(dir.join("big.txt"), "x".repeat(900 * 1024)).unwrap();
    let (failure, _) = run_failing(&workflow, json!({})).await;
    let limit = failure.limit().unwrap();
    assert_eq!(limit.limit, LimitKind::NodeRenderBytes);
    assert_eq!(limit.max, Limits::DEFAULT.node_render_bytes as u64);
    let NodeFailure::Template { error, .. } = &failure else {
        panic!("{failure:?}")
    };
    assert_eq!(error.kind(), TemplateErrorKind::OutputTooLarge);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn many_inputs_and_the_prompt_built_from_them_are_bounded() {
    // 256 inputs, each a whole 900 KB output, into an llm node without a
    // prompt (its prompt is the inputs joined).
    let (dir, runtime) = with_big_file("inputs", 900 * 1024);
    let inputs: Map<String, Value> = (0..256)
        .map(|i| (format!("i{i}"), json!(CONTENT)))
        .collect();
    let doc = json!({
        "version": "1", "entry": "read",
        "nodes": [ read_node(),
            { "id": "ask", "type": "llm", "inputs": inputs,
              "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "ok"}} } ],
        "edges": [ {"from": "read", "to": "ask"} ]
    });
    let workflow = compile_value(&doc, &runtime);
    let (failure, took) = run_failing(&workflow, json!({})).await;
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(failure.limit().unwrap().limit, LimitKind::NodeRenderBytes);

    // Two inputs fit, but the prompt joining them would pass the
    // per-template limit.
    std::fs::write(dir.join("big.txt"), "x".repeat(600 * 1024)).unwrap();
    let doc = json!({
        "version": "1", "entry": "read",
        "nodes": [ read_node(),
            { "id": "ask", "type": "llm", "inputs": {"a": CONTENT, "b": CONTENT},
              "config": {"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "ok"}} } ],
        "edges": [ {"from": "read", "to": "ask"} ]
    });
    let workflow = compile_value(&doc, &runtime);
    let (failure, _) = run_failing(&workflow, json!({})).await;
    let NodeFailure::Template { field, error, .. } = &failure else {
        panic!("{failure:?}")
    };
    assert_eq!(field, "prompt");
    assert_eq!(error.limit().unwrap().limit, LimitKind::TemplateOutputBytes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn simulated_responses_and_system_prompts_are_bounded() {
    let (dir, runtime) = with_big_file("response", 300 * 1024);
    let doc = json!({
        "version": "1", "entry": "read",
        "nodes": [ read_node(),
            { "id": "ask", "type": "llm", "inputs": {"t": CONTENT},
              "config": {"provider": "simulated", "model": "gpt-4o-mini", "prompt": "hi",
                         "simulated": {"response": "{{t}}".repeat(10)}} } ],
        "edges": [ {"from": "read", "to": "ask"} ]
    });
    let workflow = compile_value(&doc, &runtime);
    let (failure, _) = run_failing(&workflow, json!({})).await;
    let NodeFailure::Template { field, .. } = &failure else {
        panic!("{failure:?}")
    };
    assert_eq!(field, "simulated.response");

    // Many fallbacks, each within the per-template limit: their total is
    // bounded by the node's.
    let fallbacks: Vec<Value> = (0..16)
        .map(|_| json!({"provider": "simulated", "model": "gpt-4o-mini", "simulated": {"response": "{{t}}{{t}}{{t}}"}}))
        .collect();
    let doc = json!({
        "version": "1", "entry": "read",
        "nodes": [ read_node(),
            { "id": "ask", "type": "llm", "inputs": {"t": CONTENT},
              "config": {"provider": "simulated", "model": "gpt-4o-mini", "prompt": "hi",
                         "system": "{{t}}{{t}}", "fallbacks": fallbacks} } ],
        "edges": [ {"from": "read", "to": "ask"} ]
    });
    let workflow = compile_value(&doc, &runtime);
    let (failure, _) = run_failing(&workflow, json!({})).await;
    assert_eq!(failure.limit().unwrap().limit, LimitKind::NodeRenderBytes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_single_placeholder_counts_the_value_it_copies() {
    // `{{input.rows}}` copies a JSON value: it is measured like text.
    let runtime = Runtime::offline(temp_dir("single")).with_limits(Limits {
        template_output_bytes: 1000,
        ..Limits::default()
    });
    let doc = json!({
        "version": "1", "entry": "pick",
        "nodes": [ { "id": "pick", "type": "tool",
            "config": {"tool": "transform_json", "input": "{{input.rows}}", "expression": "length(@)"} } ]
    });
    let workflow = compile_value(&doc, &runtime);
    let small = json!({"rows": vec![1; 100]});
    let out = workflow.run(small, |c| c).await.unwrap();
    assert_eq!(
        CompiledWorkflow::output(&out.state, "pick"),
        Some(&json!(100))
    );
    let (failure, _) = run_failing(&workflow, json!({"rows": vec![12345; 1000]})).await;
    let limit = failure.limit().unwrap();
    assert_eq!(limit.limit, LimitKind::TemplateOutputBytes);
    assert_eq!(limit.max, 1000);
    assert!(limit.at_least && limit.value > 1000);
}

/// A tool that returns `size` bytes of text.
struct Big {
    size: usize,
}

#[async_trait::async_trait]
impl Tool for Big {
    fn name(&self) -> &str {
        "big"
    }
    fn description(&self) -> &str {
        "returns a large string"
    }
    fn parameters(&self) -> Value {
        json!({"type": "object"})
    }
    async fn call(&self, _args: Value) -> Result<Value, flowtrace_core::ToolError> {
        Ok(json!({"text": "y".repeat(self.size)}))
    }
}

#[tokio::test]
async fn tool_results_over_the_limit_are_refused_and_not_stored() {
    let runtime = Runtime::new()
        .with_tool(Arc::new(Big { size: 5000 }))
        .with_limits(Limits {
            tool_output_bytes: 4096,
            ..Limits::default()
        });
    let doc = json!({
        "version": "1", "entry": "call",
        "nodes": [ { "id": "call", "type": "tool", "config": {"tool": "big"} } ]
    });
    let workflow = compile_value(&doc, &runtime);
    let sink = MemorySink::new();
    let failure = workflow
        .run(json!({}), |c| c.sink(sink.clone()))
        .await
        .unwrap_err();
    let failure = node_failure(&failure);
    let NodeFailure::Limit { field, error, .. } = &failure else {
        panic!("{failure:?}")
    };
    assert_eq!(field, "tool `big`");
    assert_eq!(error.limit, LimitKind::ToolOutputBytes);
    assert_eq!(error.max, 4096);
    // The trace has the error, not the oversized result.
    let responses: Vec<_> = sink
        .events()
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ToolResponse { output, error, .. } => Some((output, error)),
            _ => None,
        })
        .collect();
    assert_eq!(responses.len(), 1);
    assert!(responses[0].0.is_none());
    assert!(
        responses[0]
            .1
            .as_deref()
            .unwrap()
            .contains("tool_output_bytes")
    );

    // Under the limit it is stored.
    let runtime = Runtime::new().with_tool(Arc::new(Big { size: 100 }));
    let workflow = compile_value(&doc, &runtime);
    let out = workflow.run(json!({}), |c| c).await.unwrap();
    assert_eq!(
        CompiledWorkflow::output(&out.state, "call").unwrap()["text"]
            .as_str()
            .map(str::len),
        Some(100)
    );
}

#[tokio::test]
async fn read_file_uses_the_runtime_limit() {
    let dir = temp_dir("read-limit");
    std::fs::write(dir.join("big.txt"), "x".repeat(2000)).unwrap();
    let runtime = Runtime::offline_with_limits(
        &dir,
        Limits {
            read_file_bytes: 1000,
            ..Limits::default()
        },
    );
    let doc = json!({"version": "1", "entry": "read", "nodes": [read_node()]});
    let workflow = compile_value(&doc, &runtime);
    let failure = workflow.run(json!({}), |c| c).await.unwrap_err();
    assert!(
        failure
            .error
            .report()
            .to_string()
            .contains("1000-byte limit"),
        "{}",
        failure.error.report()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn transform_json_bounds_its_evaluation_by_the_tool_output_limit() {
    let runtime = Runtime::offline_with_limits(
        ".",
        Limits {
            tool_output_bytes: 1000,
            ..Limits::default()
        },
    );
    let doc = json!({"version": "1", "entry": "t", "nodes": [{"id": "t", "type": "tool",
        "config": {"tool": "transform_json", "input": "{{input}}", "expression": "[@,@,@,@]"}}]});
    let workflow = compile_value(&doc, &runtime);
    let failure = workflow
        .run(json!({"a": "x".repeat(300)}), |c| c)
        .await
        .unwrap_err();
    // Refused by the tool before evaluating, not after by the runtime.
    assert!(
        failure
            .error
            .report()
            .to_string()
            .contains("over the `max_output_bytes` limit of 1000 bytes"),
        "{}",
        failure.error.report()
    );
}

#[tokio::test]
async fn what_a_run_renders_and_receives_is_bounded_across_parallel_nodes() {
    // A router fanning out to 200 nodes in parallel, each rendering the
    // whole 900 KB output: each node is within its own limits, the run is
    // not.
    let (dir, runtime) = with_big_file("fanout", 900 * 1024);
    let mut nodes = vec![
        read_node(),
        json!({"id": "fan", "type": "router", "config": {"rule": "'all'", "fanout": true}}),
    ];
    let mut edges = vec![json!({"from": "read", "to": "fan"})];
    for i in 0..200 {
        nodes.push(json!({"id": format!("n{i}"), "type": "tool",
            "config": {"tool": "transform_json", "input": CONTENT, "expression": "length(@)"}}));
        edges.push(json!({"from": "fan", "to": format!("n{i}")}));
    }
    let doc = json!({"version": "1", "entry": "read", "nodes": nodes, "edges": edges,
                     "parallel": true, "maxConcurrency": 1024});
    let workflow = compile_value(&doc, &runtime);
    let (failure, took) = run_failing(&workflow, json!({})).await;
    assert!(took < Duration::from_secs(10), "{took:?}");
    let limit = failure.limit().unwrap();
    assert_eq!(limit.limit, LimitKind::RunBytes, "{failure}");
    assert_eq!(limit.max, Limits::DEFAULT.run_bytes as u64);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn tool_results_count_against_the_run() {
    // Each read is within the tool output limit; together they are not.
    let dir = temp_dir("run-reads");
    std::fs::write(dir.join("big.txt"), "x".repeat(300 * 1024)).unwrap();
    let runtime = Runtime::offline(&dir).with_limits(Limits {
        run_bytes: 1024 * 1024,
        ..Limits::default()
    });
    let nodes: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("r{i}"), "type": "tool", "config": {"tool": "read_file", "path": "big.txt"}}))
        .collect();
    let edges: Vec<Value> = (1..10)
        .map(|i| json!({"from": format!("r{}", i - 1), "to": format!("r{i}")}))
        .collect();
    let doc = json!({"version": "1", "entry": "r0", "nodes": nodes, "edges": edges});
    let workflow = compile_value(&doc, &runtime);
    let failure = workflow.run(json!({}), |c| c).await.unwrap_err();
    let failure = node_failure(&failure);
    assert_eq!(failure.node(), "r3");
    let limit = failure.limit().unwrap();
    assert_eq!(limit.limit, LimitKind::RunBytes);
    assert_eq!(limit.max, 1024 * 1024);
    // Another run starts afresh.
    let again = workflow.run(json!({}), |c| c).await.unwrap_err();
    assert_eq!(node_failure(&again).node(), "r3");
    let _ = std::fs::remove_dir_all(&dir);
}
