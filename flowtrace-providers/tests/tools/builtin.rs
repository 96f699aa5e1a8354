//! The built-in tools: `read_file` (confinement, limits) and
//! `transform_json` (JMESPath), directly and through a FlowTrace run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flowtrace_core::trace::MemorySink;
use flowtrace_core::{
    EventKind, GraphBuilder, JsonState, NodeContext, NodeOutput, RunConfig, Tool, ToolError,
    node_fn,
};
use flowtrace_providers::tools::{ReadFile, TransformJson};
use serde_json::{Value, json};

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "flowtrace-tools-{label}-{}-{nanos}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, rel: &str, content: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, content).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn read_err(tool: &ReadFile, path: &str) -> ToolError {
    let e = tool.call(json!({ "path": path })).await.unwrap_err();
    assert_eq!(e.tool, "read_file");
    assert!(!e.is_retryable(), "{e}");
    e
}

// ---------------------------------------------------------------- read_file

#[tokio::test]
async fn reads_files_under_the_root() {
    let dir = TempDir::new("read");
    dir.write("notes.txt", "héllo\nworld\n");
    dir.write("sub/deeper/data.json", "{\"a\": 1}");
    let tool = ReadFile::new(dir.path());
    assert_eq!(tool.name(), "read_file");
    assert_eq!(tool.parameters()["required"], json!(["path"]));
    assert_eq!(tool.spec().name, "read_file");

    let out = tool.call(json!({"path": "notes.txt"})).await.unwrap();
    assert_eq!(
        out,
        json!({"content": "héllo\nworld\n", "path": "notes.txt", "bytes": 13})
    );
    let out = tool
        .call(json!({"path": "./sub/deeper/data.json"}))
        .await
        .unwrap();
    assert_eq!(out["content"], "{\"a\": 1}");
    assert_eq!(out["path"], "./sub/deeper/data.json");
    let empty = dir.write("empty.txt", "");
    assert!(empty.exists());
    let out = tool.call(json!({"path": "empty.txt"})).await.unwrap();
    assert_eq!(out["bytes"], 0);
}

#[tokio::test]
async fn refuses_paths_outside_the_root() {
    let outer = TempDir::new("confine");
    outer.write("secret.txt", "top secret");
    outer.write("root/inside.txt", "fine");
    let root = outer.path().join("root");
    let tool = ReadFile::new(&root);

    let secret = outer.path().join("secret.txt");
    let e = read_err(&tool, secret.to_str().unwrap()).await;
    assert!(e.message.contains("absolute path"), "{e}");

    for path in [
        "../secret.txt",
        "sub/../../secret.txt",
        "..",
        "a/../inside.txt",
    ] {
        let e = read_err(&tool, path).await;
        assert!(e.message.contains("\"..\""), "{path}: {e}");
    }
    let e = read_err(&tool, "").await;
    assert!(e.message.contains("empty"), "{e}");
    let e = tool.call(json!({"file": "inside.txt"})).await.unwrap_err();
    assert!(e.message.contains("\"path\""), "{e}");
    let e = tool.call(json!({"path": 7})).await.unwrap_err();
    assert!(e.message.contains("\"path\""), "{e}");
    // A directory is not a file.
    std::fs::create_dir_all(root.join("dir")).unwrap();
    let e = read_err(&tool, "dir").await;
    assert!(e.message.contains("not a regular file"), "{e}");
}

