//! Prompt token estimates made *before* a call, for budget pre-checks and
//! routing.
//!
//! * **OpenAI** models are counted with OpenAI's own byte-pair encodings
//!   (through the `tiktoken-rs` crate): `o200k_base` for the GPT-4o,
//!   GPT-4.1, GPT-4.5, GPT-5 and `o`-series families (and `gpt-oss`),
//!   `cl100k_base` for GPT-4, GPT-3.5 and any model name not recognised.
//!   On top of the text, the estimate adds OpenAI's documented chat framing:
//!   [`OPENAI_TOKENS_PER_MESSAGE`] per message (the system prompt counts as
//!   one) plus the role's own token, and [`OPENAI_REPLY_PRIMING`] once for
//!   the reply's priming. Tool definitions are counted as their name,
//!   description and JSON schema text plus a small per-tool overhead; OpenAI
//!   actually renders them in a more compact internal format, so that part
//!   errs high. Tool call ids, names and arguments and structured-output
//!   schemas are counted as text. The result is close to what the API
//!   reports for plain chats and a little above it with tools.
//! * **Anthropic and every other provider** get an approximation, not a
//!   count: one token per [`APPROX_BYTES_PER_TOKEN`] bytes of text, rounded
//!   up (Claude's tokenizer averages about 3.5 bytes per token on English
//!   prose, so this is biased high there; dense code or some non-Latin
//!   scripts can tokenize tighter), plus [`APPROX_TOKENS_PER_MESSAGE`] of
//!   framing per message, [`APPROX_TOKENS_PER_TOOL_CALL`] per tool call and,
//!   for Anthropic when tools are offered, [`ANTHROPIC_TOOL_SYSTEM_PROMPT`]
//!   for the tool-use system prompt Anthropic adds (the largest published
//!   figure). Budget checks built on it therefore lean towards refusing
//!   early rather than overspending.
//!
//! Every estimate is at least [`OPENAI_REPLY_PRIMING`] tokens, even for an
//! empty request.
//!
//! The encodings are parsed once, lazily, on first use (a few hundred
//! milliseconds for `o200k_base` in an optimised build): call [`preload`] at
//! start-up to pay that before the first request. Loading never panics: if
//! an encoding cannot be loaded, counts for it fall back to the
//! approximation and a warning is logged once.

use std::sync::LazyLock;

use flowtrace_core::ChatRequest;
use flowtrace_core::model::{ResponseFormat, Role};
use tiktoken_rs::CoreBPE;

/// Tokens of framing OpenAI adds per chat message (`<|start|>{role}…<|end|>`),
/// besides the role name and the content.
pub const OPENAI_TOKENS_PER_MESSAGE: u64 = 3;
/// Tokens OpenAI adds once to prime the reply (`<|start|>assistant<|message|>`).
pub const OPENAI_REPLY_PRIMING: u64 = 3;
/// Tokens counted per tool call in an OpenAI prompt, besides its id, name and
/// arguments.
pub const OPENAI_TOKENS_PER_TOOL_CALL: u64 = 3;
/// Tokens counted per tool definition in an OpenAI prompt, besides its name,
/// description and schema.
pub const OPENAI_TOKENS_PER_TOOL: u64 = 7;
/// Tokens counted once when an OpenAI request offers tools.
pub const OPENAI_TOOLS_OVERHEAD: u64 = 12;

/// Bytes per token assumed by the approximation (rounded up).
pub const APPROX_BYTES_PER_TOKEN: u64 = 3;
/// Tokens of framing per message assumed by the approximation.
pub const APPROX_TOKENS_PER_MESSAGE: u64 = 5;
/// Tokens per tool call (or tool definition) assumed by the approximation,
/// besides their text.
pub const APPROX_TOKENS_PER_TOOL_CALL: u64 = 10;
/// Tokens of the system prompt Anthropic adds when tools are offered.
pub const ANTHROPIC_TOOL_SYSTEM_PROMPT: u64 = 530;

/// One of OpenAI's byte-pair encodings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Encoding {
    /// `o200k_base`: GPT-4o, GPT-4.1, GPT-4.5, GPT-5, `o`-series.
    O200kBase,
    /// `cl100k_base`: GPT-4, GPT-3.5 and unknown models.
    Cl100kBase,
}

