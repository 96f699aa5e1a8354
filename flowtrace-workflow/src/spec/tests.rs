use serde_json::{Value, json};

use super::load::{SCHEMA, compile_schema};
use super::*;
use crate::limits::{LimitKind, Limits};

/// The example workflow of the format description: valid.
fn base() -> Value {
    json!({
        "version": "1", "entry": "ingest",
        "nodes": [
            { "id": "ingest", "type": "tool", "name": "FetchDocs",
              "config": {"tool": "read_file", "path": "docs.txt"} },
            { "id": "summarize", "type": "llm", "name": "Summarize",
              "config": {"provider": "openai", "model": "gpt-4o-mini", "system": "Be concise",
                         "prompt": "Summarize: {{node.ingest.output.content}}"},
              "inputs": {"text": "{{node.ingest.output.content}}"} },
            { "id": "decide", "type": "router", "name": "Decider",
              "config": {"rule": "len(text)>2000 ? 'deep' : 'shallow'"},
              "inputs": {"text": "{{node.summarize.output}}"} },
            { "id": "deep", "type": "llm",
              "config": {"provider": "anthropic", "model": "claude-3-5-sonnet"},
              "inputs": {"text": "{{node.summarize.output}}"} }
        ],
        "edges": [
            { "from": "ingest", "to": "summarize" },
            { "from": "summarize", "to": "decide" },
            { "from": "decide", "to": "deep", "when": "branch=='deep'" }
        ],
        "limits": { "maxNodes": 20, "maxSteps": 50, "maxTokens": 150000, "maxCostUsd": 0.5,
                    "timeoutSeconds": 120 },
        "parallel": true, "maxConcurrency": 4
    })
}

fn problems_of(v: &Value) -> Vec<Problem> {
    match load(&v.to_string(), &Known::default()) {
        Ok(_) => Vec::new(),
        Err(e) => e.into_problems(),
    }
}

fn dump(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Finds the problem at `pointer` whose message contains `fragment`.
fn find<'a>(problems: &'a [Problem], pointer: &str, fragment: &str) -> &'a Problem {
    problems
        .iter()
        .find(|p| p.pointer == pointer && p.message.contains(fragment))
        .unwrap_or_else(|| {
            panic!(
                "no problem at `{pointer}` containing `{fragment}`; got:\n{}",
                dump(problems)
            )
        })
}

/// Asserts `v` has exactly one problem, at `pointer`, containing `fragment`.
fn only(v: &Value, pointer: &str, fragment: &str) -> Problem {
    let problems = problems_of(v);
    assert_eq!(
        problems.len(),
        1,
        "expected one problem, got:\n{}",
        dump(&problems)
    );
    find(&problems, pointer, fragment).clone()
}

// ---------------------------------------------------------------------------
// Valid documents
// ---------------------------------------------------------------------------

#[test]
fn schema_compiles() {
    assert!(SCHEMA.is_ok(), "{:?}", SCHEMA.as_ref().err());
}