#[cfg(unix)]
#[tokio::test]
async fn refuses_symlinks_that_escape_the_root() {
    let outer = TempDir::new("symlink");
    outer.write("secret.txt", "top secret");
    outer.write("root/real.txt", "real");
    std::fs::create_dir_all(outer.path().join("elsewhere")).unwrap();
    outer.write("elsewhere/other.txt", "other");
    let root = outer.path().join("root");
    std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("elsewhere"), root.join("linkdir")).unwrap();
    std::os::unix::fs::symlink(root.join("real.txt"), root.join("alias.txt")).unwrap();
    let tool = ReadFile::new(&root);

    for path in ["link.txt", "linkdir/other.txt"] {
        let e = read_err(&tool, path).await;
        assert!(e.message.contains("outside the root"), "{path}: {e}");
        assert!(!e.message.contains("top secret"));
    }
    // A symlink that stays inside is fine.
    let out = tool.call(json!({"path": "alias.txt"})).await.unwrap();
    assert_eq!(out["content"], "real");

    // A root reached through a symlink works too (both sides are resolved).
    let via_link = outer.path().join("root-link");
    std::os::unix::fs::symlink(&root, &via_link).unwrap();
    let out = ReadFile::new(&via_link)
        .call(json!({"path": "real.txt"}))
        .await
        .unwrap();
    assert_eq!(out["content"], "real");
}

#[tokio::test]
async fn missing_files_and_roots_do_not_reveal_the_host_path() {
    let dir = TempDir::new("missing");
    let tool = ReadFile::new(dir.path());
    let e = read_err(&tool, "nope/none.txt").await;
    assert!(e.message.contains("not found"), "{e}");
    assert!(e.message.contains("nope/none.txt"), "{e}");
    let root = dir.path().to_string_lossy().into_owned();
    assert!(!e.message.contains(&root), "{e}");
    assert!(!e.to_string().contains(&root), "{e}");

    let gone = ReadFile::new(dir.path().join("no-such-root"));
    let e = read_err(&gone, "a.txt").await;
    assert!(e.message.contains("root directory is not available"), "{e}");
    assert!(!e.message.contains(&root), "{e}");
}

#[tokio::test]
async fn enforces_the_size_limit_and_utf8() {
    let dir = TempDir::new("size");
    dir.write("ten.txt", "0123456789");
    dir.write("eleven.txt", "0123456789a");
    dir.write("binary.bin", [0xff_u8, 0xfe, 0x00]);
    assert_eq!(ReadFile::DEFAULT_MAX_BYTES, 10 * 1024 * 1024);
    let tool = ReadFile::new(dir.path()).max_bytes(10);
    let out = tool.call(json!({"path": "ten.txt"})).await.unwrap();
    assert_eq!(out["bytes"], 10);
    let e = read_err(&tool, "eleven.txt").await;
    assert!(
        e.message.contains("11 bytes, over the 10-byte limit"),
        "{e}"
    );
    let e = read_err(&tool, "binary.bin").await;
    assert!(e.message.contains("not valid UTF-8"), "{e}");
}

/// Creates a FIFO at `path` with the `mkfifo` command.
fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo failed");
}

#[tokio::test]
async fn refuses_fifos_symlinks_to_fifos_and_directories_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.path().join("pipe");
    mkfifo(&fifo);
    std::os::unix::fs::symlink(&fifo, dir.path().join("link")).unwrap();
    std::fs::create_dir_all(dir.path().join("sub")).unwrap();
    let tool = ReadFile::new(dir.path());
    for (path, what) in [("pipe", "fifo"), ("link", "fifo"), ("sub", "directory")] {
        let started = std::time::Instant::now();
        let called = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            tool.call(json!({ "path": path })),
        )
        .await;
        let Ok(result) = called else {
            // Unblock the reader stuck in open(2), then fail.
            let _ = std::fs::OpenOptions::new().write(true).open(&fifo);
            panic!("reading {path:?} ({what}) blocked for a second");
        };
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let e = result.unwrap_err();
        assert_eq!(e.tool, "read_file");
        assert!(!e.is_retryable(), "{e}");
        assert!(e.message.contains(&format!("{path:?}")), "{e}");
        assert!(e.message.contains("not a regular file"), "{e}");
        assert!(e.message.contains(what), "{e}");
        let host = dir.path().to_string_lossy().into_owned();
        assert!(!e.message.contains(&host), "{e}");
    }
}

