//! Built-in [`Tool`]s for JSON workflows.
//!
//! * [`ReadFile`] (`read_file`) — reads a UTF-8 text file confined to a root
//!   directory, optionally parsing it as CSV into rows;
//! * [`TransformJson`] (`transform_json`) — queries or reshapes JSON with a
//!   [JMESPath](https://jmespath.org/) expression.
//!
//! Both describe their arguments with a JSON Schema
//! ([`Tool::parameters`]) and fail with a [`ToolError`] whose
//! [`ToolErrorKind`] says why (invalid input, not found, permission denied,
//! limit exceeded, …), with the underlying I/O error as its `source()`; bad
//! arguments are never retryable, so a retry policy does not call them again
//! in vain.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use async_trait::async_trait;
use flowtrace_core::tool::ToolErrorKind;
use flowtrace_core::{Tool, ToolError};
use jmespath::ast::Ast;
use serde_json::{Value, json};

/// The name of [`ReadFile`].
pub const READ_FILE: &str = "read_file";
/// The name of [`TransformJson`].
pub const TRANSFORM_JSON: &str = "transform_json";

// ---------------------------------------------------------------- read_file

/// Reads a UTF-8 text file under a root directory.
///
/// Arguments: `{"path": "relative/file.txt"}`. Result:
/// `{"content": "…", "path": "relative/file.txt", "bytes": 42}`.
///
/// With `"format": "csv"` the file is also parsed as CSV (with the
/// [`csv`] crate; the first record is the header) and the result adds
/// `"columns"` (the header) and `"rows"`: one object per record, keyed by
/// column, where fields written as plain numbers (`42`, `-3.5`; integers
/// that fit in an `i64`) become JSON numbers, empty fields become `null` and
/// everything else keeps its exact text (`00501`, `+5`, a quoted
/// `" padded "`). Ragged or malformed CSV, and a header naming a column
/// twice, are errors.
///
/// The path must be relative and free of `..` components; the file it
/// names is resolved with every symlink followed and must still lie under
/// the (equally resolved) root, so a symlink cannot lead outside it. Files
/// over the size limit ([`DEFAULT_MAX_BYTES`](Self::DEFAULT_MAX_BYTES)
/// unless set with [`max_bytes`](Self::max_bytes)), non-regular files and
/// files that are not UTF-8 are refused. The file's type is checked before
/// it is opened (and again on the opened file, which is opened with
/// `O_NONBLOCK`), so a FIFO or a device under the root is refused at once
/// instead of blocking the call. Error messages name the requested
/// relative path, never the root's location on the host.
///
/// The check and the read are separate steps: someone who can rewrite the
/// directory tree under the root between them could still swap a checked
/// directory for a symlink. Give the tool a root that the model cannot
/// write to.
#[derive(Clone, Debug)]
pub struct ReadFile {
    root: PathBuf,
    max_bytes: u64,
}

impl ReadFile {
    /// The default size limit: 10 MiB.
    pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

    /// A tool reading files under `root` (which need not exist yet; it is
    /// resolved on every call).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
        }
    }

    /// Sets the largest file it reads, in bytes.
    #[must_use]
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The root directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn error(&self, kind: ToolErrorKind, message: impl Into<String>) -> ToolError {
        ToolError::new(READ_FILE, kind, message)
    }

    /// A failed file operation, with the I/O error as its source.
    fn io_error(&self, message: String, e: std::io::Error) -> ToolError {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ToolErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied => ToolErrorKind::PermissionDenied,
            _ => ToolErrorKind::Failed,
        };
        self.error(kind, message).with_source(e)
    }

    /// Checks the requested path's shape: relative, no `..`, not empty.
    fn check_relative<'a>(&self, path: &'a str) -> Result<&'a Path, ToolError> {
        if path.is_empty() {
            return Err(self.error(ToolErrorKind::InvalidInput, "\"path\" must not be empty"));
        }
        if path.contains('\0') {
            return Err(self.error(
                ToolErrorKind::InvalidInput,
                "\"path\" must not contain NUL characters",
            ));
        }
        let rel = Path::new(path);
        let mut named = false;
        for component in rel.components() {
            match component {
                Component::Prefix(_) | Component::RootDir => {
                    return Err(self.error(
                        ToolErrorKind::PermissionDenied,
                        format!(
                            "{path:?} is an absolute path; give a path relative to the root directory"
                        ),
                    ));
                }
                Component::ParentDir => {
                    return Err(self.error(
                        ToolErrorKind::PermissionDenied,
                        format!("{path:?} must not contain \"..\" components"),
                    ));
                }
                Component::CurDir => {}
                Component::Normal(_) => named = true,
            }
        }
        if !named {
            return Err(self.error(
                ToolErrorKind::InvalidInput,
                format!("{path:?} does not name a file"),
            ));
        }
        Ok(rel)
    }

    /// Resolves, checks and reads `rel` (blocking).
    fn read_blocking(&self, path: &str, rel: &Path) -> Result<(String, u64), ToolError> {
        let root = std::fs::canonicalize(&self.root).map_err(|e| {
            let message = format!("the root directory is not available ({})", e.kind());
            self.io_error(message, e)
        })?;
        let full = std::fs::canonicalize(root.join(rel)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => self.io_error(format!("file not found: {path:?}"), e),
            kind => self.io_error(format!("cannot open {path:?} ({kind})"), e),
        })?;
        if !full.starts_with(&root) {
            return Err(self.error(
                ToolErrorKind::PermissionDenied,
                format!("{path:?} resolves outside the root directory (through a symlink)"),
            ));
        }
        // Check the type before opening: opening a FIFO blocks until a
        // writer appears, and a device may never end.
        let meta = std::fs::symlink_metadata(&full)
            .map_err(|e| self.io_error(format!("cannot open {path:?} ({})", e.kind()), e))?;
        self.check_regular(path, &meta)?;
        let file = open_nonblocking(&full)
            .map_err(|e| self.io_error(format!("cannot open {path:?} ({})", e.kind()), e))?;
        // The path may have been swapped between the check and the open.
        let meta = file
            .metadata()
            .map_err(|e| self.io_error(format!("cannot read {path:?} ({})", e.kind()), e))?;
        self.check_regular(path, &meta)?;
        if meta.len() > self.max_bytes {
            return Err(self.too_large(path, meta.len()));
        }
        // The file may grow after the check: read at most one byte past the
        // limit to notice.
        let mut bytes = Vec::new();
        file.take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_error(format!("cannot read {path:?} ({})", e.kind()), e))?;
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return Err(self.too_large(path, len));
        }
        let content = String::from_utf8(bytes).map_err(|e| {
            self.error(
                ToolErrorKind::InvalidInput,
                format!("{path:?} is not valid UTF-8 text"),
            )
            .with_source(e.utf8_error())
        })?;
        Ok((content, len))
    }

    /// Refuses anything but a regular file, naming what it is.
    fn check_regular(&self, path: &str, meta: &std::fs::Metadata) -> Result<(), ToolError> {
        let kind = meta.file_type();
        if kind.is_file() {
            return Ok(());
        }
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symlink"
        } else {
            special_file_kind(&kind)
        };
        Err(self.error(
            ToolErrorKind::InvalidInput,
            format!("{path:?} is not a regular file (it is {what})"),
        ))
    }

    fn too_large(&self, path: &str, len: u64) -> ToolError {
        self.error(
            ToolErrorKind::LimitExceeded,
            format!(
                "{path:?} is {len} bytes, over the {}-byte limit",
                self.max_bytes
            ),
        )
    }
}