#[test]
fn broken_schema_is_an_error_not_a_panic() {
    assert!(compile_schema("{").is_err());
    assert!(compile_schema(r#"{"type": 5}"#).is_err());
    assert!(compile_schema(r#"{"properties": {"a": {"minimum": "x"}}}"#).is_err());
}

#[test]
fn valid_example_loads_into_typed_spec() {
    let spec = load(&base().to_string(), &Known::default()).unwrap();
    assert_eq!(spec.version, "1");
    assert_eq!(spec.entry, "ingest");
    assert_eq!(spec.nodes.len(), 4);
    assert!(spec.parallel);
    assert_eq!(spec.max_concurrency, Some(4));

    let ingest = spec.node("ingest").unwrap();
    assert_eq!(ingest.name.as_deref(), Some("FetchDocs"));
    let NodeKind::Tool(tool) = &ingest.kind else {
        panic!("not a tool: {ingest:?}")
    };
    assert_eq!(tool.tool, "read_file");
    assert_eq!(tool.args.get("path"), Some(&json!("docs.txt")));
    assert!(!tool.args.contains_key("tool"));

    let summarize = spec.node("summarize").unwrap();
    assert_eq!(summarize.node_type(), NodeType::Llm);
    let NodeKind::Llm(llm) = &summarize.kind else {
        panic!("not an llm: {summarize:?}")
    };
    assert_eq!(llm.provider, "openai");
    assert_eq!(llm.model, "gpt-4o-mini");
    assert_eq!(llm.system.as_deref(), Some("Be concise"));
    assert!(llm.cache, "cache defaults to true");
    assert!(llm.fallbacks.is_empty());
    assert_eq!(summarize.inputs["text"], "{{node.ingest.output.content}}");

    let NodeKind::Router(router) = &spec.node("decide").unwrap().kind else {
        panic!("not a router")
    };
    assert_eq!(router.rule, "len(text)>2000 ? 'deep' : 'shallow'");

    assert_eq!(spec.edges.len(), 3);
    assert_eq!(spec.edges[2].when.as_deref(), Some("branch=='deep'"));
    assert_eq!(spec.outgoing("decide").count(), 1);

    let limits = spec.limits.unwrap();
    assert_eq!(limits.max_nodes, Some(20));
    assert_eq!(limits.max_steps, Some(50));
    assert_eq!(limits.max_tokens, Some(150_000));
    assert_eq!(limits.timeout_seconds, Some(120));
    // 0.5 dollars, exactly: 5 × 10¹¹ picodollars.
    assert_eq!(
        limits.max_cost_usd,
        Some(Cost::from_picodollars(500_000_000_000))
    );
}

#[test]
fn typed_spec_serializes_back_to_an_equivalent_document() {
    let spec = load(&base().to_string(), &Known::default()).unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    let again = load(&json, &Known::default()).unwrap();
    assert_eq!(spec, again);
    let value: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        value["nodes"][0]["config"],
        json!({"tool": "read_file", "path": "docs.txt"})
    );
    assert_eq!(value["limits"]["maxCostUsd"], json!("0.5"));
}

#[test]
fn max_cost_is_exact() {
    for (written, picos) in [
        (json!(0.1), 100_000_000_000u128),
        (json!(0.3), 300_000_000_000),
        (json!("0.000001"), 1_000_000),
        (json!("$2.50"), 2_500_000_000_000),
        (json!(3), 3_000_000_000_000),
    ] {
        let mut v = base();
        v["limits"]["maxCostUsd"] = written.clone();
        let spec = load(&v.to_string(), &Known::default()).unwrap();
        assert_eq!(
            spec.limits.and_then(|l| l.max_cost_usd),
            Some(Cost::from_picodollars(picos)),
            "{written}"
        );
    }
}

#[test]
fn research_example_loads_cleanly() {
    let text = include_str!("../../../examples/workflows/research.json");
    let spec = match load(text, &Known::default()) {
        Ok(spec) => spec,
        Err(e) => panic!("research.json does not load:\n{e}"),
    };
    assert_eq!(spec.entry, "research");
    assert_eq!(spec.nodes.len(), 5);
    let NodeKind::Llm(summarize) = &spec.node("summarize").unwrap().kind else {
        panic!("summarize is not an llm node")
    };
    assert_eq!(summarize.provider, SIMULATED_PROVIDER);
    let sim = summarize.simulated.as_ref().unwrap();
    assert_eq!(sim.fail_first, Some(3));
    assert_eq!(sim.fail_kind, Some(FailKind::RateLimit));
    assert_eq!(summarize.fallbacks.len(), 1);
    assert_eq!(
        sim.usage,
        Some(SimulatedUsage {
            input: 1850,
            output: 220
        })
    );
    assert!(matches!(
        spec.node("decide").unwrap().kind,
        NodeKind::Router(_)
    ));
    assert_eq!(
        spec.limits.and_then(|l| l.max_cost_usd),
        Some("0.25".parse().unwrap())
    );
}

#[test]
fn approval_node_without_config_and_custom_known() {
    let v = json!({
        "version": "1", "entry": "ask",
        "nodes": [
            { "id": "ask", "type": "approval" },
            { "id": "go", "type": "tool", "config": {"tool": "deploy"} },
            { "id": "ok", "type": "approval", "config": {"message": "Deployed {{what}}"},
              "inputs": {"what": "{{node.go.output}}"} }
        ],
        "edges": [ { "from": "ask", "to": "go" }, { "from": "go", "to": "ok" } ]
    });
    let err = load(&v.to_string(), &Known::default()).unwrap_err();
    assert_eq!(err.len(), 1, "{err}");
    find(
        err.problems(),
        "/nodes/1/config/tool",
        "unknown tool `deploy`",
    );

    let known = Known::empty().with_tool("deploy");
    let spec = load(&v.to_string(), &known).unwrap();
    assert_eq!(
        spec.nodes[0].kind,
        NodeKind::Approval(ApprovalConfig::default())
    );
    let again: WorkflowSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
    assert_eq!(spec, again);
}

// ---------------------------------------------------------------------------
// One test per kind of problem
// ---------------------------------------------------------------------------

#[test]
fn not_json_reports_line_and_column() {
    let err = load("{\n  \"version\": \"1\",\n  oops\n}", &Known::default()).unwrap_err();
    assert_eq!(err.len(), 1);
    let p = &err.problems()[0];
    assert_eq!(p.kind, ProblemKind::Json);
    assert_eq!(p.pointer, "");
    assert_eq!((p.line, p.column), (Some(3), Some(3)));
    assert!(p.message.contains("line 3 column 3"), "{}", p.message);
    assert!(err.to_string().starts_with("(document): not valid JSON"));
}

#[test]
fn schema_violations_have_instance_pointers() {
    let mut v = base();
    v["nodes"][1]["config"]["temperature"] = json!("hot");
    v["nodes"][1]["colour"] = json!("red");
    v["edges"][0]["weight"] = json!(1);
    v["version"] = json!("2");
    let problems = problems_of(&v);
    assert_eq!(problems.len(), 4, "{}", dump(&problems));
    assert!(problems.iter().all(|p| p.kind == ProblemKind::Schema));
    find(
        &problems,
        "/nodes/1/config/temperature",
        "not of type \"number\"",
    );
    find(&problems, "/nodes/1", "'colour' was unexpected");
    find(&problems, "/edges/0", "'weight' was unexpected");
    find(&problems, "/version", "\"1\" was expected");
}

#[test]
fn missing_required_fields() {
    let mut v = base();
    v.as_object_mut().unwrap().remove("entry");
    v["nodes"][3]["config"]
        .as_object_mut()
        .unwrap()
        .remove("model");
    let problems = problems_of(&v);
    assert_eq!(problems.len(), 2, "{}", dump(&problems));
    find(&problems, "", "\"entry\" is a required property");
    find(
        &problems,
        "/nodes/3/config",
        "\"model\" is a required property",
    );
}

#[test]
fn duplicate_node_id() {
    let mut v = base();
    v["nodes"][3]["id"] = json!("summarize");
    let problems = problems_of(&v);
    let p = find(&problems, "/nodes/3/id", "duplicate node id `summarize`");
    assert_eq!(p.kind, ProblemKind::Duplicate);
    assert!(p.message.contains("/nodes/1"));
}

#[test]
fn unknown_entry() {
    let mut v = base();
    v["entry"] = json!("start");
    let p = only(&v, "/entry", "entry node `start` does not exist");
    assert_eq!(p.kind, ProblemKind::UnknownNode);
}

#[test]
fn unknown_nodes_in_edges() {
    let mut v = base();
    v["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "deep", "to": "report"}));
    let p = only(&v, "/edges/3/to", "unknown node `report`");
    assert_eq!(p.kind, ProblemKind::UnknownNode);

    let mut v = base();
    v["edges"][0]["from"] = json!("nowhere");
    let problems = problems_of(&v);
    find(&problems, "/edges/0/from", "unknown node `nowhere`");
    // Without that edge `ingest` no longer leads anywhere: summarize and
    // everything after it is unreachable, and summarize reads ingest.
    find(&problems, "/nodes/1", "not reachable");
}

#[test]
fn duplicate_edge() {
    let mut v = base();
    v["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "ingest", "to": "summarize"}));
    let p = only(&v, "/edges/3", "duplicate edge");
    assert_eq!(p.kind, ProblemKind::Duplicate);
}

#[test]
fn template_reads_unknown_node() {
    let mut v = base();
    v["nodes"][3]["inputs"]["text"] = json!("{{node.sumarize.output}}");
    let p = only(&v, "/nodes/3/inputs/text", "unknown node `sumarize`");
    assert_eq!(p.kind, ProblemKind::UnknownNode);
}

#[test]
fn template_reads_node_that_has_not_run() {
    let mut v = base();
    // `summarize` runs before `decide` and `deep`, not before `ingest`.
    v["nodes"][0]["config"]["path"] = json!("{{node.deep.output}}");
    let p = only(
        &v,
        "/nodes/0/config/path",
        "does not run before node `ingest`",
    );
    assert_eq!(p.kind, ProblemKind::NotBefore);

    let mut v = base();
    v["nodes"][1]["config"]["prompt"] = json!("again: {{node.summarize.output}}");
    let p = only(&v, "/nodes/1/config/prompt", "reads its own output");
    assert_eq!(p.kind, ProblemKind::NotBefore);
}

#[test]
fn transitive_ancestors_and_input_references_are_fine() {
    let mut v = base();
    // `ingest` is a grand-grand-parent of `deep`; `input…` is always there.
    v["nodes"][3]["inputs"]["text"] = json!("{{node.ingest.output.content}} {{ input.topic }}");
    v["nodes"][3]["config"]["prompt"] = json!("{{text}} {{input}}");
    assert_eq!(problems_of(&v), Vec::new());
}

#[test]
fn template_syntax_error_has_column() {
    let mut v = base();
    v["nodes"][1]["config"]["prompt"] = json!("Summarize: {{ node.ingest.output | upper }}");
    let p = only(&v, "/nodes/1/config/prompt", "column");
    assert_eq!(p.kind, ProblemKind::Template);
    assert_eq!(p.line, Some(1));
    assert!(p.column.is_some_and(|c| c > 12), "{p:?}");
}

#[test]
fn template_variables_must_be_inputs() {
    let mut v = base();
    v["nodes"][1]["config"]["prompt"] = json!("Summarize {{text}} for {{audience}}");
    let p = only(
        &v,
        "/nodes/1/config/prompt",
        "`{{audience}}`, which is not one of the node's inputs (text)",
    );
    assert_eq!(p.kind, ProblemKind::UnknownVariable);

    let mut v = base();
    v["nodes"][3]["inputs"]["other"] = json!("{{text}}");
    only(&v, "/nodes/3/inputs/other", "inputs may read only");
}

#[test]
fn rule_syntax_error_points_into_the_rule() {
    let mut v = base();
    v["nodes"][2]["config"]["rule"] = json!("len(text) $ 3");
    let p = only(&v, "/nodes/2/config/rule", "column 11");
    assert_eq!(p.kind, ProblemKind::Rule);
    assert_eq!(p.column, Some(11));
    let errors = load(&v.to_string(), &Known::default()).unwrap_err();
    assert!(
        errors
            .to_string()
            .starts_with("/nodes/2/config/rule: rule syntax error at column 11"),
        "{errors}"
    );
}

#[test]
fn when_syntax_error() {
    let mut v = base();
    v["edges"][2]["when"] = json!("branch = 'deep'");
    let p = only(&v, "/edges/2/when", "condition syntax error at column");
    assert_eq!(p.kind, ProblemKind::Rule);
    assert!(p.column.is_some());
}

#[test]
fn rule_variables_must_be_inputs() {
    let mut v = base();
    v["nodes"][2]["config"]["rule"] = json!("len(summary) > 10 && urgent ? 'deep' : 'shallow'");
    let problems = problems_of(&v);
    assert_eq!(problems.len(), 2, "{}", dump(&problems));
    find(
        &problems,
        "/nodes/2/config/rule",
        "rule reads `summary`, which is not one of the node's inputs (text)",
    );
    find(&problems, "/nodes/2/config/rule", "rule reads `urgent`");
    assert!(
        problems
            .iter()
            .all(|p| p.kind == ProblemKind::UnknownVariable)
    );
}

#[test]
fn when_reads_branch_and_router_inputs_only() {
    let mut v = base();
    v["edges"][2]["when"] = json!("branch == 'deep' && len(text) > 3 && score > 1");
    let p = only(&v, "/edges/2/when", "condition reads `score`");
    assert_eq!(p.kind, ProblemKind::UnknownVariable);
}

#[test]
fn when_only_on_router_edges() {
    let mut v = base();
    v["edges"][0]["when"] = json!("true");
    let p = only(&v, "/edges/0/when", "only edges leaving a router");
    assert_eq!(p.kind, ProblemKind::Invalid);
}

#[test]
fn cycles_are_reported_with_their_nodes() {
    let mut v = base();
    v["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "deep", "to": "summarize"}));
    let problems = problems_of(&v);
    let p = find(
        &problems,
        "/edges/3",
        "summarize → decide → deep → summarize",
    );
    assert_eq!(p.kind, ProblemKind::Cycle);
    // In a cycle, summarize is its own ancestor; only the cycle is reported.
    assert_eq!(problems.len(), 1, "{}", dump(&problems));

    let mut v = base();
    v["edges"]
        .as_array_mut()
        .unwrap()
        .push(json!({"from": "deep", "to": "deep"}));
    only(&v, "/edges/3", "cycle deep → deep");
}

#[test]
fn unreachable_nodes() {
    let mut v = base();
    v["nodes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"id": "orphan", "type": "approval"}));
    let p = only(
        &v,
        "/nodes/4",
        "node `orphan` is not reachable from the entry node `ingest`",
    );
    assert_eq!(p.kind, ProblemKind::Unreachable);
}

#[test]
fn unknown_provider_and_tool() {
    let mut v = base();
    v["nodes"][3]["config"]["provider"] = json!("mistral");
    let p = only(&v, "/nodes/3/config/provider", "unknown provider `mistral`");
    assert_eq!(p.kind, ProblemKind::UnknownProvider);
    assert!(p.message.contains("anthropic, openai, simulated"));

    let mut v = base();
    v["nodes"][0]["config"]["tool"] = json!("shell");
    let p = only(&v, "/nodes/0/config/tool", "unknown tool `shell`");
    assert_eq!(p.kind, ProblemKind::UnknownTool);
}

/// A `Known` with `read_file`'s real argument schema.
fn known_with_schemas() -> Known {
    Known::default().with_tool_schema(
        "read_file",
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "minLength": 1},
                "format": {"type": "string", "enum": ["text", "csv"]}
            },
            "required": ["path"],
            "additionalProperties": false
        }),
    )
}

fn problems_with_schemas(v: &Value) -> Vec<Problem> {
    match load(&v.to_string(), &known_with_schemas()) {
        Ok(_) => Vec::new(),
        Err(e) => e.into_problems(),
    }
}

#[test]
fn tool_arguments_are_checked_against_the_tool_schema() {
    // Valid as it is, with literal and templated arguments.
    assert!(problems_with_schemas(&base()).is_empty());
    let mut v = base();
    v["nodes"][0]["config"]["path"] = json!("{{input.file}}");
    v["nodes"][0]["config"]["format"] = json!("csv");
    assert!(problems_with_schemas(&v).is_empty());

    // Missing, unknown and ill-typed arguments, all reported at once.
    let mut v = base();
    let config = v["nodes"][0]["config"].as_object_mut().unwrap();
    config.remove("path");
    config.insert("pathh".into(), json!("docs.txt"));
    config.insert("format".into(), json!("xml"));
    let problems = problems_with_schemas(&v);
    assert_eq!(problems.len(), 3, "{}", dump(&problems));
    let p = find(
        &problems,
        "/nodes/0/config",
        "missing argument `path` required by tool `read_file`",
    );
    assert_eq!(p.kind, ProblemKind::ToolArguments);
    let p = find(
        &problems,
        "/nodes/0/config/pathh",
        "unknown argument `pathh` for tool `read_file` (accepted: format, path)",
    );
    assert_eq!(p.kind, ProblemKind::ToolArguments);
    let p = find(&problems, "/nodes/0/config/format", "tool `read_file`");
    assert_eq!(p.kind, ProblemKind::ToolArguments);

    // Without a schema only the name is checked.
    assert!(problems_of(&v).is_empty());
}

#[test]
fn tool_schemas_with_refs_and_pattern_properties_check_literals() {
    let known = Known::default().with_tool_schema(
        "reftool",
        json!({
            "type": "object",
            "properties": {"mode": {"$ref": "#/$defs/Mode"}},
            "patternProperties": {"^x-": {"type": "integer"}},
            "additionalProperties": false,
            "$defs": {"Mode": {"enum": ["a", "b"]}}
        }),
    );
    let doc = |config: Value| {
        json!({"version": "1", "entry": "t",
               "nodes": [{"id": "t", "type": "tool", "config": config}], "edges": []})
        .to_string()
    };
    let ok = load(
        &doc(json!({"tool": "reftool", "mode": "a", "x-level": 3})),
        &known,
    );
    assert!(ok.is_ok(), "{:?}", ok.err().map(|e| e.to_string()));
    let problems = load(
        &doc(json!({"tool": "reftool", "mode": "c", "x-level": "high"})),
        &known,
    )
    .unwrap_err()
    .into_problems();
    assert_eq!(problems.len(), 2, "{}", dump(&problems));
    find(&problems, "/nodes/0/config/mode", "tool `reftool`");
    find(&problems, "/nodes/0/config/x-level", "tool `reftool`");
}

#[test]
fn templates_nested_in_tool_arguments_are_checked() {
    let mut v = base();
    v["nodes"][0]["config"]["options"] = json!({"list": ["ok", "{{node.nowhere.output}}"]});
    let p = only(&v, "/nodes/0/config/options/list/1", "nowhere");
    assert_eq!(p.kind, ProblemKind::UnknownNode);
}

#[test]
fn fallbacks_with_unknown_providers() {
    let mut v = base();
    v["nodes"][1]["config"]["fallbacks"] = json!([
        {"provider": "anthropic", "model": "claude-3-5-haiku"},
        {"provider": "cohere", "model": "command-r"}
    ]);
    let p = only(
        &v,
        "/nodes/1/config/fallbacks/1/provider",
        "unknown provider `cohere`",
    );
    assert_eq!(p.kind, ProblemKind::UnknownProvider);
}

#[test]
fn simulated_options_need_the_simulated_provider() {
    let mut v = base();
    v["nodes"][1]["config"]["simulated"] = json!({"failFirst": 2});
    let p = only(
        &v,
        "/nodes/1/config/simulated",
        "options of the `simulated` provider, but the provider is `openai`",
    );
    assert_eq!(p.kind, ProblemKind::Invalid);

    v["nodes"][1]["config"]["provider"] = json!("simulated");
    v["nodes"][1]["config"]["simulated"]["failKind"] = json!("rateLimit");
    assert_eq!(problems_of(&v), Vec::new());
    v["nodes"][1]["config"]["simulated"]["failKind"] = json!("meteor");
    only(&v, "/nodes/1/config/simulated/failKind", "meteor");
}

#[test]
fn old_snake_case_keys_are_errors_with_the_camel_case_spelling() {
    let mut v = base();
    v["nodes"][1]["config"]["provider"] = json!("simulated");
    v["nodes"][1]["config"]["max_tokens"] = json!(10);
    v["nodes"][1]["config"]["latency_ms"] = json!(5);
    v["nodes"][1]["config"]["fallbacks"] =
        json!([{"provider": "simulated", "model": "m", "response": "hi"}]);
    v["nodes"][1]["timeout_ms"] = json!(100);
    v["limits"]["max_steps"] = json!(3);
    let problems = problems_of(&v);
    // Every problem at once, each at its object's pointer with a hint.
    assert_eq!(problems.len(), 4, "{}", dump(&problems));
    let config = find(&problems, "/nodes/1/config", "'latency_ms'");
    assert_eq!(config.kind, ProblemKind::Schema);
    assert!(
        config.message.contains("write `max_tokens` as `maxTokens`"),
        "{}",
        config.message
    );
    assert!(
        config.message.contains(
            "`latency_ms` is an option of the simulated provider: write it as `simulated.latencyMs`"
        ),
        "{}",
        config.message
    );
    find(
        &problems,
        "/nodes/1/config/fallbacks/0",
        "`response` is an option of the simulated provider: write it as `simulated.response`",
    );
    find(&problems, "/nodes/1", "write `timeout_ms` as `timeoutMs`");
    find(&problems, "/limits", "write `max_steps` as `maxSteps`");
}

#[test]
fn camel_case_hints() {
    use super::load::renamed_key_hint;
    assert_eq!(
        renamed_key_hint("max_concurrency", false).as_deref(),
        Some("the format is camelCase: write `max_concurrency` as `maxConcurrency`")
    );
    assert_eq!(renamed_key_hint("colour", false), None);
    assert_eq!(renamed_key_hint("usage", false), None);
    assert!(
        renamed_key_hint("usage", true)
            .unwrap()
            .contains("`simulated.usage`")
    );
    assert!(
        renamed_key_hint("failKind", true)
            .unwrap()
            .contains("`simulated.failKind`")
    );
    assert_eq!(renamed_key_hint("_", false), None);
}

#[test]
fn limits_out_of_range() {
    let mut v = base();
    v["limits"]["maxNodes"] = json!(3);
    let p = only(
        &v,
        "/limits/maxNodes",
        "maxNodes is 3, but the workflow has 4 nodes",
    );
    assert_eq!(p.kind, ProblemKind::Limits);

    let mut v = base();
    v["limits"] = json!({"maxSteps": 0, "maxTokens": -5, "maxCostUsd": 0, "timeoutSeconds": 0});
    v["maxConcurrency"] = json!(0);
    let problems = problems_of(&v);
    assert_eq!(problems.len(), 5, "{}", dump(&problems));
    for pointer in [
        "/limits/maxSteps",
        "/limits/maxTokens",
        "/limits/maxCostUsd",
        "/limits/timeoutSeconds",
        "/maxConcurrency",
    ] {
        find(&problems, pointer, "minimum");
    }
}

#[test]
fn max_cost_must_be_an_exact_positive_amount() {
    let mut v = base();
    v["limits"]["maxCostUsd"] = json!("0.00");
    let p = only(&v, "/limits/maxCostUsd", "greater than zero");
    assert_eq!(p.kind, ProblemKind::Limits);

    v["limits"]["maxCostUsd"] = json!(0.1234567890123);
    only(&v, "/limits/maxCostUsd", "not an exact dollar amount");

    v["limits"]["maxCostUsd"] = json!("ten dollars");
    only(&v, "/limits/maxCostUsd", "does not match");
}

#[test]
fn retry_delays_must_be_ordered() {
    let mut v = base();
    v["nodes"][1]["retry"] = json!({"maxAttempts": 3, "initialDelayMs": 5000, "maxDelayMs": 1000});
    let p = only(
        &v,
        "/nodes/1/retry/initialDelayMs",
        "greater than maxDelayMs (1000)",
    );
    assert_eq!(p.kind, ProblemKind::Invalid);
}

#[test]
fn reserved_input_names() {
    let mut v = base();
    v["nodes"][3]["inputs"]["node"] = json!("x");
    let p = only(&v, "/nodes/3/inputs/node", "reserved");
    assert_eq!(p.kind, ProblemKind::Invalid);
}

// ---------------------------------------------------------------------------
// Many problems at once
// ---------------------------------------------------------------------------

#[test]
fn every_problem_is_reported_at_once() {
    let v = json!({
        "version": "1", "entry": "start", "colour": "blue",
        "nodes": [
            { "id": "fetch", "type": "tool", "config": {"tool": "curl", "url": "{{node.pick.output}}"} },
            { "id": "write", "type": "llm",
              "config": {"provider": "gemini", "model": "m", "prompt": "{{ text",
                         "fallbacks": [{"provider": "cohere", "model": "c"}]},
              "inputs": {"text": "{{node.fetch.output}}"} },
            { "id": "write", "type": "approval" },
            { "id": "route", "type": "router", "config": {"rule": "size >>"},
              "retry": {"maxAttempts": 0} },
            { "id": "pick", "type": "router", "config": {"rule": "len(doc) > 1 ? 'a' : 'b'"} },
            { "id": "lonely", "type": "approval" }
        ],
        "edges": [
            { "from": "fetch", "to": "write", "when": "ok" },
            { "from": "write", "to": "route" },
            { "from": "route", "to": "fetch" },
            { "from": "route", "to": "pick", "when": "branch ==" },
            { "from": "pick", "to": "ghost" }
        ],
        "limits": { "maxNodes": 2, "maxCostUsd": -1 }
    });
    let problems = problems_of(&v);
    let expected = [
        ("", "'colour' was unexpected"),
        ("/nodes/3/retry/maxAttempts", "minimum of 1"),
        ("/limits/maxCostUsd", "minimum of 0"),
        ("/nodes/2/id", "duplicate node id `write`"),
        ("/entry", "entry node `start` does not exist"),
        ("/edges/0/when", "only edges leaving a router"),
        ("/edges/3/when", "condition syntax error"),
        ("/edges/4/to", "unknown node `ghost`"),
        ("/nodes/0/config/tool", "unknown tool `curl`"),
        ("/nodes/0/config/url", "does not run before node `fetch`"),
        ("/nodes/1/config/provider", "unknown provider `gemini`"),
        (
            "/nodes/1/config/prompt",
            "template error at line 1, column 1",
        ),
        (
            "/nodes/1/config/fallbacks/0/provider",
            "unknown provider `cohere`",
        ),
        ("/nodes/3/config/rule", "rule syntax error"),
        ("/nodes/4/config/rule", "rule reads `doc`"),
        (
            "/limits/maxNodes",
            "maxNodes is 2, but the workflow has 6 nodes",
        ),
        ("/edges/2", "cycle fetch → write → route → fetch"),
    ];
    for (pointer, fragment) in expected {
        find(&problems, pointer, fragment);
    }
    assert_eq!(problems.len(), expected.len(), "{}", dump(&problems));
    // Display: one problem per line.
    let text = LoadErrors {
        problems: problems.clone(),
    }
    .to_string();
    assert_eq!(text.lines().count(), expected.len());
    assert!(
        text.contains("\n/nodes/3/config/rule: rule syntax error at column 7"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

#[test]
fn deeply_nested_json_is_rejected() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let err = load(&deep, &Known::default()).unwrap_err();
    assert_eq!(err.problems()[0].kind, ProblemKind::TooLarge);
    assert!(err.to_string().contains("`json_depth` limit"), "{err}");

    // Deep but within the limit, inside tool arguments: accepted.
    let mut v = base();
    let mut nested = json!("leaf");
    for _ in 0..100 {
        nested = json!([nested]);
    }
    v["nodes"][0]["config"]["deep"] = nested;
    assert!(load(&v.to_string(), &Known::default()).is_ok());
}

#[test]
fn huge_strings_are_rejected_briefly() {
    let huge = "x".repeat(500_000);
    let mut v = base();
    v["nodes"][1]["name"] = json!(huge);
    v["nodes"][1]["config"]["provider"] = json!(huge);
    v["nodes"][2]["config"]["rule"] = json!(huge);
    v["nodes"][3]["inputs"]["text"] = json!(huge);
    v["nodes"][3]["inputs"][huge.as_str()] = json!("x");
    v["entry"] = json!(huge);
    let problems = problems_of(&v);
    assert!(!problems.is_empty());
    for p in &problems {
        assert!(
            p.message.chars().count() <= 600,
            "message too long: {}…",
            &p.message[..200]
        );
    }
    find(&problems, "/nodes/1/name", "longer than 256");
    find(&problems, "/nodes/2/config/rule", "longer than 4096");
    find(&problems, "/entry", "longer than 128");

    let too_big = format!(
        "{{\"description\": \"{}\"}}",
        "y".repeat(MAX_WORKFLOW_BYTES)
    );
    let err = load(&too_big, &Known::default()).unwrap_err();
    assert_eq!(err.len(), 1);
    let problem = &err.problems()[0];
    assert_eq!(problem.kind, ProblemKind::TooLarge);
    assert!(err.to_string().contains("`workflow_bytes` limit"), "{err}");
    let limit = problem.limit.unwrap();
    assert_eq!(limit.limit, LimitKind::WorkflowBytes);
    assert_eq!(limit.max, MAX_WORKFLOW_BYTES as u64);
    assert_eq!(limit.value, too_big.len() as u64);
}

#[test]
fn wrong_shapes_everywhere_do_not_panic() {
    for text in [
        "null",
        "[]",
        "\"workflow\"",
        "42",
        r#"{"nodes": "x", "edges": 5, "limits": [], "entry": 3}"#,
        r#"{"nodes": [1, null, [], {"id": 5, "type": []}], "edges": [1, {"from": 2, "to": null}]}"#,
        r#"{"nodes": [{"id": "a", "type": "llm", "config": {"provider": 1, "fallbacks": [1, {"provider": []}]}, "inputs": {"x": 1}, "retry": {"initialDelayMs": "5"}}], "entry": "a"}"#,
        r#"{"nodes": [{"id": "a", "type": "router", "config": {"rule": 5}}], "edges": [{"from": "a", "to": "a", "when": 3}], "entry": "a"}"#,
        r#"{"version": "1", "entry": "a", "nodes": [{"id": "a", "type": "tool", "config": {"tool": "read_file", "p": "{{"}}], "limits": {"maxCostUsd": "1e400", "maxNodes": 1e400}}"#,
    ] {
        let err = load(text, &Known::default()).unwrap_err();
        assert!(!err.is_empty(), "{text}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn very_many_problems_are_capped() {
    let mut v = base();
    let edges = v["edges"].as_array_mut().unwrap();
    for i in 0..(MAX_PROBLEMS + 500) {
        edges.push(json!({"from": "ingest", "to": format!("n{i}")}));
    }
    let problems = problems_of(&v);
    assert_eq!(problems.len(), MAX_PROBLEMS);
    let last = problems.last().unwrap();
    assert_eq!(last.kind, ProblemKind::Truncated);
    assert!(last.message.contains("more problems not shown"));
}

#[test]
fn many_nodes_are_handled() {
    let n = 3000;
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            json!({"id": format!("n{i}"), "type": "approval",
                   "inputs": {"prev": if i == 0 { "{{input}}".to_owned() } else { format!("{{{{node.n{}.output}}}}", i - 1) }}})
        })
        .collect();
    let edges: Vec<Value> = (1..n)
        .map(|i| json!({"from": format!("n{}", i - 1), "to": format!("n{i}")}))
        .collect();
    let v = json!({"version": "1", "entry": "n0", "nodes": nodes, "edges": edges});
    let problems = problems_of(&v);
    // Only the size limit of the schema; the chain itself is fine.
    assert_eq!(
        problems.len(),
        1,
        "{}",
        dump(&problems[..problems.len().min(5)])
    );
    find(&problems, "/nodes", "has more than 1000 items");
}

// ------------------------------------------------- duplicate keys (#7) --

#[test]
fn duplicate_keys_are_reported_with_their_pointers_along_with_other_problems() {
    // Four repeated keys at different depths, plus an unrelated problem.
    let text = r#"{
      "version": "1", "entry": "a", "entry": "a",
      "nodes": [
        { "id": "a", "type": "llm",
          "config": { "provider": "simulated", "model": "m", "prompt": "x", "prompt": "y",
                      "simulated": {"usage": {"input": 1, "output": 2, "input": 3}} } },
        { "id": "b", "id": "b", "type": "approval" }
      ],
      "edges": [ { "from": "a", "to": "nope" } ]
    }"#;
    let problems = load(text, &Known::default()).unwrap_err().into_problems();
    let dups: Vec<&str> = problems
        .iter()
        .filter(|p| p.kind == ProblemKind::DuplicateKey)
        .map(|p| p.pointer.as_str())
        .collect();
    assert_eq!(
        dups,
        [
            "/entry",
            "/nodes/0/config/prompt",
            "/nodes/0/config/simulated/usage/input",
            "/nodes/1/id"
        ],
        "{}",
        dump(&problems)
    );
    find(
        &problems,
        "/nodes/0/config/prompt",
        "duplicate key `prompt`",
    );
    // The other problems are still reported.
    find(&problems, "/edges/0/to", "unknown node `nope`");
}

#[test]
fn duplicate_keys_with_escaped_names_and_many_repeats() {
    let text = r#"{"version":"1","entry":"a","nodes":[{"id":"a","type":"tool",
        "config":{"tool":"transform_json","input":{"a/b":1,"a/b":2},"expression":"@"}}]}"#;
    let problems = load(text, &Known::default()).unwrap_err().into_problems();
    find(
        &problems,
        "/nodes/0/config/input/a~1b",
        "duplicate key `a/b`",
    );

    // Thousands of repeats: capped, and quick.
    let body = (0..5000).map(|_| "\"k\":1").collect::<Vec<_>>().join(",");
    let text = format!("{{{body}}}");
    let problems = load(&text, &Known::default()).unwrap_err().into_problems();
    assert!(problems.len() <= MAX_PROBLEMS);
    assert!(problems.iter().any(|p| p.kind == ProblemKind::Truncated));
}

#[test]
fn a_valid_document_without_repeats_still_loads() {
    let v = base();
    assert!(load(&v.to_string(), &Known::default()).is_ok());
}

// ----------------------------------------------------- nesting depth --

#[test]
fn deep_nesting_is_refused_at_its_pointer() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let text = format!(
        r#"{{"version":"1","entry":"a","nodes":[{{"id":"a","type":"tool","config":{{"tool":"t","x":{deep}}}}}]}}"#
    );
    let err = load(&text, &Known::default()).unwrap_err();
    assert_eq!(err.len(), 1);
    let p = &err.problems()[0];
    assert_eq!(p.kind, ProblemKind::TooLarge);
    let limit = p.limit.unwrap();
    assert_eq!(limit.limit, LimitKind::JsonDepth);
    assert_eq!(limit.max, 120);
    assert_eq!(limit.value, 121);
    assert!(
        p.pointer.starts_with("/nodes/0/config/x/0/0/"),
        "{}",
        p.pointer
    );

    // Within the limit it parses; a stricter limit refuses it.
    let ok = format!("{}1{}", "[".repeat(110), "]".repeat(110));
    let text = format!(
        r#"{{"version":"1","entry":"a","nodes":[{{"id":"a","type":"tool","config":{{"tool":"transform_json","input":{ok},"expression":"@"}}}}]}}"#
    );
    assert!(load(&text, &Known::default()).is_ok());
    let strict = Limits {
        json_depth: 10,
        ..Limits::default()
    };
    let err = load_with(&text, &Known::default(), &strict).unwrap_err();
    assert_eq!(err.problems()[0].limit.unwrap().max, 10);

    // 4 MB of brackets: refused at the limit, without recursing further.
    let text = "[".repeat(MAX_WORKFLOW_BYTES);
    let err = load(&text, &Known::default()).unwrap_err();
    assert_eq!(err.problems()[0].kind, ProblemKind::TooLarge);
}

