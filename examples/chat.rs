//! Try a provider from the command line: one chat request, run through a
//! one-node FlowTrace graph so the reply is traced and priced like any other
//! model call.
//!
//! ```text
//! cargo run --example chat -- --provider openai|anthropic [--base-url URL] \
//!     --model MODEL [--max-tokens N] [--stream] [--json] "PROMPT"
//! ```
//!
//! The key comes from `OPENAI_API_KEY` or `ANTHROPIC_API_KEY` (any value for
//! a local server that ignores it). For example, against a local llama.cpp
//! `llama-server`, which speaks both APIs:
//!
//! ```text
//! OPENAI_API_KEY=local cargo run --example chat -- --provider openai \
//!     --base-url http://127.0.0.1:8080/v1 --model smollm2-135m --stream "Say hi"
//! ANTHROPIC_API_KEY=local cargo run --example chat -- --provider anthropic \
//!     --base-url http://127.0.0.1:8080 --model smollm2-135m --json "Say hi"
//! ```
//!
//! Output: the reply on stdout (with `--stream`, printed piece by piece as
//! the `llm.delta` events arrive), then a one-line account of tokens, cost,
//! latency and finish reason on stderr. With `--json`, stdout holds exactly
//! one JSON object instead:
//!
//! ```json
//! {"text": "Hi!", "usage": {"input": 20, "output": 3, "cached_input": 8},
//!  "cost_usd": "0.0000039", "latency_ms": 412.734, "finish_reason": "stop",
//!  "provider": "openai", "model": "gpt-4o-mini-2024-07-18"}
//! ```
//!
//! `cost_usd` is an exact decimal string of US dollars, as FlowTrace
//! serializes every [`Cost`] (never a binary float); it comes from
//! [`PriceTable::builtin`] and the usage the provider reported, and is `"0"`
//! for a model without a price (a warning then goes to stderr). `usage.input`
//! counts every prompt token, cached ones included. `latency_ms` is the model
//! call's latency (microsecond precision); `model` is the model that answered,
//! as the provider named it. `finish_reason` is `stop`, `length`,
//! `tool_calls`, `content_filter` or the provider's own word.
//!
//! Exit status: 0 on success, 1 when the call fails (the error on stderr), 2
//! for a usage error or a missing API key.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use flowtrace::providers::anthropic::Anthropic;
use flowtrace::providers::openai::OpenAi;
use flowtrace::providers::{ApiKey, MissingApiKey};
use flowtrace::trace::LogLevel;
use flowtrace::{
    ChatModel, ChatRequest, ChatResponse, Cost, EventKind, GraphBuilder, NodeContext, PriceTable,
    State, StreamItem, TokenUsage, node_fn,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;

const USAGE: &str = "\
Sends one chat request to a provider and prints the reply.

Usage:
  cargo run --example chat -- --provider openai|anthropic [--base-url URL]
      --model MODEL [--max-tokens N] [--stream] [--json] \"PROMPT\"

Options:
  --provider NAME   openai (OpenAI or any OpenAI-compatible server) or anthropic
  --base-url URL    the API root, e.g. http://127.0.0.1:8080/v1 (openai) or
                    http://127.0.0.1:8080 (anthropic); default: the provider's
  --model MODEL     the model to ask
  --max-tokens N    the reply's token limit (default: the provider's)
  --stream          stream the reply, printing it as it arrives
  --json            print one JSON object: text, usage {input, output,
                    cached_input}, cost_usd (exact decimal string),
                    latency_ms, finish_reason, provider, model
  -h, --help        this help

The key is read from OPENAI_API_KEY or ANTHROPIC_API_KEY (any value for a
local server that ignores it). Exit status: 0 ok, 1 the call failed, 2 usage
error or missing key.";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Provider {
    OpenAi,
    Anthropic,
}

#[derive(Debug)]
struct Args {
    provider: Provider,
    base_url: Option<String>,
    model: String,
    max_tokens: Option<u32>,
    stream: bool,
    json: bool,
    prompt: String,
}