/// What a file that is neither a regular file, a directory nor a symlink is.
#[cfg(unix)]
fn special_file_kind(kind: &std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_fifo() {
        "a fifo"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() || kind.is_char_device() {
        "a device"
    } else {
        "a special file"
    }
}

#[cfg(not(unix))]
fn special_file_kind(_kind: &std::fs::FileType) -> &'static str {
    "a special file"
}

/// Opens `path` for reading without blocking on a FIFO or device that was
/// swapped in after the type check (`O_NONBLOCK`; reads from a regular file
/// are unaffected).
#[cfg(unix)]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
}

#[cfg(not(unix))]
fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::open(path)
}

#[async_trait]
impl Tool for ReadFile {
    fn name(&self) -> &str {
        READ_FILE
    }

    fn description(&self) -> &str {
        "Reads a UTF-8 text file from the workspace directory and returns its content."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {
                    "type": "string",
                    "minLength": 1,
                    "description": "Path of the file, relative to the workspace directory (no \"..\")."
                },
                "format": {
                    "type": "string",
                    "enum": ["text", "csv"],
                    "description": "\"csv\" also returns the file's columns and rows (default \"text\")."
                }
            },
            "required": ["path"],
            "additionalProperties": false
        })
    }

    /// Reads the file on Tokio's blocking pool.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the result; a read already started
    /// finishes in the background. Reading has no side effects.
    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let path = args
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                self.error(
                    ToolErrorKind::InvalidInput,
                    "missing string argument \"path\"",
                )
            })?
            .to_string();
        let csv = match args.get("format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f == "text" => false,
            Some(Value::String(f)) if f == "csv" => true,
            Some(other) => {
                return Err(self.error(
                    ToolErrorKind::InvalidInput,
                    format!("\"format\" must be \"text\" or \"csv\", got {other}"),
                ));
            }
        };
        self.check_relative(&path)?;
        let tool = self.clone();
        let read_path = path.clone();
        let (content, bytes) = tokio::task::spawn_blocking(move || {
            tool.read_blocking(&read_path, Path::new(&read_path))
        })
        .await
        .map_err(|e| {
            ToolError::new(
                READ_FILE,
                ToolErrorKind::Unavailable,
                "the file read was interrupted",
            )
            .with_source(e)
        })??;
        let mut result = json!({"content": content, "path": path, "bytes": bytes});
        if csv {
            let (columns, rows) = parse_csv(&content).map_err(|e| {
                self.error(
                    ToolErrorKind::InvalidInput,
                    format!("{path:?} is not valid CSV: {e}"),
                )
            })?;
            result["columns"] = Value::Array(columns.into_iter().map(Value::String).collect());
            result["rows"] = Value::Array(rows);
        }
        Ok(result)
    }
}

/// The header and the records of a CSV text, each record an object keyed
/// by column with numbers and empty fields typed.
fn parse_csv(text: &str) -> Result<(Vec<String>, Vec<Value>), String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .trim(csv::Trim::Headers)
        .from_reader(text.as_bytes());
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_string)
        .collect();
    let mut seen = std::collections::HashSet::new();
    for column in &columns {
        if !seen.insert(column.as_str()) {
            return Err(format!("the header names column {column:?} twice"));
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| e.to_string())?;
        let mut row = serde_json::Map::with_capacity(columns.len());
        for (column, field) in columns.iter().zip(record.iter()) {
            row.insert(column.clone(), csv_value(field));
        }
        rows.push(Value::Object(row));
    }
    Ok((columns, rows))
}

/// A field as JSON: `null` when empty, a number when it is written the way
/// JSON writes numbers (`42`, `-3.5`; an integer only if it fits in an
/// `i64`), otherwise the text as it is — so ids and codes such as `00501`,
/// `+5`, `-0`, `1e400` or `12345678901234567890` keep their exact text.
fn csv_value(field: &str) -> Value {
    if field.is_empty() {
        return Value::Null;
    }
    if is_plain_number(field) {
        if let Ok(n) = field.parse::<i64>() {
            return Value::from(n);
        }
        if field.contains('.')
            && let Some(n) = field
                .parse::<f64>()
                .ok()
                .and_then(serde_json::Number::from_f64)
        {
            return Value::Number(n);
        }
    }
    Value::String(field.to_string())
}

/// `-?(0|[1-9][0-9]*)(\.[0-9]+)?`, and not `-0`.
fn is_plain_number(field: &str) -> bool {
    let digits = field.strip_prefix('-').unwrap_or(field);
    let (int, frac) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    let int_ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && (int == "0" || !int.starts_with('0'));
    let frac_ok = frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()));
    int_ok && frac_ok && field != "-0"
}