// ------------------------------------------- whole-number floats (#8) --

#[test]
fn whole_number_floats_in_integer_fields_are_integers() {
    let mut v = base();
    v["maxConcurrency"] = json!(4.0);
    v["limits"]["maxNodes"] = json!(2e1);
    v["limits"]["timeoutSeconds"] = json!(120.0);
    v["nodes"][1]["timeoutMs"] = json!(1e3);
    v["nodes"][1]["retry"] =
        json!({"maxAttempts": 3.0, "initialDelayMs": 1e2, "maxDelayMs": 2000.0});
    v["nodes"][1]["config"]["maxTokens"] = json!(256.0);
    let text = v.to_string();
    assert!(text.contains("1000.0") || text.contains("1e3"), "{text}");
    let spec = load(&text, &Known::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(spec.max_concurrency, Some(4));
    assert_eq!(spec.limits.and_then(|l| l.max_nodes), Some(20));
    assert_eq!(spec.nodes[1].timeout_ms, Some(1000));
    assert_eq!(
        spec.nodes[1].retry,
        Some(RetrySpec {
            max_attempts: 3,
            initial_delay_ms: Some(100),
            max_delay_ms: Some(2000)
        })
    );
    // The written text itself, with `1e2` and `4.0` literally.
    let text = r#"{"version":"1","entry":"a","maxConcurrency":4.0,
      "nodes":[{"id":"a","type":"llm","timeoutMs":1e2,
        "config":{"provider":"simulated","model":"m","simulated":{"latencyMs":0.0,"failFirst":1E0,
                                "usage":{"input":1e1,"output":2.0}},
                  "fallbacks":[{"provider":"simulated","model":"n","maxTokens":5e0}]}}]}"#;
    let spec = load(text, &Known::default()).unwrap_or_else(|e| panic!("{e}"));
    let NodeKind::Llm(llm) = &spec.nodes[0].kind else {
        panic!("not llm")
    };
    let sim = llm.simulated.as_ref().unwrap();
    assert_eq!(
        sim.usage,
        Some(SimulatedUsage {
            input: 10,
            output: 2
        })
    );
    assert_eq!(sim.fail_first, Some(1));
    assert_eq!(llm.fallbacks[0].max_tokens, Some(5));
    assert_eq!(spec.nodes[0].timeout_ms, Some(100));
}