// ----------------------------------------------------------- transform_json

async fn transform(input: Value, expression: &str) -> Result<Value, ToolError> {
    TransformJson::new()
        .call(json!({"input": input, "expression": expression}))
        .await
}

fn people() -> Value {
    json!({
        "people": [
            {"name": "Ada", "age": 36, "langs": ["en", "fr"]},
            {"name": "Grace", "age": 85, "langs": ["en"]},
            {"name": "Linus", "age": 28, "langs": ["fi", "en", "sv"]}
        ],
        "meta": {"source": "test"}
    })
}

#[tokio::test]
async fn jmespath_projections_and_filters() {
    let tool = TransformJson::new();
    assert_eq!(tool.name(), "transform_json");
    assert_eq!(
        tool.parameters()["required"],
        json!(["input", "expression"])
    );

    assert_eq!(
        transform(people(), "people[*].name").await.unwrap(),
        json!(["Ada", "Grace", "Linus"])
    );
    assert_eq!(
        transform(people(), "people[?age > `30`].name")
            .await
            .unwrap(),
        json!(["Ada", "Grace"])
    );
    assert_eq!(
        transform(people(), "people[?contains(langs, 'fr')] | [0].name")
            .await
            .unwrap(),
        json!("Ada")
    );
    assert_eq!(
        transform(
            people(),
            "{names: people[].name, oldest: max_by(people, &age).name, n: length(people)}"
        )
        .await
        .unwrap(),
        json!({"names": ["Ada", "Grace", "Linus"], "oldest": "Grace", "n": 3})
    );
    assert_eq!(
        transform(people(), "sort(people[].langs[])").await.unwrap(),
        json!(["en", "en", "en", "fi", "fr", "sv"])
    );
    assert_eq!(
        transform(people(), "meta.source").await.unwrap(),
        json!("test")
    );
    assert_eq!(
        transform(people(), "nothing.here").await.unwrap(),
        Value::Null
    );
    assert_eq!(
        transform(json!([1, 2.5, -3]), "[?@ > `0`]").await.unwrap(),
        json!([1, 2.5])
    );
    // A null input is still an input.
    assert_eq!(transform(Value::Null, "a").await.unwrap(), Value::Null);
}

#[tokio::test]
async fn bad_expressions_and_arguments_are_permanent_errors() {
    let e = transform(people(), "people[?age > ").await.unwrap_err();
    assert!(!e.is_retryable());
    assert_eq!(e.tool, "transform_json");
    assert!(e.message.starts_with("invalid JMESPath expression"), "{e}");

    let e = transform(people(), "no_such_fn(people)").await.unwrap_err();
    assert!(!e.is_retryable());
    assert!(e.message.contains("no_such_fn"), "{e}");

    let e = transform(people(), "length(meta.source.x)")
        .await
        .unwrap_err();
    assert!(e.message.contains("JMESPath"), "{e}");

    let tool = TransformJson::new();
    let e = tool.call(json!({"expression": "a"})).await.unwrap_err();
    assert!(e.message.contains("\"input\""), "{e}");
    let e = tool.call(json!({"input": 1})).await.unwrap_err();
    assert!(e.message.contains("\"expression\""), "{e}");
    let e = tool
        .call(json!({"input": 1, "expression": ["a"]}))
        .await
        .unwrap_err();
    assert!(e.message.contains("\"expression\""), "{e}");
}

