//! Loading a document: problems, the layered checks, and the typed result.

use super::checks::Checker;
use super::*;

/// What kind of [`Problem`] was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The text is not JSON (or is too large to read).
    Json,
    /// A JSON Schema violation, or the document does not fit the typed spec.
    Schema,
    /// The embedded schema could not be compiled (a build defect).
    Internal,
    /// Two nodes share an id, or two edges are identical.
    Duplicate,
    /// An object has the same key twice (at the pointer of the repeat).
    DuplicateKey,
    /// The document exceeds one of the loader's
    /// [`limits::Limits`](crate::limits::Limits): its size or
    /// its nesting depth ([`Problem::limit`] says which).
    TooLarge,
    /// `entry`, an edge end or a template names a node that does not exist.
    UnknownNode,
    /// A template reads a node that does not run before the reading node.
    NotBefore,
    /// A template does not parse.
    Template,
    /// A router rule or edge condition does not parse.
    Rule,
    /// A rule, condition or template reads a variable that is not provided.
    UnknownVariable,
    /// The edges form a cycle.
    Cycle,
    /// A node cannot be reached from `entry`.
    Unreachable,
    /// An LLM node or fallback names an unregistered provider.
    UnknownProvider,
    /// A tool node names an unregistered tool.
    UnknownTool,
    /// A tool node's arguments do not fit the tool's schema (missing,
    /// unknown, or a literal value of the wrong shape).
    ToolArguments,
    /// A limit is out of range or inconsistent.
    Limits,
    /// Any other inconsistency (misplaced `when`, simulated options on a
    /// real provider, reserved input names, retry delays).
    Invalid,
    /// Stands for the problems beyond [`MAX_PROBLEMS`].
    Truncated,
}

/// One problem in a workflow document.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// JSON pointer (RFC 6901) of the offending value, like
    /// `/nodes/2/config/rule`; empty for the whole document.
    pub pointer: String,
    /// What kind of problem this is.
    pub kind: ProblemKind,
    /// What is wrong (includes line/column when known).
    pub message: String,
    /// 1-based line: in the document for [`ProblemKind::Json`], inside the
    /// string for [`ProblemKind::Template`].
    pub line: Option<usize>,
    /// 1-based column in characters: in the document for
    /// [`ProblemKind::Json`], inside the string for template and rule errors.
    pub column: Option<usize>,
    /// The limit exceeded, for [`ProblemKind::TooLarge`] and for rules and
    /// templates over one of their fixed limits.
    pub limit: Option<LimitExceeded>,
}

impl Problem {
    pub(crate) fn new(
        pointer: impl Into<String>,
        kind: ProblemKind,
        message: impl Into<String>,
    ) -> Self {
        Problem {
            pointer: pointer.into(),
            kind,
            message: message.into(),
            line: None,
            column: None,
            limit: None,
        }
    }

    pub(crate) fn with_limit(mut self, limit: Option<LimitExceeded>) -> Self {
        self.limit = limit;
        self
    }

    pub(super) fn at(mut self, line: Option<usize>, column: Option<usize>) -> Self {
        self.line = line;
        self.column = column;
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.pointer.is_empty() {
            write!(f, "(document): {}", self.message)
        } else {
            write!(f, "{}: {}", self.pointer, self.message)
        }
    }
}

/// Every problem found while loading a workflow; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadErrors {
    pub(super) problems: Vec<Problem>,
}

impl LoadErrors {
    pub(crate) fn from_problems(problems: Vec<Problem>) -> Self {
        Self { problems }
    }

    /// The problems, schema violations first, then semantic ones.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Takes the problems.
    pub fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// Number of problems.
    pub fn len(&self) -> usize {
        self.problems.len()
    }

    /// Always false: a `LoadErrors` holds at least one problem.
    pub fn is_empty(&self) -> bool {
        self.problems.is_empty()
    }

    /// Iterates over the problems.
    pub fn iter(&self) -> std::slice::Iter<'_, Problem> {
        self.problems.iter()
    }
}

impl<'a> IntoIterator for &'a LoadErrors {
    type Item = &'a Problem;
    type IntoIter = std::slice::Iter<'a, Problem>;
    fn into_iter(self) -> Self::IntoIter {
        self.problems.iter()
    }
}