#[test]
fn non_integers_in_integer_fields_are_each_reported_with_a_pointer() {
    let mut v = base();
    v["maxConcurrency"] = json!(4.5);
    v["limits"]["maxSteps"] = json!(1.5);
    v["nodes"][1]["config"]["maxTokens"] = json!(0.25);
    v["nodes"][1]["retry"] = json!({"maxAttempts": 2.5, "initialDelayMs": 10.0, "maxDelayMs": 5.0});
    let problems = problems_of(&v);
    find(&problems, "/maxConcurrency", "integer");
    find(&problems, "/limits/maxSteps", "integer");
    find(&problems, "/nodes/1/config/maxTokens", "integer");
    find(&problems, "/nodes/1/retry/maxAttempts", "integer");
    // Normalised floats take part in the semantic checks too.
    find(
        &problems,
        "/nodes/1/retry/initialDelayMs",
        "greater than maxDelayMs",
    );
    assert!(
        problems.iter().all(|p| !p.pointer.is_empty()),
        "{}",
        dump(&problems)
    );
}

#[test]
fn the_depth_limit_is_ours_up_to_its_maximum() {
    // At the largest allowed setting, our typed error still fires before
    // serde_json's own recursion limit.
    let limits = Limits {
        json_depth: usize::MAX,
        ..Limits::default()
    };
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let err = load_with(&deep, &Known::default(), &limits).unwrap_err();
    let limit = err.problems()[0].limit.unwrap();
    assert_eq!(limit.max, Limits::MAX_JSON_DEPTH as u64);
}