/// What the command line asked for.
enum Command {
    Help,
    Chat(Args),
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let mut provider = None;
    let mut base_url = None;
    let mut model = None;
    let mut max_tokens = None;
    let mut stream = false;
    let mut json = false;
    let mut prompt: Option<String> = None;
    let mut options_done = false;

    while let Some(arg) = args.next() {
        if options_done || !arg.starts_with('-') || arg == "-" {
            if prompt.is_some() {
                return Err(format!(
                    "unexpected argument {arg:?}: quote the prompt as one argument"
                ));
            }
            prompt = Some(arg);
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match name {
            "-h" | "--help" => return Ok(Command::Help),
            "--" => options_done = true,
            "--stream" => stream = true,
            "--json" => json = true,
            "--provider" => {
                provider = Some(match value(name)?.as_str() {
                    "openai" => Provider::OpenAi,
                    "anthropic" => Provider::Anthropic,
                    other => {
                        return Err(format!(
                            "unknown provider {other:?}: expected openai or anthropic"
                        ));
                    }
                });
            }
            "--base-url" => base_url = Some(value(name)?),
            "--model" => model = Some(value(name)?),
            "--max-tokens" => {
                let v = value(name)?;
                max_tokens = Some(
                    v.parse::<u32>()
                        .map_err(|_| format!("--max-tokens: {v:?} is not a token count"))?,
                );
            }
            _ => return Err(format!("unknown option {name:?}")),
        }
    }

    Ok(Command::Chat(Args {
        provider: provider.ok_or("--provider is required (openai or anthropic)")?,
        base_url,
        model: model.ok_or("--model is required")?,
        max_tokens,
        stream,
        json,
        prompt: prompt.ok_or("the prompt is missing")?,
    }))
}

/// The client for the chosen provider, keyed from the environment. Without
/// `--base-url`, `OPENAI_BASE_URL` / `ANTHROPIC_BASE_URL` are honoured.
fn client(args: &Args) -> Result<Arc<dyn ChatModel>, MissingApiKey> {
    Ok(match (args.provider, &args.base_url) {
        (Provider::OpenAi, None) => Arc::new(OpenAi::from_env()?),
        (Provider::OpenAi, Some(url)) => {
            Arc::new(OpenAi::new(ApiKey::from_env("OPENAI_API_KEY")?).base_url(url.clone()))
        }
        (Provider::Anthropic, None) => Arc::new(Anthropic::from_env()?),
        (Provider::Anthropic, Some(url)) => {
            Arc::new(Anthropic::new(ApiKey::from_env("ANTHROPIC_API_KEY")?).base_url(url.clone()))
        }
    })
}

/// The graph's state: the reply, once the node has it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Conversation {
    reply: Option<ChatResponse>,
}

impl State for Conversation {
    type Update = Conversation;
    fn apply(&mut self, update: Conversation) {
        if update.reply.is_some() {
            self.reply = update.reply;
        }
    }
}

fn graph(
    model: Arc<dyn ChatModel>,
    request: ChatRequest,
    stream: bool,
) -> flowtrace::CompiledGraph<Conversation> {
    GraphBuilder::<Conversation>::new("chat")
        .add_node(
            "chat",
            node_fn(move |_state: Arc<Conversation>, ctx: NodeContext| {
                let model = model.clone();
                let request = request.clone();
                async move {
                    let reply = if stream {
                        ctx.chat_stream(model.as_ref(), request).await?
                    } else {
                        ctx.chat(model.as_ref(), request).await?
                    };
                    Ok(Conversation { reply: Some(reply) }.into())
                }
            }),
        )
        .set_entry("chat")
        .set_finish("chat")
        .compile()
        .expect("a one-node graph is valid")
}

/// What the `llm.response` event reported.
struct Call {
    provider: String,
    model: String,
    usage: TokenUsage,
    cost: Cost,
    latency_us: u64,
    finish_reason: String,
}