impl Encoding {
    /// The encoding OpenAI uses for `model`. Fine-tune (`ft:gpt-4o-mini:…`)
    /// and routed (`openai/gpt-4o`) names are recognised by their base
    /// model; anything unknown gets `cl100k_base`.
    pub fn for_model(model: &str) -> Self {
        let name = model.trim().to_ascii_lowercase();
        let name = name.strip_prefix("ft:").unwrap_or(&name);
        let name = name.rsplit('/').next().unwrap_or(name);
        let o_series = name.len() >= 2
            && name.starts_with('o')
            && name.as_bytes().get(1).is_some_and(u8::is_ascii_digit);
        let o200k = o_series
            || [
                "gpt-4o",
                "gpt-4.1",
                "gpt-4.5",
                "gpt-5",
                "gpt-oss",
                "chatgpt-4o",
                "codex-",
                "computer-use",
            ]
            .iter()
            .any(|prefix| name.starts_with(prefix));
        if o200k {
            Self::O200kBase
        } else {
            Self::Cl100kBase
        }
    }

    /// The encoding's name (`o200k_base`, `cl100k_base`).
    pub fn name(self) -> &'static str {
        match self {
            Self::O200kBase => "o200k_base",
            Self::Cl100kBase => "cl100k_base",
        }
    }

    fn bpe(self) -> Option<&'static CoreBPE> {
        match self {
            Self::O200kBase => O200K.as_ref(),
            Self::Cl100kBase => CL100K.as_ref(),
        }
    }

    /// Whether the encoding loaded (otherwise counts for it are the
    /// approximation). Loads it on first call.
    pub fn is_available(self) -> bool {
        self.bpe().is_some()
    }
}

static O200K: LazyLock<Option<CoreBPE>> =
    LazyLock::new(|| load("o200k_base", tiktoken_rs::o200k_base));
static CL100K: LazyLock<Option<CoreBPE>> =
    LazyLock::new(|| load("cl100k_base", tiktoken_rs::cl100k_base));

/// Builds an encoding, turning an error — or a panic inside the tokenizer
/// crate while parsing its embedded tables — into `None`.
fn load<E: std::fmt::Display>(name: &str, build: fn() -> Result<CoreBPE, E>) -> Option<CoreBPE> {
    match std::panic::catch_unwind(build) {
        Ok(Ok(bpe)) => Some(bpe),
        Ok(Err(error)) => {
            tracing::warn!(encoding = name, %error, "could not load the encoding; token counts will be approximate");
            None
        }
        Err(_) => {
            tracing::warn!(
                encoding = name,
                "loading the encoding panicked; token counts will be approximate"
            );
            None
        }
    }
}

/// Loads both encodings now, so the first estimate does not pay for it.
/// Blocking: call it at start-up or from `spawn_blocking`.
pub fn preload() {
    let _ = Encoding::O200kBase.is_available();
    let _ = Encoding::Cl100kBase.is_available();
}

/// The tokens of `text` in `encoding` (special-token markers such as
/// `<|endoftext|>` count as plain text, as the API treats them). Falls back
/// to the approximation if the encoding could not be loaded.
///
/// ```
/// use flowtrace_providers::tokens::{count_tokens, Encoding};
/// assert_eq!(count_tokens(Encoding::O200kBase, "hello world"), 2);
/// ```
pub fn count_tokens(encoding: Encoding, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match encoding.bpe() {
        Some(bpe) => bpe.count_ordinary(text) as u64,
        None => approx_text(text.len()),
    }
}

fn approx_text(bytes: usize) -> u64 {
    (bytes as u64).div_ceil(APPROX_BYTES_PER_TOKEN)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::System => "system",
        Role::User => "user",
        Role::Assistant => "assistant",
        Role::Tool => "tool",
    }
}

/// Which estimate a provider's model gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Counter {
    /// OpenAI's encodings and framing.
    OpenAi(Encoding),
    /// The approximation, with Anthropic's tool-use system prompt.
    Anthropic,
    /// The approximation.
    Approx,
}

impl Counter {
    /// The counter for `provider`'s `model`.
    pub(crate) fn for_model(provider: &str, model: &str) -> Self {
        match provider.to_ascii_lowercase().as_str() {
            "openai" | "azure" | "azure_openai" | "azure-openai" => {
                Self::OpenAi(Encoding::for_model(model))
            }
            "anthropic" => Self::Anthropic,
            _ => Self::Approx,
        }
    }

    /// Estimates the prompt tokens of `request`.
    pub(crate) fn estimate(self, request: &ChatRequest) -> u64 {
        match self {
            Self::OpenAi(encoding) => openai_tokens(encoding, request),
            Self::Anthropic => approx_tokens(request, true),
            Self::Approx => approx_tokens(request, false),
        }
    }
}