#[test]
fn rule_limit_problems_read_well_and_carry_the_limit() {
    let mut v = base();
    let deep = format!("{}text{}", "(".repeat(80), ")".repeat(80));
    v["nodes"][2]["config"]["rule"] = json!(deep);
    v["edges"][2]["when"] = json!(deep);
    let problems = problems_of(&v);
    let p = find(
        &problems,
        "/nodes/2/config/rule",
        "rule too complex at column 65",
    );
    assert!(!p.message.contains("rule rule"), "{}", p.message);
    assert!(
        p.message.contains("`rule_nesting` limit of 64 levels"),
        "{}",
        p.message
    );
    assert_eq!(p.limit.unwrap().limit, LimitKind::RuleNesting);
    let p = find(&problems, "/edges/2/when", "condition too complex");
    assert_eq!(p.limit.unwrap().limit, LimitKind::RuleNesting);
}

#[test]
fn specs_built_in_rust_serialize_to_camel_case_and_load_back() {
    let spec = WorkflowSpec::new(
        "ask",
        vec![
            NodeSpec::new(
                "ask",
                NodeKind::Llm(
                    LlmConfig::new(SIMULATED_PROVIDER, "gpt-4o-mini")
                        .prompt("Hi {{name}}")
                        .max_tokens(64)
                        .simulated(
                            SimulatedSpec::new()
                                .response("Hello")
                                .latency_ms(5)
                                .fail_first(1, FailKind::ServerError),
                        )
                        .fallback(
                            FallbackSpec::new(SIMULATED_PROVIDER, "claude-3-5-haiku")
                                .simulated(SimulatedSpec::new().usage(1, 2)),
                        ),
                ),
            )
            .input("name", "{{input.name}}")
            .retry(RetrySpec::new(3).initial_delay_ms(10).max_delay_ms(100))
            .timeout_ms(1000),
            NodeSpec::new(
                "route",
                NodeKind::Router(RouterConfig::new("'x'").fanout(true)),
            ),
            NodeSpec::new(
                "save",
                NodeKind::Tool(ToolConfig::new("read_file").arg("path", "{{input.path}}")),
            ),
            NodeSpec::new(
                "ok",
                NodeKind::Approval(ApprovalConfig::with_message("Go?")),
            ),
        ],
    )
    .edge(EdgeSpec::new("ask", "route"))
    .edge(EdgeSpec::new("route", "save").when("branch == 'x'"))
    .edge(EdgeSpec::new("route", "ok"))
    .limits(crate::spec::Limits::default());
    let json = serde_json::to_value(&spec).unwrap();
    let llm = &json["nodes"][0]["config"];
    assert_eq!(llm["maxTokens"], 64);
    assert_eq!(
        llm["simulated"],
        json!({"response": "Hello", "latencyMs": 5, "failFirst": 1, "failKind": "serverError"})
    );
    assert_eq!(
        llm["fallbacks"][0]["simulated"]["usage"],
        json!({"input": 1, "output": 2})
    );
    assert_eq!(json["nodes"][0]["timeoutMs"], 1000);
    assert_eq!(json["nodes"][0]["retry"]["initialDelayMs"], 10);
    let loaded = load(&json.to_string(), &Known::default()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(loaded, spec);
}