// ----------------------------------------------------------- transform_json

/// Evaluates a [JMESPath](https://jmespath.org/) expression against JSON.
///
/// Arguments: `{"input": <any JSON>, "expression": "people[?age > `30`].name"}`.
/// Result: whatever the expression selects (`null` when nothing matches).
///
/// Expressions longer than the limit
/// ([`DEFAULT_MAX_EXPRESSION_LEN`](Self::DEFAULT_MAX_EXPRESSION_LEN)
/// characters unless set with
/// [`max_expression_len`](Self::max_expression_len)) or with more than
/// [`MAX_OPERATORS`](Self::MAX_OPERATORS) operators are refused, and so
/// are parsed expressions nested deeper than
/// [`MAX_EXPRESSION_DEPTH`](Self::MAX_EXPRESSION_DEPTH) and inputs whose
/// arrays and objects nest deeper than
/// [`MAX_INPUT_DEPTH`](Self::MAX_INPUT_DEPTH) (both measured without
/// recursion): the JMESPath parser recurses once per operator, and the
/// interpreter and the conversions once per level of the expression and of
/// the values. Within these bounds an evaluation needs several MiB of
/// stack in an unoptimised build — more than the 2 MiB that Tokio gives its
/// workers and blocking threads by default — so evaluations run on a small,
/// fixed pool of threads with [`STACK_BYTES`](Self::STACK_BYTES) stacks
/// (at most [`EVAL_THREADS`](Self::EVAL_THREADS), started on first use and
/// shared by every call; calls beyond that queue), never on the caller's
/// async worker and never on a thread started for the call. A unit test
/// runs the worst accepted cases on a thread with half that stack.
///
/// A short expression can still build a huge value (`[@,@]` doubles its
/// input; twenty of them in a row make megabytes into terabytes) or do
/// unbounded work, and the JMESPath interpreter cannot be interrupted. So
/// before evaluating, the tool computes from the expression and the size
/// of the input (as compact JSON) an upper bound on the size of the result
/// and of every intermediate value, and on the work of the evaluation
/// (nodes visited plus bytes of the values they take and yield; a
/// projection counts its right-hand side once per possible element). It
/// refuses the call, with a permanent error naming the limit and the bound,
/// when
///
/// * the result could exceed
///   [`DEFAULT_MAX_OUTPUT_BYTES`](Self::DEFAULT_MAX_OUTPUT_BYTES) (unless
///   set with [`max_output_bytes`](Self::max_output_bytes)),
/// * an intermediate value could exceed that limit or the input's size,
///   whichever is larger, or
/// * the work could exceed [`DEFAULT_MAX_WORK`](Self::DEFAULT_MAX_WORK)
///   units (unless set with [`max_work`](Self::max_work)).
///
/// The bounds hold for every input of that size, so an expression that
/// multiplies small elements (`[*].{a: a, b: b}` over a long array) may be
/// refused for inputs of a few megabytes even when the actual result would
/// be small. The result is then converted to JSON counting its bytes, and
/// refused as soon as it passes the output limit. An evaluation that has
/// started always ends within its work bound, even if the call that started
/// it was dropped.
#[derive(Clone, Debug)]
pub struct TransformJson {
    max_expression_len: usize,
    max_output_bytes: usize,
    max_work: u64,
}

/// The limits one evaluation runs under.
#[derive(Clone, Copy, Debug)]
struct Budget {
    max_output_bytes: u64,
    max_work: u64,
}

impl Default for TransformJson {
    fn default() -> Self {
        Self::new()
    }
}

impl TransformJson {
    /// The default longest expression, in characters.
    pub const DEFAULT_MAX_EXPRESSION_LEN: usize = 4096;
    /// The most operator characters (`.`, `|`, `[`, `(`, `{`, `!`, `&`,
    /// `<`, `>`, `=`, `?`, `*`, `@`, outside quotes and literals) an
    /// expression may contain; this bounds the parser's recursion.
    pub const MAX_OPERATORS: usize = 256;
    /// The deepest parsed expression accepted: the height of its syntax
    /// tree (a lone field is 1; each operator adds at most 2 levels, and a
    /// literal adds its own nesting). This bounds the interpreter's
    /// recursion.
    pub const MAX_EXPRESSION_DEPTH: usize = 2 * Self::MAX_OPERATORS + 8;
    /// The deepest input accepted: arrays and objects nested at most this
    /// many levels (`serde_json` refuses deeper text when parsing, so any
    /// parsed JSON passes). This bounds the conversions' recursion.
    pub const MAX_INPUT_DEPTH: usize = 128;
    /// The stack of each thread of the evaluation pool: 16 MiB, twice what
    /// the worst accepted evaluation needs in an unoptimised build.
    pub const STACK_BYTES: usize = 16 * 1024 * 1024;
    /// The most threads in the evaluation pool (fewer on machines with
    /// fewer CPUs).
    pub const EVAL_THREADS: usize = 4;
    /// The default largest result (and intermediate value), as compact
    /// JSON: 16 MiB, the default `tool_output_bytes` of the `flowtrace`
    /// facade.
    pub const DEFAULT_MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;
    /// The default most work units of one evaluation: 2^28 (about 268
    /// million), a few seconds at most.
    pub const DEFAULT_MAX_WORK: u64 = 1 << 28;

    /// The tool with the default limits.
    pub fn new() -> Self {
        Self {
            max_expression_len: Self::DEFAULT_MAX_EXPRESSION_LEN,
            max_output_bytes: Self::DEFAULT_MAX_OUTPUT_BYTES,
            max_work: Self::DEFAULT_MAX_WORK,
        }
    }

    /// Sets the largest result (and intermediate value, unless the input is
    /// larger) an evaluation may build, in bytes of compact JSON.
    #[must_use]
    pub fn max_output_bytes(mut self, max: usize) -> Self {
        self.max_output_bytes = max;
        self
    }