fn openai_tokens(encoding: Encoding, request: &ChatRequest) -> u64 {
    let count = |text: &str| count_tokens(encoding, text);
    let per_message = |role: Role| OPENAI_TOKENS_PER_MESSAGE + count(role_name(role));
    let mut total = OPENAI_REPLY_PRIMING;
    if let Some(system) = &request.system {
        total += per_message(Role::System) + count(system);
    }
    for message in &request.messages {
        total += per_message(message.role) + count(&message.content);
        for call in &message.tool_calls {
            total += OPENAI_TOKENS_PER_TOOL_CALL
                + count(&call.id)
                + count(&call.name)
                + count(&call.arguments.to_string());
        }
        if let Some(id) = &message.tool_call_id {
            total += count(id);
        }
    }
    if !request.tools.is_empty() {
        total += OPENAI_TOOLS_OVERHEAD;
        for tool in &request.tools {
            total += OPENAI_TOKENS_PER_TOOL
                + count(&tool.name)
                + count(&tool.description)
                + count(&tool.parameters.to_string());
        }
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &request.response_format {
        total += OPENAI_TOKENS_PER_TOOL + count(name) + count(&schema.to_string());
    }
    total
}

fn approx_tokens(request: &ChatRequest, anthropic: bool) -> u64 {
    let mut bytes = 0usize;
    let mut framing = OPENAI_REPLY_PRIMING;
    if let Some(system) = &request.system {
        bytes += system.len();
        framing += APPROX_TOKENS_PER_MESSAGE;
    }
    for message in &request.messages {
        bytes += message.content.len();
        framing += APPROX_TOKENS_PER_MESSAGE;
        for call in &message.tool_calls {
            bytes += call.id.len() + call.name.len() + call.arguments.to_string().len();
            framing += APPROX_TOKENS_PER_TOOL_CALL;
        }
        bytes += message.tool_call_id.as_ref().map_or(0, String::len);
    }
    for tool in &request.tools {
        bytes += tool.name.len() + tool.description.len() + tool.parameters.to_string().len();
        framing += APPROX_TOKENS_PER_TOOL_CALL;
    }
    if anthropic && !request.tools.is_empty() {
        framing += ANTHROPIC_TOOL_SYSTEM_PROMPT;
    }
    if let Some(ResponseFormat::JsonSchema { name, schema, .. }) = &request.response_format {
        bytes += name.len() + schema.to_string().len();
        framing += APPROX_TOKENS_PER_TOOL_CALL;
    }
    approx_text(bytes) + framing
}

/// Estimates the prompt tokens of an OpenAI request with the encoding of
/// `request.model` and OpenAI's chat framing (see the [module docs](self)).
pub fn estimate_openai(request: &ChatRequest) -> u64 {
    Counter::OpenAi(Encoding::for_model(&request.model)).estimate(request)
}

/// Approximates the prompt tokens of an Anthropic request (biased high; see
/// the [module docs](self)).
pub fn estimate_anthropic(request: &ChatRequest) -> u64 {
    Counter::Anthropic.estimate(request)
}

/// Estimates the prompt tokens of `request` for `provider`: exact encodings
/// for `openai` (and `azure`), the approximation for everyone else.
pub fn estimate(provider: &str, request: &ChatRequest) -> u64 {
    estimate_for(provider, &request.model, request)
}

/// Like [`estimate`], as if `request` were sent to `model` (whatever its
/// `model` field says).
pub fn estimate_for(provider: &str, model: &str, request: &ChatRequest) -> u64 {
    Counter::for_model(provider, model).estimate(request)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use flowtrace_core::model::{Message, ToolCall, ToolSpec};
    use serde_json::json;

    #[test]
    fn known_counts() {
        assert_eq!(count_tokens(Encoding::O200kBase, "hello world"), 2);
        assert_eq!(count_tokens(Encoding::Cl100kBase, "hello world"), 2);
        assert_eq!(count_tokens(Encoding::Cl100kBase, "hello <|endoftext|>"), 7);
        assert_eq!(count_tokens(Encoding::O200kBase, ""), 0);
        assert_eq!(count_tokens(Encoding::Cl100kBase, "tiktoken is great!"), 6);
        assert_eq!(count_tokens(Encoding::O200kBase, "tiktoken is great!"), 6);
        // The larger vocabulary packs other scripts tighter.
        let text = "お誕生日おめでとう";
        assert_eq!(count_tokens(Encoding::Cl100kBase, text), 9);
        assert_eq!(count_tokens(Encoding::O200kBase, text), 8);
        assert!(Encoding::O200kBase.is_available());
        assert!(Encoding::Cl100kBase.is_available());
    }

    #[test]
    fn encodings_by_model() {
        for m in [
            "gpt-4o",
            "gpt-4o-mini-2024-07-18",
            "gpt-4.1-nano",
            "gpt-5",
            "o1",
            "o3-mini",
            "o4-mini",
            "ft:gpt-4o-mini:acme::abc",
            "openai/gpt-4.1",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::O200kBase, "{m}");
        }
        for m in [
            "gpt-4",
            "gpt-4-turbo",
            "gpt-3.5-turbo",
            "llama3",
            "",
            "omni",
        ] {
            assert_eq!(Encoding::for_model(m), Encoding::Cl100kBase, "{m}");
        }
        assert_eq!(Encoding::O200kBase.name(), "o200k_base");
    }

    #[test]
    fn openai_framing_matches_the_cookbook() {
        // One user message "hello world": 3 framing + 1 ("user") + 2, plus 3 priming.
        let r = ChatRequest::new("gpt-4o").user("hello world");
        assert_eq!(estimate_openai(&r), 9);
        // A system prompt is one more message.
        let r = r.system("hello world");
        assert_eq!(estimate_openai(&r), 15);
        assert_eq!(estimate("openai", &r), 15);
        assert_eq!(estimate_for("openai", "gpt-4", &r), 15);
    }

    #[test]
    fn never_zero() {
        let empty = ChatRequest::new("gpt-4o");
        assert_eq!(estimate_openai(&empty), OPENAI_REPLY_PRIMING);
        assert!(estimate_anthropic(&empty) > 0);
        assert!(estimate("mistral", &empty) > 0);
        let blank = ChatRequest::new("gpt-4o").user("");
        assert!(estimate_openai(&blank) > estimate_openai(&empty));
        let blank = ChatRequest::new("claude-sonnet-4").user("");
        assert!(estimate_anthropic(&blank) > estimate_anthropic(&empty));
    }

    #[test]
    fn estimates_grow_with_every_part() {
        let base = ChatRequest::new("gpt-4o-mini").user("Summarise the report.");
        let longer = base.clone().user("And list three risks, briefly.");
        let with_system = longer.clone().system("You are terse.");
        let with_call = with_system
            .clone()
            .message(Message::assistant("").with_tool_calls(vec![ToolCall {
                id: "call_1".into(),
                name: "lookup".into(),
                arguments: json!({"query": "risks in the report"}),
            }]));
        let with_result = with_call
            .clone()
            .message(Message::tool_result("call_1", "none found"));
        let with_tool = with_result.clone().tool(ToolSpec {
            name: "lookup".into(),
            description: "Searches the report.".into(),
            parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}}),
        });
        let mut with_schema = with_tool.clone();
        with_schema.response_format = Some(ResponseFormat::JsonSchema {
            name: "risks".into(),
            schema: json!({"type": "array", "items": {"type": "string"}}),
            strict: true,
        });
        let chain = [
            &base,
            &longer,
            &with_system,
            &with_call,
            &with_result,
            &with_tool,
            &with_schema,
        ];
        for estimate in [estimate_openai, estimate_anthropic] {
            let counts: Vec<u64> = chain.iter().map(|r| estimate(r)).collect();
            assert!(counts.windows(2).all(|w| w[0] < w[1]), "{counts:?}");
        }
        let long = ChatRequest::new("gpt-4o").user("word ".repeat(1_000));
        assert!(estimate_openai(&long) >= 1_000);
        assert!(estimate_openai(&long) < 1_100);
    }

    #[test]
    fn anthropic_is_generous_and_counts_the_tool_prompt() {
        let text = "The quick brown fox jumps over the lazy dog. ".repeat(50);
        let r = ChatRequest::new("claude-sonnet-4").user(text.clone());
        // Biased high: above what an exact English tokenizer counts.
        assert!(estimate_anthropic(&r) > count_tokens(Encoding::Cl100kBase, &text));
        assert!(estimate_anthropic(&r) >= (text.len() as u64).div_ceil(3));
        let with_tool = r.clone().tool(ToolSpec {
            name: "t".into(),
            description: String::new(),
            parameters: json!({}),
        });
        assert!(
            estimate_anthropic(&with_tool) >= estimate_anthropic(&r) + ANTHROPIC_TOOL_SYSTEM_PROMPT
        );
        assert!(
            estimate("together", &with_tool) < estimate_anthropic(&with_tool),
            "only Anthropic adds its tool prompt"
        );
        assert_eq!(estimate("anthropic", &r), estimate_anthropic(&r));
    }

    #[test]
    fn a_failed_load_is_not_a_panic() {
        fn broken() -> Result<CoreBPE, String> {
            Err("corrupt table".into())
        }
        assert!(load("broken", broken).is_none());
    }
}