impl fmt::Display for LoadErrors {
    /// One problem per line, `pointer: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/// Parses and validates a workflow document, reporting every problem at
/// once (see the [module docs](super) for what is checked), with the
/// default [`Limits`].
pub fn load(json: &str, known: &Known) -> Result<WorkflowSpec, LoadErrors> {
    load_with(json, known, &InputLimits::default())
}

/// [`load`] with the document size and nesting limits of `limits`.
pub fn load_with(
    json: &str,
    known: &Known,
    limits: &InputLimits,
) -> Result<WorkflowSpec, LoadErrors> {
    let fail = |problem: Problem| LoadErrors {
        problems: vec![problem],
    };
    if json.len() > limits.workflow_bytes {
        let limit = LimitExceeded::of(LimitKind::WorkflowBytes, limits.workflow_bytes, json.len());
        return Err(fail(
            Problem::new(
                "",
                ProblemKind::TooLarge,
                format!("document too large: {limit}"),
            )
            .with_limit(Some(limit)),
        ));
    }
    let (mut value, mut problems) = document_problems(json, limits)?;
    document::normalize_integers(&mut value);
    problems.extend(validate(&value, known));
    if !problems.is_empty() {
        truncate(&mut problems);
        return Err(LoadErrors { problems });
    }
    to_spec(value)
}

/// Validates an already parsed document like [`load`] and converts it into
/// the typed spec. (Repeated keys cannot be detected here: the parser that
/// built `value` already dropped them.)
pub fn load_value(mut value: Value, known: &Known) -> Result<WorkflowSpec, LoadErrors> {
    document::normalize_integers(&mut value);
    let problems = validate(&value, known);
    if !problems.is_empty() {
        return Err(LoadErrors { problems });
    }
    to_spec(value)
}

/// Parses a JSON document within `limits.json_depth`: the value and a
/// problem for every repeated key, or the one problem that stopped parsing
/// (not JSON, or nested too deeply).
pub(crate) fn document_problems(
    json: &str,
    limits: &InputLimits,
) -> Result<(Value, Vec<Problem>), LoadErrors> {
    let fail = |problem: Problem| LoadErrors {
        problems: vec![problem],
    };
    let parsed = match document::parse(json, limits.effective_json_depth(), MAX_PROBLEMS) {
        Ok(parsed) => parsed,
        Err(ParseFailure::Json(e)) => {
            return Err(fail(
                Problem::new("", ProblemKind::Json, format!("not valid JSON: {e}"))
                    .at(Some(e.line()), Some(e.column())),
            ));
        }
        Err(ParseFailure::TooDeep { pointer, depth }) => {
            let limit =
                LimitExceeded::of(LimitKind::JsonDepth, limits.effective_json_depth(), depth);
            return Err(fail(
                Problem::new(
                    clip(&pointer, MAX_MESSAGE_CHARS),
                    ProblemKind::TooLarge,
                    format!("arrays and objects nested too deeply: {limit}"),
                )
                .with_limit(Some(limit)),
            ));
        }
    };
    let mut problems: Vec<Problem> = parsed
        .duplicates
        .iter()
        .map(|pointer| {
            let key = pointer.rsplit('/').next().unwrap_or_default();
            let key = key.replace("~1", "/").replace("~0", "~");
            Problem::new(
                pointer.clone(),
                ProblemKind::DuplicateKey,
                format!(
                    "duplicate key `{}`: the object already has this key, and only one value can be kept",
                    quote(&key)
                ),
            )
        })
        .collect();
    if parsed.more_duplicates > 0 {
        problems.push(Problem::new(
            "",
            ProblemKind::Truncated,
            format!("{} more duplicate keys not shown", parsed.more_duplicates),
        ));
    }
    Ok((parsed.value, problems))
}

fn to_spec(value: Value) -> Result<WorkflowSpec, LoadErrors> {
    serde_json::from_value(value).map_err(|e| LoadErrors {
        problems: vec![Problem::new(
            "",
            ProblemKind::Schema,
            format!("does not fit the workflow format: {e}"),
        )],
    })
}

/// Cuts `problems` to [`MAX_PROBLEMS`], the last one saying how many more
/// there were.
fn truncate(problems: &mut Vec<Problem>) {
    if problems.len() > MAX_PROBLEMS {
        let dropped = problems.len() - (MAX_PROBLEMS - 1);
        problems.truncate(MAX_PROBLEMS - 1);
        problems.push(Problem::new(
            "",
            ProblemKind::Truncated,
            format!("{dropped} more problems not shown"),
        ));
    }
}

/// Runs the schema and semantic checks on `value` and returns every problem
/// (empty when the document is valid).
pub fn validate(value: &Value, known: &Known) -> Vec<Problem> {
    let mut problems = Vec::new();
    match &*SCHEMA {
        Ok(validator) => schema_problems(validator, value, &mut problems),
        Err(e) => problems.push(Problem::new(
            "",
            ProblemKind::Internal,
            format!("the embedded workflow schema does not compile: {e}"),
        )),
    }
    // Pointers of scalar values the schema already rejected: a semantic
    // problem at the same place would only repeat it.
    let rejected: HashSet<String> = problems
        .iter()
        .filter(|p| value.pointer(&p.pointer).is_some_and(is_scalar))
        .map(|p| p.pointer.clone())
        .collect();
    let mut semantic = Vec::new();
    Checker::new(value, known, &mut semantic).run();
    problems.extend(
        semantic
            .into_iter()
            .filter(|p| !rejected.contains(&p.pointer)),
    );
    truncate(&mut problems);
    problems
}

fn is_scalar(v: &Value) -> bool {
    !(v.is_object() || v.is_array())
}

pub(super) static SCHEMA: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile_schema(SCHEMA_V1));