    /// Sets the most work units one evaluation may take (see the type's
    /// documentation for what a unit is).
    #[must_use]
    pub fn max_work(mut self, max: u64) -> Self {
        self.max_work = max;
        self
    }

    fn budget(&self) -> Budget {
        Budget {
            max_output_bytes: u64::try_from(self.max_output_bytes).unwrap_or(u64::MAX),
            max_work: self.max_work,
        }
    }

    /// Sets the longest expression it accepts, in characters (the operator
    /// limit still applies).
    #[must_use]
    pub fn max_expression_len(mut self, max: usize) -> Self {
        self.max_expression_len = max;
        self
    }

    fn check_expression(&self, expression: &str) -> Result<(), ToolError> {
        let len = expression.chars().count();
        if len > self.max_expression_len {
            return Err(ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "expression is {len} characters, over the {}-character limit",
                    self.max_expression_len
                ),
            ));
        }
        let operators = count_operators(expression);
        if operators > Self::MAX_OPERATORS {
            return Err(ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "expression has {operators} operators, over the limit of {}",
                    Self::MAX_OPERATORS
                ),
            ));
        }
        Ok(())
    }
}

/// The nesting of `value`'s arrays and objects (a scalar is 0), measured
/// without recursion.
fn value_depth(value: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(map) => stack.extend(map.values().map(|v| (v, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// The nesting of a JMESPath value's arrays and objects (a scalar is 0),
/// measured without recursion.
fn variable_depth(value: &jmespath::Variable) -> usize {
    use jmespath::Variable;
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((value, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        match value {
            Variable::Array(items) => stack.extend(items.iter().map(|v| (&**v, depth + 1))),
            Variable::Object(map) => stack.extend(map.values().map(|v| (&**v, depth + 1))),
            _ => {}
        }
    }
    deepest
}

/// The height of `ast` (a leaf is 1; a literal adds its nesting), measured
/// without recursion.
fn ast_depth(ast: &Ast) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(ast, 1usize)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let below = depth + 1;
        match node {
            Ast::Comparison { lhs, rhs, .. }
            | Ast::Subexpr { lhs, rhs, .. }
            | Ast::Projection { lhs, rhs, .. }
            | Ast::And { lhs, rhs, .. }
            | Ast::Or { lhs, rhs, .. } => {
                stack.push((lhs, below));
                stack.push((rhs, below));
            }
            Ast::Condition {
                predicate, then, ..
            } => {
                stack.push((predicate, below));
                stack.push((then, below));
            }
            Ast::Expref { ast: node, .. }
            | Ast::Flatten { node, .. }
            | Ast::Not { node, .. }
            | Ast::ObjectValues { node, .. } => stack.push((node, below)),
            Ast::Function { args: nodes, .. }
            | Ast::MultiList {
                elements: nodes, ..
            } => stack.extend(nodes.iter().map(|n| (n, below))),
            Ast::MultiHash { elements, .. } => {
                stack.extend(elements.iter().map(|pair| (&pair.value, below)));
            }
            Ast::Literal { value, .. } => {
                deepest = deepest.max(depth.saturating_add(variable_depth(value)));
            }
            Ast::Identity { .. } | Ast::Field { .. } | Ast::Index { .. } | Ast::Slice { .. } => {}
        }
    }
    deepest
}

/// Counts the characters that can open a nesting level, outside quoted
/// identifiers, raw strings and literals.
fn count_operators(expression: &str) -> usize {
    let mut count = 0;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expression.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' | '`' => quote = Some(c),
                '.' | '|' | '[' | '(' | '{' | '!' | '&' | '<' | '>' | '=' | '?' | '*' | '@' => {
                    count += 1
                }
                _ => {}
            },
        }
    }
    count
}

/// Bytes of `value` as compact JSON.
fn json_bytes(value: &impl serde::Serialize) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => u64::MAX,
    }
}

/// Refuses `ast` when its bounds over an input of `input_bytes` pass the
/// budget.
fn check_cost(ast: &Ast, input_bytes: u64, budget: Budget) -> Result<(), ToolError> {
    let refuse =
        |message: String| ToolError::new(TRANSFORM_JSON, ToolErrorKind::LimitExceeded, message);
    let mut analysis = Analysis::default();
    let cost = analysis.cost(ast, input_bytes.max(1)).map_err(refuse)?;
    let max = budget.max_output_bytes;
    if cost.size > max {
        return Err(refuse(format!(
            "the result could reach {} bytes for this {input_bytes}-byte input, \
             over the `max_output_bytes` limit of {max} bytes",
            cost.size
        )));
    }
    let intermediate = max.max(input_bytes);
    if analysis.largest > intermediate {
        return Err(refuse(format!(
            "an intermediate value could reach {} bytes for this {input_bytes}-byte input, \
             over the `max_output_bytes` limit of {intermediate} bytes (or the input's size)",
            analysis.largest
        )));
    }
    if cost.work > budget.max_work {
        return Err(refuse(format!(
            "the evaluation could take {} work units for this {input_bytes}-byte input, \
             over the `max_work` limit of {} units",
            cost.work, budget.max_work
        )));
    }
    Ok(())
}

/// Compiles, bounds and evaluates `expression` over an input within
/// [`TransformJson::MAX_INPUT_DEPTH`] (blocking: call it off the async
/// workers).
fn evaluate(expression: &str, input: &Value, budget: Budget) -> Result<Value, ToolError> {
    let compiled = jmespath::compile(expression).map_err(|e| {
        ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::InvalidInput,
            format!(
                "invalid JMESPath expression: {} (at character {})",
                e.reason, e.offset
            ),
        )
    })?;
    let depth = ast_depth(compiled.as_ast());
    if depth > TransformJson::MAX_EXPRESSION_DEPTH {
        return Err(ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::LimitExceeded,
            format!(
                "the expression nests {depth} levels deep, over the limit of {}",
                TransformJson::MAX_EXPRESSION_DEPTH
            ),
        ));
    }
    check_cost(compiled.as_ast(), json_bytes(input), budget)?;
    let result = compiled.search(input).map_err(|e| {
        ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::Failed,
            format!("JMESPath evaluation failed: {}", e.reason),
        )
    })?;
    let max = budget.max_output_bytes;
    Converter { max, bytes: 0 }
        .convert(&result)
        .map_err(|seen| {
            ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "the result is at least {seen} bytes, over the `max_output_bytes` limit of {max} bytes"
                ),
            )
        })
}

// ------------------------------------------------------ cost of evaluation

/// Size of `null`, `true` and `false` as JSON (an upper bound for every
/// boolean or null result).
const SCALAR_BYTES: u64 = 5;
/// An upper bound on a number as JSON (`-1.2345678901234567e-308`).
const NUMBER_BYTES: u64 = 32;

/// Upper bounds on what evaluating an expression builds and does.
#[derive(Clone, Copy, Debug)]
struct Cost {
    /// Bytes of the value it yields, as compact JSON.
    size: u64,
    /// Work units: AST nodes visited plus bytes of the values they take and
    /// yield.
    work: u64,
    /// Whether the value is `null` or no larger than the input (a part of
    /// it, a filtered or reordered copy): then a projection's results
    /// together are no larger than the elements they come from.
    shrinks: bool,
}

impl Cost {
    fn new(size: u64, work: u64) -> Self {
        Self {
            size,
            work,
            shrinks: false,
        }
    }

    fn shrinking(size: u64, work: u64) -> Self {
        Self {
            size,
            work,
            shrinks: true,
        }
    }
}

/// Computes [`Cost`]s of an expression's nodes from an upper bound on the
/// size of their input, remembering the largest intermediate value.
///
/// Every bound only grows with the input's size and is convex in it, so
/// over `k` elements of sizes `n_i ≥ 1` summing to at most `m`, the sum of
/// `f(n_i)` is largest when all but one element are one byte long:
/// `max(f(m), f(m - k + 1) + (k - 1)·f(1))` for the largest `k`.
#[derive(Debug, Default)]
struct Analysis {
    largest: u64,
    /// Costs already computed, by node address and input bound (a chain of
    /// projections asks for each node at a handful of input bounds only).
    known: std::collections::HashMap<(usize, u64), Cost>,
}

/// Most node evaluations [`Analysis`] computes for one expression.
const MAX_ANALYSIS_STEPS: usize = 1 << 20;

/// Most elements an array or object of `size` bytes can hold (`[1,1,1]`:
/// one byte and one comma each).
fn elements(size: u64) -> u64 {
    (size.saturating_sub(1) / 2).max(1)
}

/// `1 + log2(n)`, the factor of sorting `n` bytes.
fn log_factor(n: u64) -> u64 {
    u64::from(65 - n.leading_zeros())
}

impl Analysis {
    fn cost(&mut self, ast: &Ast, n: u64) -> Result<Cost, String> {
        let key = (std::ptr::from_ref(ast) as usize, n);
        if let Some(cost) = self.known.get(&key) {
            return Ok(*cost);
        }
        if self.known.len() >= MAX_ANALYSIS_STEPS {
            return Err(format!(
                "the expression is too complex to bound (over {MAX_ANALYSIS_STEPS} analysis steps)"
            ));
        }
        let cost = self.node(ast, n)?;
        self.largest = self.largest.max(cost.size);
        self.known.insert(key, cost);
        Ok(cost)
    }

    /// The cost of evaluating `ast` once per element of a value of at most
    /// `m` bytes, and the size of the array of the results (`keep_nulls`:
    /// `map` keeps them, projections drop them).
    fn each(&mut self, ast: &Ast, m: u64, keep_nulls: bool) -> Result<Cost, String> {
        let k = elements(m);
        let whole = self.cost(ast, m)?;
        let rest = self.cost(ast, m.saturating_sub(k - 1).max(1))?;
        let one = self.cost(ast, 1)?;
        let spread = |f_rest: u64, f_one: u64| {
            f_rest.saturating_add((k - 1).saturating_mul(f_one.saturating_add(1)))
        };
        let results = whole.size.max(spread(rest.size, one.size));
        let size = if whole.shrinks && !keep_nulls {
            // Non-null results are no larger than their elements.
            m.max(2)
        } else {
            results.saturating_add(2).saturating_add(k)
        };
        let work = whole
            .work
            .max(spread(rest.work, one.work))
            .saturating_add(m);
        Ok(Cost {
            size,
            work,
            shrinks: whole.shrinks && !keep_nulls,
        })
    }

    fn node(&mut self, ast: &Ast, n: u64) -> Result<Cost, String> {
        Ok(match ast {
            Ast::Identity { .. } => Cost::shrinking(n, 1),
            Ast::Field { .. } | Ast::Index { .. } => Cost::shrinking(n.max(SCALAR_BYTES), 1),
            Ast::Slice { .. } => {
                let size = n.max(SCALAR_BYTES);
                Cost::shrinking(size, size)
            }
            Ast::Literal { value, .. } => {
                let size = json_bytes(&**value);
                Cost::new(size, size.saturating_add(1))
            }
            Ast::Expref { .. } => {
                return Err(
                    "expression references (&…) are only supported as arguments of \
                     map, sort_by, min_by and max_by"
                        .to_string(),
                );
            }
            Ast::Subexpr { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.cost(rhs, l.size)?;
                Cost {
                    size: r.size,
                    work: l.work.saturating_add(r.work),
                    shrinks: l.shrinks && r.shrinks,
                }
            }
            Ast::Projection { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.each(rhs, l.size, false)?;
                Cost {
                    size: r.size,
                    work: l.work.saturating_add(r.work),
                    shrinks: l.shrinks && r.shrinks,
                }
            }
            Ast::ObjectValues { node, .. } | Ast::Flatten { node, .. } => {
                let c = self.cost(node, n)?;
                Cost {
                    size: c.size.max(SCALAR_BYTES),
                    work: c.work.saturating_add(c.size),
                    shrinks: c.shrinks,
                }
            }
            Ast::MultiList { elements, .. } => {
                let mut total = Cost::new(2, 1);
                for element in elements {
                    let c = self.cost(element, n)?;
                    total.size = total.size.saturating_add(c.size).saturating_add(1);
                    total.work = total.work.saturating_add(c.work).saturating_add(1);
                }
                total
            }
            Ast::MultiHash { elements, .. } => {
                let mut total = Cost::new(2, 1);
                for pair in elements {
                    let c = self.cost(&pair.value, n)?;
                    let key = json_string_bytes(&pair.key).saturating_add(2);
                    total.size = total.size.saturating_add(c.size).saturating_add(key);
                    total.work = total.work.saturating_add(c.work).saturating_add(key);
                }
                total
            }
            Ast::Not { node, .. } => {
                let c = self.cost(node, n)?;
                Cost::new(SCALAR_BYTES, c.work.saturating_add(1))
            }
            Ast::And { lhs, rhs, .. } | Ast::Or { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.cost(rhs, n)?;
                Cost {
                    size: l.size.max(r.size),
                    work: l.work.saturating_add(r.work).saturating_add(1),
                    shrinks: l.shrinks && r.shrinks,
                }
            }
            Ast::Comparison { lhs, rhs, .. } => {
                let l = self.cost(lhs, n)?;
                let r = self.cost(rhs, n)?;
                let work = l
                    .work
                    .saturating_add(r.work)
                    .saturating_add(l.size.min(r.size))
                    .saturating_add(1);
                Cost::new(SCALAR_BYTES, work)
            }
            Ast::Condition {
                predicate, then, ..
            } => {
                let p = self.cost(predicate, n)?;
                let t = self.cost(then, n)?;
                Cost {
                    size: t.size.max(SCALAR_BYTES),
                    work: p.work.saturating_add(t.work).saturating_add(1),
                    shrinks: t.shrinks,
                }
            }
            Ast::Function { name, args, .. } => self.function(name, args, n)?,
        })
    }

    fn function(&mut self, name: &str, args: &[Ast], n: u64) -> Result<Cost, String> {
        // Functions taking an expression apply it to each element of their
        // array argument.
        if matches!(name, "map" | "sort_by" | "min_by" | "max_by") {
            let mut array = Cost::shrinking(0, 1);
            for arg in args {
                if !matches!(arg, Ast::Expref { .. }) {
                    let c = self.cost(arg, n)?;
                    array.size = array.size.max(c.size);
                    array.work = array.work.saturating_add(c.work);
                    array.shrinks &= c.shrinks;
                }
            }
            let mut applied = Cost::new(2, 0);
            for arg in args {
                if let Ast::Expref { ast, .. } = arg {
                    let c = self.each(ast, array.size, true)?;
                    applied.size = applied.size.max(c.size);
                    applied.work = applied.work.saturating_add(c.work);
                }
            }
            let (size, shrinks) = if name == "map" {
                (applied.size, false)
            } else {
                (array.size.max(SCALAR_BYTES), array.shrinks)
            };
            // Sorting compares about k·log2(k) pairs of keys.
            let sort = applied.size.saturating_mul(log_factor(array.size));
            return Ok(Cost {
                size,
                work: array
                    .work
                    .saturating_add(applied.work)
                    .saturating_add(sort)
                    .saturating_add(size),
                shrinks,
            });
        }
        let mut costs = Vec::with_capacity(args.len());
        let mut work: u64 = 1;
        for arg in args {
            let c = self.cost(arg, n)?;
            work = work.saturating_add(c.work).saturating_add(c.size);
            costs.push(c);
        }
        let first = costs.first().map_or(0, |c| c.size);
        let second = costs.get(1).map_or(0, |c| c.size);
        let largest = costs.iter().map(|c| c.size).max().unwrap_or(0);
        let sum = costs.iter().fold(0u64, |a, c| a.saturating_add(c.size));
        let all_shrink = !costs.is_empty() && costs.iter().all(|c| c.shrinks);
        let (size, shrinks) = match name {
            "abs" | "avg" | "ceil" | "floor" | "sum" | "to_number" | "length" => {
                (NUMBER_BYTES, false)
            }
            "type" => (16, false),
            "contains" | "ends_with" | "starts_with" => (SCALAR_BYTES, false),
            "max" | "min" | "not_null" => (largest.max(NUMBER_BYTES), all_shrink),
            "values" | "reverse" => (first.saturating_add(2), all_shrink),
            "keys" | "to_array" => (first.saturating_add(2), false),
            "sort" => {
                work = work.saturating_add(first.saturating_mul(log_factor(first)));
                (first.saturating_add(2), all_shrink)
            }
            "merge" => (sum.saturating_add(2), false),
            // Separators between the strings of the array.
            "join" => (
                first
                    .saturating_mul(elements(second))
                    .saturating_add(second)
                    .saturating_add(2),
                false,
            ),
            // The text of the JSON, with `"` and `\` escaped once more.
            "to_string" => (first.saturating_mul(2).saturating_add(2), false),
            // Unknown functions fail before they run.
            _ => (sum.saturating_add(NUMBER_BYTES), false),
        };
        Ok(Cost {
            size,
            work: work.saturating_add(size),
            shrinks,
        })
    }
}

// ------------------------------------------------- bounded JSON conversion

/// Bytes of `s` as a JSON string.
fn json_string_bytes(s: &str) -> u64 {
    let extra: u64 = s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
            0..=0x1f => 5,
            _ => 0,
        })
        .sum();
    (s.len() as u64).saturating_add(extra).saturating_add(2)
}