/// `stop`, `length`, … or the provider's own word for `Other`.
fn finish_reason_name(reason: &flowtrace::FinishReason) -> String {
    match serde_json::to_value(reason) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(map)) => map
            .values()
            .next()
            .and_then(|v| v.as_str())
            .unwrap_or("other")
            .to_string(),
        _ => "other".to_string(),
    }
}

async fn run(args: Args, model: Arc<dyn ChatModel>) -> Result<(), String> {
    let mut request = ChatRequest::new(args.model.clone()).user(args.prompt.clone());
    if let Some(n) = args.max_tokens {
        request = request.max_tokens(n);
    }
    let provider_name = model.provider().to_string();
    let graph = graph(model, request, args.stream);
    let config = flowtrace::RunConfig::new()
        .pricing(Arc::new(PriceTable::builtin()))
        .event_capacity(16_384);

    let mut handle = graph.stream(Conversation::default(), config);
    let mut events = handle.events();
    let live = args.stream && !args.json;
    let mut call = None;
    let mut stdout = std::io::stdout();
    while let Some(item) = events.next().await {
        let event = match item {
            StreamItem::Event(event) => event,
            StreamItem::Lagged { missed } => {
                eprintln!("(fell behind the run: {missed} events not shown)");
                continue;
            }
        };
        match &event.kind {
            EventKind::LlmDelta { text } if live => {
                let _ = write!(stdout, "{text}");
                let _ = stdout.flush();
            }
            EventKind::LlmResponse {
                provider,
                model,
                usage,
                cost,
                latency_us,
                finish_reason,
                ..
            } => {
                call = Some(Call {
                    provider: provider.clone(),
                    model: model.clone(),
                    usage: *usage,
                    cost: *cost,
                    latency_us: *latency_us,
                    finish_reason: finish_reason_name(finish_reason),
                });
            }
            EventKind::Log {
                level: LogLevel::Warn | LogLevel::Error,
                message,
            } => {
                eprintln!("{message}");
            }
            _ => {}
        }
    }

    let output = handle
        .wait()
        .await
        .map_err(|failure| failure.error.to_string())?;
    let reply = output
        .state
        .reply
        .ok_or("the run finished without a reply")?;
    let call = call.unwrap_or_else(|| Call {
        provider: reply.provider.clone().unwrap_or(provider_name),
        model: reply.model.clone(),
        usage: reply.usage,
        cost: output.summary.cost,
        latency_us: 0,
        finish_reason: finish_reason_name(&reply.finish_reason),
    });
    // The exact cost FlowTrace priced the call at (`llm.response`); the run
    // has this one call, so it is also the run's total.
    let cost = call.cost;
    debug_assert_eq!(cost, output.summary.cost);
    let latency_ms = call.latency_us as f64 / 1000.0;

    if args.json {
        let out = json!({
            "text": reply.text,
            "usage": {
                "input": call.usage.input_tokens,
                "output": call.usage.output_tokens,
                "cached_input": call.usage.cached_input_tokens,
            },
            "cost_usd": cost.to_decimal_string(),
            "latency_ms": latency_ms,
            "finish_reason": call.finish_reason,
            "provider": call.provider,
            "model": call.model,
        });
        println!("{out}");
    } else {
        if live {
            println!();
        } else {
            println!("{}", reply.text);
        }
        eprintln!(
            "[{}/{}] {} in ({} cached) + {} out tokens, {}, {:.1} ms, {}",
            call.provider,
            call.model,
            call.usage.input_tokens,
            call.usage.cached_input_tokens,
            call.usage.output_tokens,
            cost,
            latency_ms,
            call.finish_reason,
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Chat(args)) => args,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let model = match client(&args) {
        Ok(model) => model,
        Err(e) => {
            eprintln!("error: {e} (any value works for a local server that ignores the key)");
            return ExitCode::from(2);
        }
    };
    match run(args, model).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