pub(super) fn compile_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    jsonschema::draft202012::new(&schema).map_err(|e| clip(&e.to_string(), MAX_MESSAGE_CHARS))
}

fn schema_problems(validator: &jsonschema::Validator, value: &Value, out: &mut Vec<Problem>) {
    for error in validator.iter_errors(value) {
        let short = match error.instance().as_ref() {
            Value::String(s) => s.chars().nth(MAX_QUOTE_CHARS).is_none(),
            Value::Array(_) | Value::Object(_) => false,
            _ => true,
        };
        let mut message = if short {
            error.to_string()
        } else {
            error.masked_with("value").to_string()
        };
        let pointer = error.instance_path().to_string();
        if let jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected } =
            error.kind()
        {
            let model = value
                .pointer(&pointer)
                .is_some_and(|v| v.get("provider").is_some());
            let hints: Vec<String> = unexpected
                .iter()
                .filter_map(|key| renamed_key_hint(key, model))
                .collect();
            if !hints.is_empty() {
                message = format!("{message}; hint: {}", hints.join("; "));
            }
        }
        out.push(Problem::new(
            pointer,
            ProblemKind::Schema,
            clip(&message, MAX_MESSAGE_CHARS),
        ));
        if out.len() > MAX_PROBLEMS {
            break;
        }
    }
}

/// Options of the simulated provider, as spelled before they moved into
/// its `simulated` object (and after).
const SIMULATED_KEYS: [(&str, &str); 8] = [
    ("response", "response"),
    ("usage", "usage"),
    ("latency_ms", "latencyMs"),
    ("latencyMs", "latencyMs"),
    ("fail_first", "failFirst"),
    ("failFirst", "failFirst"),
    ("fail_kind", "failKind"),
    ("failKind", "failKind"),
];

/// A hint for an unexpected key the format spells differently: a
/// snake_case key (the format is camelCase), or, in a model config
/// (`model`: an LLM config or a fallback), a simulated-provider option
/// outside the `simulated` object.
pub(super) fn renamed_key_hint(key: &str, model: bool) -> Option<String> {
    let simulated = SIMULATED_KEYS.iter().find(|(old, _)| *old == key);
    if let (true, Some((_, new))) = (model, simulated) {
        return Some(format!(
            "`{}` is an option of the simulated provider: write it as `simulated.{new}`",
            quote(key)
        ));
    }
    let camel = camel_case(key)?;
    Some(format!(
        "the format is camelCase: write `{}` as `{}`",
        quote(key),
        quote(&camel)
    ))
}

/// `key` in camelCase (`max_tokens` → `maxTokens`), when it has an
/// underscore between words.
fn camel_case(key: &str) -> Option<String> {
    let trimmed = key.trim_matches('_');
    if !trimmed.contains('_') {
        return None;
    }
    let mut out = String::with_capacity(trimmed.len());
    let mut upper = false;
    for c in trimmed.chars() {
        if c == '_' {
            upper = !out.is_empty();
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    Some(out)
}