#[tokio::test]
async fn long_and_deep_expressions_are_capped() {
    let tool = TransformJson::new().max_expression_len(20);
    assert_eq!(
        tool.parameters()["properties"]["expression"]["maxLength"],
        20
    );
    let e = tool
        .call(json!({"input": {}, "expression": "a".repeat(21)}))
        .await
        .unwrap_err();
    assert!(!e.is_retryable());
    assert!(
        e.message
            .contains("21 characters, over the 20-character limit"),
        "{e}"
    );

    // Nesting deep enough to overflow the parser's stack is refused up
    // front; the deepest accepted expression evaluates fine.
    let limit = TransformJson::MAX_OPERATORS;
    let deepest = format!("{}a", "!".repeat(limit));
    assert_eq!(
        transform(json!({"a": true}), &deepest).await.unwrap(),
        json!(true)
    );
    let chain = format!("a{}", ".b".repeat(limit));
    assert_eq!(transform(json!({}), &chain).await.unwrap(), Value::Null);
    let too_deep = format!("{}a", "!".repeat(limit + 1));
    let e = transform(json!({}), &too_deep).await.unwrap_err();
    assert!(e.message.contains("operators"), "{e}");
    // Operators inside quotes do not count.
    let quoted = format!("\"{}\"", ".".repeat(limit * 2));
    assert_eq!(transform(json!({}), &quoted).await.unwrap(), Value::Null);
}

/// Calls `tool` and requires a prompt, permanent refusal naming `limit`.
async fn refused(tool: &TransformJson, input: Value, expression: &str, limit: &str) -> ToolError {
    let started = std::time::Instant::now();
    let result = tool
        .call(json!({"input": input, "expression": expression}))
        .await;
    let Err(e) = result else {
        panic!("{expression} was not refused: {result:?}");
    };
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "{expression}: {:?}",
        started.elapsed()
    );
    assert_eq!(e.tool, "transform_json");
    assert!(!e.is_retryable(), "{e}");
    assert!(
        e.message.contains(&format!("`{limit}`")),
        "{expression}: {e}"
    );
    e
}

#[tokio::test]
async fn output_and_work_bombs_are_refused_before_evaluating() {
    let tool = TransformJson::new();
    let input = json!({"a": [1, 2, 3]});
    let bombs = [
        // Doubling: 119 characters, 2^20 copies of the input.
        vec!["[@,@]"; 20].join(" | "),
        // Each to_string escapes the previous one again.
        vec!["to_string([@,@])"; 20].join(" | "),
        // Flattening turns shared copies into real arrays.
        vec!["[@,@] | []"; 40].join(" | "),
        // Joining doubles a string.
        format!("to_string(@) | {}", vec!["join('', [@,@])"; 40].join(" | ")),
        // Projections multiply.
        format!("a{}", ".[@,@,@,@][]".repeat(20)),
        // A map over doubled arrays.
        format!("map(&[@,@], {})", vec!["[@,@]"; 30].join(" | ")),
    ];
    for bomb in &bombs {
        assert!(bomb.chars().count() <= TransformJson::DEFAULT_MAX_EXPRESSION_LEN);
        refused(&tool, input.clone(), bomb, "max_output_bytes").await;
    }
    // A huge intermediate value is refused even when the result is small.
    let e = refused(
        &tool,
        input.clone(),
        &format!("length({})", vec!["[@,@]"; 40].join(" | ")),
        "max_output_bytes",
    )
    .await;
    assert!(e.message.contains("intermediate"), "{e}");
    // Comparing two huge shared values is work, not output.
    let doubled = vec!["[@,@]"; 30].join(" | ");
    let e = refused(
        &tool.clone().max_output_bytes(usize::MAX),
        input.clone(),
        &format!("({doubled}) == ({doubled})"),
        "max_work",
    )
    .await;
    assert!(e.message.contains("work units"), "{e}");
    // Stray expression references could run anywhere: refused.
    let e = tool
        .call(json!({"input": [1], "expression": "map([&[@,@]][0], @)"}))
        .await
        .unwrap_err();
    assert!(e.message.contains("expression references"), "{e}");
}

