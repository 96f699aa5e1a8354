//! JSON workflow and report benchmarks.
//!
//! | bench | figure |
//! |---|---|
//! | `workflow/load_compile/research` | `spec::load` (schema + semantic checks) and `compile` of `research.json` |
//! | `workflow/run/llm_chain_20` | one run of 20 chained `llm` nodes on the zero-latency simulated provider, cache off (divide by 20 for per step: templates, model call path, pricing, events, state merge) |
//! | `workflow/summary/llm_chain_20` | building the JSON run summary of that run |
//! | `report/render/100_steps` | rendering the HTML report of a 100-step run |

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flowtrace::report::{HtmlReport, ReportRun};
use flowtrace::trace::MemorySink;
use flowtrace::workflow::compile::{Runtime, compile};
use flowtrace::workflow::spec::load;
use flowtrace::workflow::summary::{WorkflowSummary, report_run};
use serde_json::{Value, json};

const RESEARCH: &str = include_str!("../examples/workflows/research.json");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// `n` chained llm nodes, each reading the previous one's output.
fn llm_chain(n: usize) -> String {
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let text = if i == 0 {
                "{{input.topic}}".to_string()
            } else {
                format!("{{{{node.n{}.output}}}}", i - 1)
            };
            json!({
                "id": format!("n{i}"), "type": "llm",
                "config": {"provider": "simulated", "model": "gpt-4o-mini", "cache": false,
                           "prompt": "Rewrite: {{text}}", "simulated": {"response": "step {{text}}",
                                         "usage": {"input": 20, "output": 5}}},
                "inputs": {"text": text}
            })
        })
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}))
        .collect();
    json!({"version": "1", "entry": "n0", "nodes": nodes, "edges": edges}).to_string()
}

fn bench_workflow(c: &mut Criterion) {
    let rt = runtime();
    let offline = Runtime::offline(".");
    let known = offline.known();

    let mut g = c.benchmark_group("workflow");
    g.bench_function("load_compile/research", |b| {
        b.iter(|| {
            let spec = load(black_box(RESEARCH), &known).unwrap();
            black_box(compile(&spec, &offline).unwrap());
        })
    });

    let chain = load(&llm_chain(20), &known).unwrap();
    let workflow = compile(&chain, &offline).unwrap();
    g.bench_function("run/llm_chain_20", |b| {
        b.to_async(&rt).iter(|| async {
            let out = workflow.run(json!({"topic": "x"}), |c| c).await.unwrap();
            black_box(out.summary.cost);
        })
    });
    let outcome = rt.block_on(workflow.run(json!({"topic": "x"}), |c| c));
    g.bench_function("summary/llm_chain_20", |b| {
        b.iter(|| black_box(WorkflowSummary::new(&chain, black_box(&outcome))))
    });
    g.finish();

    // A 100-step run with its events, rendered.
    let long = load(&llm_chain(100), &known).unwrap();
    let long_workflow = compile(&long, &offline).unwrap();
    let sink = MemorySink::new();
    let long_outcome =
        rt.block_on(long_workflow.run(json!({"topic": "x"}), |c| c.sink(sink.clone())));
    let run: ReportRun = report_run(&long, &long_outcome, sink.events());
    let report = HtmlReport::new("bench").run(run);
    let mut g = c.benchmark_group("report");
    g.bench_function("render/100_steps", |b| {
        b.iter(|| black_box(report.render().len()))
    });
    g.finish();
}

criterion_group!(benches, bench_workflow);
criterion_main!(benches);
