//! Limits on everything an untrusted workflow document controls.
//!
//! A workflow file decides how much a run reads, renders, evaluates and
//! stores. Every such amount is bounded, and every breach is a
//! [`LimitExceeded`] naming the limit ([`LimitKind`]), its maximum and the
//! value that crossed it, so callers can branch on the kind instead of
//! parsing messages.
//!
//! Two sets of limits exist:
//!
//! * [`Limits`]: the budgets a host may tune (document size, JSON nesting,
//!   rendered sizes, tool output, `read_file` size). [`Limits::default`]
//!   holds the defaults; [`spec::load_with`](super::spec::load_with) and
//!   [`Runtime::with_limits`](super::compile::Runtime::with_limits) apply
//!   them.
//! * fixed limits that define the formats themselves (the schema's node and
//!   edge counts, rule and template source sizes, rule evaluation cost),
//!   listed as the `FIXED_*` constants here and re-exported from the modules
//!   that enforce them.
//!
//! `docs/LIMITS.md` lists them all with their defaults and errors.

use std::fmt;
use std::io::Read;
use std::path::Path;

/// Which limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// [`Limits::workflow_bytes`]: the size of a workflow document.
    WorkflowBytes,
    /// [`Limits::json_depth`]: the nesting of arrays and objects in a
    /// workflow document.
    JsonDepth,
    /// [`Limits::template_output_bytes`]: the output of one template
    /// rendering.
    TemplateOutputBytes,
    /// [`Limits::node_render_bytes`]: everything one node execution renders.
    NodeRenderBytes,
    /// [`Limits::tool_output_bytes`]: the result of one tool call.
    ToolOutputBytes,
    /// [`Limits::run_bytes`]: everything one run renders and receives from
    /// tools.
    RunBytes,
    /// [`Limits::read_file_bytes`]: a file `read_file` reads.
    ReadFileBytes,
    /// [`Limits::pricing_bytes`]: the size of a price table file.
    PricingBytes,
    /// [`FIXED_MAX_PROBLEMS`]: problems reported for one document.
    Problems,
    /// [`FIXED_MAX_NODES`]: nodes in a workflow (the schema's `maxItems`).
    Nodes,
    /// [`FIXED_MAX_EDGES`]: edges in a workflow (the schema's `maxItems`).
    Edges,
    /// Characters of a rule's source.
    RuleSourceChars,
    /// Syntactic nesting of a rule.
    RuleNesting,
    /// Depth of a rule's expression tree.
    RuleTreeDepth,
    /// Bytes of strings one rule evaluation builds.
    RuleEvalBytes,
    /// Work units (expression nodes visited plus bytes and items examined)
    /// of one rule evaluation.
    RuleEvalWork,
    /// Bytes of a template's source.
    TemplateSourceBytes,
    /// Runs of one `run_workflow --repeat`.
    Repeat,
}

impl LimitKind {
    /// The limit's name as used in messages and in `docs/LIMITS.md`
    /// (`workflow_bytes`, `template_output_bytes`, …).
    pub fn name(self) -> &'static str {
        match self {
            LimitKind::WorkflowBytes => "workflow_bytes",
            LimitKind::JsonDepth => "json_depth",
            LimitKind::TemplateOutputBytes => "template_output_bytes",
            LimitKind::NodeRenderBytes => "node_render_bytes",
            LimitKind::ToolOutputBytes => "tool_output_bytes",
            LimitKind::RunBytes => "run_bytes",
            LimitKind::ReadFileBytes => "read_file_bytes",
            LimitKind::PricingBytes => "pricing_bytes",
            LimitKind::Problems => "problems",
            LimitKind::Nodes => "nodes",
            LimitKind::Edges => "edges",
            LimitKind::RuleSourceChars => "rule_source_chars",
            LimitKind::RuleNesting => "rule_nesting",
            LimitKind::RuleTreeDepth => "rule_tree_depth",
            LimitKind::RuleEvalBytes => "rule_eval_bytes",
            LimitKind::RuleEvalWork => "rule_eval_work",
            LimitKind::TemplateSourceBytes => "template_source_bytes",
            LimitKind::Repeat => "repeat",
        }
    }

    /// The unit the limit counts (`bytes`, `levels`, …), for messages.
    pub fn unit(self) -> &'static str {
        match self {
            LimitKind::WorkflowBytes
            | LimitKind::TemplateOutputBytes
            | LimitKind::NodeRenderBytes
            | LimitKind::ToolOutputBytes
            | LimitKind::RunBytes
            | LimitKind::ReadFileBytes
            | LimitKind::PricingBytes
            | LimitKind::RuleEvalBytes
            | LimitKind::TemplateSourceBytes => "bytes",
            LimitKind::JsonDepth | LimitKind::RuleNesting | LimitKind::RuleTreeDepth => "levels",
            LimitKind::Problems => "problems",
            LimitKind::Nodes => "nodes",
            LimitKind::Edges => "edges",
            LimitKind::RuleSourceChars => "characters",
            LimitKind::RuleEvalWork => "work units",
            LimitKind::Repeat => "runs",
        }
    }
}