#[tokio::test]
async fn output_and_work_limits_are_configurable() {
    assert_eq!(TransformJson::DEFAULT_MAX_OUTPUT_BYTES, 16 * 1024 * 1024);
    assert_eq!(TransformJson::DEFAULT_MAX_WORK, 1 << 28);
    let input = json!({"a": "x".repeat(100)});
    // 104 bytes of input; `[@,@]` makes 213.
    let tool = TransformJson::new().max_output_bytes(300);
    assert_eq!(
        tool.call(json!({"input": input, "expression": "[@,@]"}))
            .await
            .unwrap(),
        json!([input, input])
    );
    let e = refused(&tool, input.clone(), "[@,@,@]", "max_output_bytes").await;
    assert!(
        e.message
            .contains("over the `max_output_bytes` limit of 300 bytes"),
        "{e}"
    );
    let e = refused(
        &TransformJson::new().max_work(10),
        people(),
        "people[*].name",
        "max_work",
    )
    .await;
    assert!(e.message.contains("limit of 10 units"), "{e}");
    // Ordinary expressions stay well within the defaults on sizeable input
    // (about 250 kB here; the bounds hold for any input of that size, so
    // expressions that build objects per element are refused from a few
    // megabytes on).
    let big = json!({"people": (0..5_000)
        .map(|i| json!({"name": format!("person {i}"), "age": i % 90, "langs": ["en", "fr"]}))
        .collect::<Vec<_>>()});
    let names = TransformJson::new()
        .call(json!({"input": big, "expression":
            "sort_by(people[?age > `30`], &age)[*].{name: name, first: langs[0]} | length(@)"}))
        .await
        .unwrap();
    assert!(names.as_u64().unwrap() > 3_000, "{names}");
}

// ------------------------------------------------------------ through a run