/// Converts a JMESPath result to JSON, counting its compact JSON bytes and
/// stopping as soon as they pass `max` (shared values count once per
/// occurrence, as they would be written).
struct Converter {
    max: u64,
    bytes: u64,
}

impl Converter {
    fn add(&mut self, n: u64) -> Result<(), u64> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > self.max {
            Err(self.bytes)
        } else {
            Ok(())
        }
    }

    fn convert(&mut self, value: &jmespath::Variable) -> Result<Value, u64> {
        use jmespath::Variable;
        Ok(match value {
            Variable::Null => {
                self.add(4)?;
                Value::Null
            }
            Variable::Bool(b) => {
                self.add(if *b { 4 } else { 5 })?;
                Value::Bool(*b)
            }
            Variable::Number(n) => {
                self.add(n.to_string().len() as u64)?;
                Value::Number(n.clone())
            }
            Variable::String(s) => {
                self.add(json_string_bytes(s))?;
                Value::String(s.clone())
            }
            Variable::Array(items) => {
                self.add(2)?;
                let mut out = Vec::with_capacity(items.len().min(1024));
                for item in items {
                    self.add(1)?;
                    out.push(self.convert(item)?);
                }
                Value::Array(out)
            }
            Variable::Object(map) => {
                self.add(2)?;
                let mut out = serde_json::Map::new();
                for (key, item) in map {
                    self.add(json_string_bytes(key).saturating_add(2))?;
                    out.insert(key.clone(), self.convert(item)?);
                }
                Value::Object(out)
            }
            Variable::Expref(ast) => {
                let text = format!("<expression: {ast:?}>");
                self.add(json_string_bytes(&text))?;
                Value::String(text)
            }
        })
    }
}