impl fmt::Display for LimitKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A limit was exceeded: which one, its maximum, and the value that
/// crossed it.
///
/// `value` is exact when the whole amount was known (a document's length);
/// when measuring stopped as soon as the limit was crossed (rendering,
/// reading a stream) it is the amount seen so far, and
/// [`at_least`](Self::at_least) is true.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: LimitKind,
    /// Its maximum.
    pub max: u64,
    /// The value that crossed it (a lower bound when `at_least`).
    pub value: u64,
    /// Whether measuring stopped at the limit, so `value` is a lower bound.
    pub at_least: bool,
}

impl LimitExceeded {
    /// `limit` of `max` exceeded by exactly `value`.
    pub fn new(limit: LimitKind, max: u64, value: u64) -> Self {
        Self {
            limit,
            max,
            value,
            at_least: false,
        }
    }

    /// `limit` of `max` exceeded by at least `value` (measuring stopped).
    pub fn at_least(limit: LimitKind, max: u64, value: u64) -> Self {
        Self {
            limit,
            max,
            value,
            at_least: true,
        }
    }

    /// From `usize` amounts (saturating; `usize` fits in `u64` on every
    /// supported target).
    pub(crate) fn of(limit: LimitKind, max: usize, value: usize) -> Self {
        Self::new(limit, to_u64(max), to_u64(value))
    }

    pub(crate) fn of_at_least(limit: LimitKind, max: usize, value: usize) -> Self {
        Self::at_least(limit, to_u64(max), to_u64(value))
    }
}

impl fmt::Display for LimitExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = self.limit.unit();
        if self.at_least {
            f.write_str("at least ")?;
        }
        write!(
            f,
            "{} {unit} is over the `{}` limit of {} {unit}",
            self.value, self.limit, self.max
        )
    }
}

impl std::error::Error for LimitExceeded {}

pub(crate) fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

// ------------------------------------------------------------ fixed limits

/// Most problems [`spec::load`](super::spec::load) reports (further ones are
/// summarised in one last problem).
pub const FIXED_MAX_PROBLEMS: usize = 1000;
/// Most nodes in a workflow (the schema's `nodes.maxItems`).
pub const FIXED_MAX_NODES: usize = 1000;
/// Most edges in a workflow (the schema's `edges.maxItems`).
pub const FIXED_MAX_EDGES: usize = 10_000;
/// Most runs of `run_workflow --repeat`.
pub const FIXED_MAX_REPEAT: usize = 1000;

// ------------------------------------------------------------------ Limits

/// The tunable budgets of workflow loading and running.
///
/// ```
/// use flowtrace_workflow::limits::Limits;
/// let strict = Limits::default()
///     .with_template_output_bytes(64 * 1024)
///     .with_run_bytes(4 * 1024 * 1024);
/// assert!(strict.template_output_bytes < Limits::DEFAULT.template_output_bytes);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest workflow document, in bytes. Files are read up to one byte
    /// past it, never further.
    pub workflow_bytes: usize,
    /// Deepest nesting of arrays and objects in a workflow document (the
    /// top-level object is level 1). At most
    /// [`MAX_JSON_DEPTH`](Self::MAX_JSON_DEPTH), below `serde_json`'s own
    /// recursion limit.
    pub json_depth: usize,
    /// Largest output of one template rendering, in bytes: a prompt, a
    /// system prompt, an input, a tool argument, a simulated response, an
    /// approval message. A template that is a single `{{…}}` placeholder
    /// counts the referenced value as compact JSON (a string as its text).
    pub template_output_bytes: usize,
    /// Most bytes one node execution renders in total (every input,
    /// argument, prompt and response it renders, and the prompt it builds
    /// from its inputs).
    pub node_render_bytes: usize,
    /// Largest result of one tool call, as compact JSON, in bytes; a larger
    /// result fails the call and is not stored.
    pub tool_output_bytes: usize,
    /// Most bytes one run renders and receives from tools in total, across
    /// all its nodes (what its trace and state can grow by, whatever the
    /// number of nodes or their parallelism).
    pub run_bytes: usize,
    /// Largest file the offline runtime's `read_file` reads, in bytes.
    pub read_file_bytes: u64,
    /// Largest price table file `run_workflow --pricing` reads, in bytes.
    pub pricing_bytes: usize,
}