#[tokio::test]
async fn tools_called_through_a_run_are_traced() {
    let dir = TempDir::new("run");
    dir.write("people.json", people().to_string());
    let read = Arc::new(ReadFile::new(dir.path()));
    let jq = Arc::new(TransformJson::new());
    let graph = GraphBuilder::<JsonState>::new("tools")
        .add_node(
            "load",
            node_fn(move |_s, ctx: NodeContext| {
                let (read, jq) = (read.clone(), jq.clone());
                async move {
                    let file = ctx
                        .call_tool(read.as_ref(), json!({"path": "people.json"}))
                        .await?;
                    let input: Value =
                        serde_json::from_str(file["content"].as_str().unwrap()).unwrap();
                    let names = ctx
                        .call_tool(
                            jq.as_ref(),
                            json!({"input": input, "expression": "people[?age < `50`].name"}),
                        )
                        .await?;
                    let mut update = serde_json::Map::new();
                    update.insert("names".into(), names);
                    Ok(NodeOutput::update(update))
                }
            }),
        )
        .set_entry("load")
        .set_finish("load")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let out = graph
        .invoke(JsonState::new(), RunConfig::new().sink(sink.clone()))
        .await
        .unwrap();
    assert_eq!(out.state.get("names"), Some(&json!(["Ada", "Linus"])));

    let tool_events: Vec<_> = sink
        .events()
        .into_iter()
        .filter_map(|e| match &e.kind {
            EventKind::ToolRequest { tool, arguments } => {
                Some(("request", tool.clone(), arguments.clone()))
            }
            EventKind::ToolResponse {
                tool,
                output,
                error,
                ..
            } => {
                assert!(error.is_none(), "{error:?}");
                Some(("response", tool.clone(), output.clone().unwrap()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(tool_events.len(), 4, "{tool_events:?}");
    assert_eq!(
        tool_events[0],
        (
            "request",
            "read_file".to_string(),
            json!({"path": "people.json"})
        )
    );
    assert_eq!(tool_events[1].0, "response");
    assert_eq!(tool_events[1].2["path"], "people.json");
    assert_eq!(tool_events[2].1, "transform_json");
    assert_eq!(
        tool_events[3],
        (
            "response",
            "transform_json".to_string(),
            json!(["Ada", "Linus"])
        )
    );
    let kinds = sink.kinds();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("step.started") < at("tool.request"));
    assert!(at("tool.response") < at("step.finished"));
}

#[tokio::test]
async fn a_failing_tool_fails_the_step_without_retrying() {
    let dir = TempDir::new("fail");
    let read = Arc::new(ReadFile::new(dir.path()));
    let graph = GraphBuilder::<JsonState>::new("tools")
        .add_node(
            "load",
            node_fn(move |_s, ctx: NodeContext| {
                let read = read.clone();
                async move {
                    ctx.call_tool(read.as_ref(), json!({"path": "../etc/passwd"}))
                        .await?;
                    Ok(NodeOutput::none())
                }
            }),
        )
        .set_entry("load")
        .set_finish("load")
        .compile()
        .unwrap();
    let sink = MemorySink::new();
    let failure = graph
        .invoke(
            JsonState::new(),
            RunConfig::new()
                .sink(sink.clone())
                .retry(flowtrace_core::RetryPolicy::new(3).jitter(false)),
        )
        .await
        .unwrap_err();
    let step = failure.summary.steps_of("load").next().unwrap();
    assert_eq!(step.attempts, 1);
    let response = sink
        .events()
        .into_iter()
        .find_map(|e| match &e.kind {
            EventKind::ToolResponse { error, .. } => error.clone(),
            _ => None,
        })
        .unwrap();
    assert!(response.contains("\"..\""), "{response}");
}

#[tokio::test]
async fn errors_carry_a_kind_and_their_cause() {
    use flowtrace_core::tool::ToolErrorKind;
    use std::error::Error as _;

    let dir = TempDir::new("kinds");
    dir.write("big.txt", "x".repeat(64));
    let tool = ReadFile::new(dir.path()).max_bytes(10);
    let missing = read_err(&tool, "missing.txt").await;
    assert_eq!(missing.kind(), ToolErrorKind::NotFound);
    // The I/O error is the source, not repeated in the message.
    let cause = missing.source().unwrap().to_string();
    assert!(!missing.to_string().contains(&cause), "{missing}");
    assert_eq!(
        read_err(&tool, "../outside.txt").await.kind(),
        ToolErrorKind::PermissionDenied
    );
    assert_eq!(
        read_err(&tool, "big.txt").await.kind(),
        ToolErrorKind::LimitExceeded
    );
    let no_path = tool.call(json!({})).await.unwrap_err();
    assert_eq!(no_path.kind(), ToolErrorKind::InvalidInput);

    let invalid = transform(json!({}), "a[").await.unwrap_err();
    assert_eq!(invalid.kind(), ToolErrorKind::InvalidInput);
    let huge = TransformJson::new().max_output_bytes(100);
    let e = huge
        .call(json!({"input": "x".repeat(200), "expression": "[@, @]"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::LimitExceeded);
}

#[tokio::test]
async fn inputs_nested_past_the_limit_are_refused_before_evaluation() {
    use flowtrace_core::tool::ToolErrorKind;

    let limit = TransformJson::MAX_INPUT_DEPTH;
    let nested = |depth: usize| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    };
    // The deepest accepted input round-trips through the evaluation pool.
    let deepest = nested(limit);
    assert_eq!(transform(deepest.clone(), "@").await.unwrap(), deepest);
    let e = transform(nested(limit + 1), "@").await.unwrap_err();
    assert_eq!(e.kind(), ToolErrorKind::LimitExceeded);
    assert!(!e.is_retryable());
    assert!(
        e.message.contains(&format!(
            "nests {} levels deep, over the limit of {limit}",
            limit + 1
        )),
        "{e}"
    );
}

#[test]
fn the_built_in_readers_are_safe() {
    use flowtrace_core::ToolSafety;
    assert_eq!(ReadFile::new("/nowhere").safety(), ToolSafety::Safe);
    assert_eq!(TransformJson::new().safety(), ToolSafety::Safe);
    assert_eq!(ReadFile::new("/nowhere").spec().name, "read_file");
}