#[async_trait]
impl Tool for TransformJson {
    fn name(&self) -> &str {
        TRANSFORM_JSON
    }

    fn description(&self) -> &str {
        "Queries or reshapes JSON with a JMESPath expression and returns the result."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "input": {
                    "description": "The JSON value to query (any type)."
                },
                "expression": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": self.max_expression_len,
                    "description": "A JMESPath expression, e.g. \"items[?price > `10`].name\"."
                }
            },
            "required": ["input", "expression"],
            "additionalProperties": false
        })
    }

    /// Evaluates the expression on the evaluation pool.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the result; an evaluation already
    /// started finishes in the background, within its work bound.
    /// Evaluation has no side effects.
    async fn call(&self, mut args: Value) -> Result<Value, ToolError> {
        let expression = args
            .get("expression")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ToolError::new(
                    TRANSFORM_JSON,
                    ToolErrorKind::InvalidInput,
                    "missing string argument \"expression\"",
                )
            })?
            .to_string();
        let input = args
            .as_object_mut()
            .and_then(|o| o.remove("input"))
            .ok_or_else(|| {
                ToolError::new(
                    TRANSFORM_JSON,
                    ToolErrorKind::InvalidInput,
                    "missing argument \"input\"",
                )
            })?;
        self.check_expression(&expression)?;
        let depth = value_depth(&input);
        if depth > Self::MAX_INPUT_DEPTH {
            return Err(ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::LimitExceeded,
                format!(
                    "the input nests {depth} levels deep, over the limit of {}",
                    Self::MAX_INPUT_DEPTH
                ),
            ));
        }
        let budget = self.budget();
        let (tx, rx) = tokio::sync::oneshot::channel();
        eval_pool()?.spawn(move || {
            let _ = tx.send(evaluate(&expression, &input, budget));
        });
        // The sender only drops unsent if evaluation panicked, which would
        // happen again on retry.
        rx.await.map_err(|_| {
            ToolError::new(
                TRANSFORM_JSON,
                ToolErrorKind::Failed,
                "the evaluation failed unexpectedly",
            )
        })?
    }
}