impl Limits {
    /// The defaults.
    pub const DEFAULT: Limits = Limits {
        workflow_bytes: 4 * 1024 * 1024,
        json_depth: 120,
        template_output_bytes: 1024 * 1024,
        node_render_bytes: 8 * 1024 * 1024,
        tool_output_bytes: 16 * 1024 * 1024,
        run_bytes: 32 * 1024 * 1024,
        read_file_bytes: 10 * 1024 * 1024,
        pricing_bytes: 4 * 1024 * 1024,
    };

    /// The most `json_depth` can be: `serde_json` refuses input nested
    /// 128 levels deep with an untyped error of its own.
    pub const MAX_JSON_DEPTH: usize = 126;

    /// `json_depth`, clamped to [`MAX_JSON_DEPTH`](Self::MAX_JSON_DEPTH).
    pub(crate) fn effective_json_depth(&self) -> usize {
        self.json_depth.min(Self::MAX_JSON_DEPTH)
    }
}

/// Builder-style setters, one per field.
macro_rules! setters {
    ($($(#[$doc:meta])* $setter:ident => $field:ident: $ty:ty;)*) => {
        impl Limits {
            $(
                $(#[$doc])*
                #[must_use]
                pub fn $setter(mut self, value: $ty) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

setters! {
    /// Sets [`workflow_bytes`](Self::workflow_bytes).
    with_workflow_bytes => workflow_bytes: usize;
    /// Sets [`json_depth`](Self::json_depth).
    with_json_depth => json_depth: usize;
    /// Sets [`template_output_bytes`](Self::template_output_bytes).
    with_template_output_bytes => template_output_bytes: usize;
    /// Sets [`node_render_bytes`](Self::node_render_bytes).
    with_node_render_bytes => node_render_bytes: usize;
    /// Sets [`tool_output_bytes`](Self::tool_output_bytes).
    with_tool_output_bytes => tool_output_bytes: usize;
    /// Sets [`run_bytes`](Self::run_bytes).
    with_run_bytes => run_bytes: usize;
    /// Sets [`read_file_bytes`](Self::read_file_bytes).
    with_read_file_bytes => read_file_bytes: u64;
    /// Sets [`pricing_bytes`](Self::pricing_bytes).
    with_pricing_bytes => pricing_bytes: usize;
}

impl Default for Limits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

// ---------------------------------------------------------- bounded reads

/// Why [`read_to_string_limited`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than the limit (reading stopped one byte past it).
    #[error("{path}: {limit}")]
    TooLarge {
        /// The file.
        path: String,
        /// The limit and the size seen.
        limit: LimitExceeded,
    },
    /// The file is not UTF-8 text.
    #[error("{path} is not valid UTF-8 text")]
    NotUtf8 {
        /// The file.
        path: String,
    },
}

impl ReadError {
    /// The limit, when the file was too large.
    pub fn limit(&self) -> Option<&LimitExceeded> {
        match self {
            ReadError::TooLarge { limit, .. } => Some(limit),
            _ => None,
        }
    }
}

/// Reads the UTF-8 file at `path`, reading at most `max + 1` bytes: a file
/// (or a device such as `/dev/zero`) longer than `max` is refused with
/// [`ReadError::TooLarge`] naming `kind` after at most `max + 1` bytes.
pub fn read_to_string_limited(
    path: &Path,
    max: usize,
    kind: LimitKind,
) -> Result<String, ReadError> {
    let shown = || path.display().to_string();
    let io = |source| ReadError::Io {
        path: shown(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(to_u64(max).saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() > max {
        return Err(ReadError::TooLarge {
            path: shown(),
            limit: LimitExceeded::of_at_least(kind, max, bytes.len()),
        });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 { path: shown() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit_and_the_value() {
        let e = LimitExceeded::new(LimitKind::WorkflowBytes, 10, 12);
        assert_eq!(
            e.to_string(),
            "12 bytes is over the `workflow_bytes` limit of 10 bytes"
        );
        let e = LimitExceeded::at_least(LimitKind::TemplateOutputBytes, 10, 11);
        assert_eq!(
            e.to_string(),
            "at least 11 bytes is over the `template_output_bytes` limit of 10 bytes"
        );
    }

    #[test]
    fn reads_stop_one_byte_past_the_limit() {
        let e = read_to_string_limited(Path::new("/dev/zero"), 1000, LimitKind::PricingBytes)
            .unwrap_err();
        let limit = e.limit().copied().unwrap();
        assert_eq!(limit.limit, LimitKind::PricingBytes);
        assert_eq!((limit.max, limit.value, limit.at_least), (1000, 1001, true));
    }
}