/// The pool evaluating JMESPath expressions (see [`TransformJson`]),
/// started on first use.
fn eval_pool() -> Result<&'static rayon_core::ThreadPool, ToolError> {
    static POOL: OnceLock<Result<rayon_core::ThreadPool, String>> = OnceLock::new();
    POOL.get_or_init(|| {
        let threads = std::thread::available_parallelism()
            .map_or(1, usize::from)
            .clamp(1, TransformJson::EVAL_THREADS);
        rayon_core::ThreadPoolBuilder::new()
            .num_threads(threads)
            .stack_size(TransformJson::STACK_BYTES)
            .thread_name(|i| format!("flowtrace-jmespath-{i}"))
            // A panicking evaluation drops its sender; the call reports it.
            .panic_handler(|_| {})
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| {
        ToolError::new(
            TRANSFORM_JSON,
            ToolErrorKind::Unavailable,
            format!("cannot start the evaluation threads: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn bounds_cover_actual_sizes() {
        let inputs = [
            json!(null),
            json!(1),
            json!([1, 1, 1, 1, 1, 1, 1]),
            json!({"a": [1, 2, 3], "b": {"c": "x\"y"}}),
            json!({"people": [{"name": "ann", "age": 40, "langs": ["en"]},
                              {"name": "bo", "age": 20, "langs": []}, 1, "s", null]}),
            json!([[1, [2]], [[3]], "abc", {"k": [1]}]),
        ];
        let expressions = [
            "@",
            "a",
            "[@,@]",
            "[*].{x: @, y: a, z: `[1,2]`}",
            "people[?age > `30`].name",
            "people[*].[name, age, langs[0]]",
            "*.[@, @]",
            "[][]",
            "map(&[@, to_string(@)], @)",
            "sort_by(people, &name)",
            "to_string(to_string(@))",
            "join(to_string(@), [to_string(@), to_string(@)])",
            "merge(@, {a: @})",
            "keys(@)",
            "values(@)",
            "[0:2].[@, @][]",
            "a || b && @",
            "people[?!contains(langs, 'fr')] | [*].{n: name, l: length(langs)}",
            "to_array(@)[*][*][*]",
            "max_by(people, &age)",
        ];
        for input in &inputs {
            let n = json_bytes(input);
            for expression in expressions {
                let compiled = jmespath::compile(expression).unwrap();
                let mut analysis = Analysis::default();
                let cost = analysis.cost(compiled.as_ast(), n.max(1)).unwrap();
                let Ok(result) = compiled.search(input) else {
                    continue;
                };
                let actual = json_bytes(&*result);
                assert!(
                    actual <= cost.size,
                    "{expression} over {input}: {actual} > bound {}",
                    cost.size
                );
            }
        }
    }

    /// An array holding an array … `depth` levels deep, built without
    /// recursion.
    fn nested(depth: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    /// The deepest expressions and inputs the tool accepts, evaluated and
    /// dropped on a thread with half the pool's stack: if they needed more,
    /// the thread would overflow and abort the test.
    #[test]
    fn the_worst_accepted_cases_fit_in_half_the_pool_stack() {
        let ops = TransformJson::MAX_OPERATORS;
        let max_depth = TransformJson::MAX_EXPRESSION_DEPTH;
        let deep = nested(TransformJson::MAX_INPUT_DEPTH);
        assert_eq!(value_depth(&deep), TransformJson::MAX_INPUT_DEPTH);
        // A literal nested just deep enough to reach the depth limit.
        let literal_depth = max_depth - (2 * ops + 1);
        let literal = format!(
            "`{}`",
            serde_json::to_string(&nested(literal_depth)).unwrap()
        );
        let cases = [
            (format!("{}a", "!".repeat(ops)), json!({"a": deep})),
            (format!("a{}", ".b".repeat(ops)), json!({})),
            (format!("a{}", "[]".repeat(ops)), json!({"a": deep})),
            (format!("{literal}{}", "[]".repeat(ops)), json!(null)),
            (
                format!("{}@{}", "[".repeat(ops - 1), "]".repeat(ops - 1)),
                deep.clone(),
            ),
            (
                format!("{}@{}", "not_null(".repeat(ops / 2), ")".repeat(ops / 2)),
                deep.clone(),
            ),
            (
                format!("{}@", "to_array(".repeat(ops / 2)) + &")".repeat(ops / 2),
                deep,
            ),
        ];
        let tool = TransformJson::new();
        for (expression, input) in cases {
            tool.check_expression(&expression).unwrap();
            let compiled = jmespath::compile(&expression).unwrap();
            assert!(ast_depth(compiled.as_ast()) <= max_depth, "{expression}");
            let budget = tool.budget();
            let shown: String = expression.chars().take(40).collect();
            let outcome = std::thread::Builder::new()
                .stack_size(TransformJson::STACK_BYTES / 2)
                .spawn(move || {
                    let result = evaluate(&expression, &input, budget);
                    drop(input);
                    result.map(|value| value_depth(&value))
                })
                .unwrap()
                .join()
                .unwrap();
            assert!(outcome.is_ok(), "{shown}…: {outcome:?}");
        }
        // One level more is refused before evaluation.
        let literal = format!(
            "`{}`",
            serde_json::to_string(&nested(literal_depth + 1)).unwrap()
        );
        let too_deep = format!("{literal}{}", "[]".repeat(ops));
        let e = evaluate(&too_deep, &json!(null), tool.budget()).unwrap_err();
        assert_eq!(e.kind(), ToolErrorKind::LimitExceeded);
        assert!(e.message.contains("levels deep"), "{e}");
    }

    #[test]
    fn depths_are_measured_without_recursion() {
        assert_eq!(value_depth(&json!(1)), 0);
        assert_eq!(value_depth(&json!({"a": [1, {"b": []}]})), 3);
        let very_deep = nested(100_000);
        assert_eq!(value_depth(&very_deep), 100_000);
        // Dropping it would recurse; this test only measures.
        std::mem::forget(very_deep);
        let ast = |e: &str| ast_depth(jmespath::compile(e).unwrap().as_ast());
        assert_eq!(ast("a"), 1);
        assert_eq!(ast("a.b"), 2);
        assert_eq!(ast("!a"), 2);
        assert_eq!(ast("`[[1]]`"), 3);
        assert_eq!(ast("[a, b.c]"), 3);
    }

    #[test]
    fn operators_outside_quotes_only() {
        assert_eq!(count_operators("a.b[0]"), 2);
        assert_eq!(count_operators("\"a.b\".c"), 1);
        assert_eq!(count_operators("a == 'x.\\'.y'"), 2);
        assert_eq!(count_operators("a[?b == `{\"c\": [1]}`]"), 4);
        assert_eq!(count_operators("{name: name, id: id}"), 1);
    }

    #[test]
    fn csv_fields_are_typed() {
        assert_eq!(csv_value(""), Value::Null);
        assert_eq!(csv_value("42"), json!(42));
        assert_eq!(csv_value("-3.5"), json!(-3.5));
        assert_eq!(csv_value("EMEA"), json!("EMEA"));
        assert_eq!(csv_value("1e400"), json!("1e400"));
        assert_eq!(csv_value("NaN"), json!("NaN"));
        assert_eq!(csv_value("0"), json!(0));
        assert_eq!(csv_value("0.25"), json!(0.25));
        // Text that a number would change stays text.
        for kept in [
            "00501",
            "+5",
            "-0",
            "12345678901234567890",
            "1.",
            ".5",
            "1.2.3",
            " 7",
        ] {
            assert_eq!(csv_value(kept), json!(kept), "{kept}");
        }
        let (columns, rows) =
            parse_csv("region, revenue,note\nEMEA,120,\" padded \"\nAPAC,,x\n").unwrap();
        assert_eq!(columns, ["region", "revenue", "note"]);
        assert_eq!(
            rows,
            [
                json!({"region": "EMEA", "revenue": 120, "note": " padded "}),
                json!({"region": "APAC", "revenue": null, "note": "x"})
            ]
        );
        let err = parse_csv("a,b\n1,2\n3\n").unwrap_err();
        assert!(err.contains("record 2"), "{err}");
        let err = parse_csv("amount,amount\n1,5\n").unwrap_err();
        assert!(err.contains("\"amount\" twice"), "{err}");
    }

    #[test]
    fn relative_path_shapes() {
        let tool = ReadFile::new("/nowhere");
        assert!(tool.check_relative("a/b.txt").is_ok());
        assert!(tool.check_relative("./a.txt").is_ok());
        for bad in ["", ".", "./", "/etc/passwd", "a/../b", "..", "a\0b"] {
            let err = tool.check_relative(bad).unwrap_err();
            assert!(!err.is_retryable(), "{bad:?}");
        }
    }
}
