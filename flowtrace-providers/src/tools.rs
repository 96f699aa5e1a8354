//! Built-in [`Tool`]s for JSON workflows.
//!
//! * [`ReadFile`] (`read_file`) — reads a UTF-8 text file confined to a root
//!   directory, optionally parsing it as CSV into rows;
//! * [`TransformJson`] (`transform_json`) — queries or reshapes JSON with a
//!   [JMESPath](https://jmespath.org/) expression.
//!
//! Both describe their arguments with a JSON Schema
//! ([`Tool::parameters`]) and fail with [`ToolError::permanent`] on bad
//! arguments, so a retry policy does not call them again in vain.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use flowtrace_core::{Tool, ToolError};
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
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// The root directory, as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn error(&self, message: impl Into<String>) -> ToolError {
        ToolError::permanent(READ_FILE, message)
    }

    /// Checks the requested path's shape: relative, no `..`, not empty.
    fn check_relative<'a>(&self, path: &'a str) -> Result<&'a Path, ToolError> {
        if path.is_empty() {
            return Err(self.error("\"path\" must not be empty"));
        }
        if path.contains('\0') {
            return Err(self.error("\"path\" must not contain NUL characters"));
        }
        let rel = Path::new(path);
        let mut named = false;
        for component in rel.components() {
            match component {
                Component::Prefix(_) | Component::RootDir => {
                    return Err(self.error(format!(
                        "{path:?} is an absolute path; give a path relative to the root directory"
                    )));
                }
                Component::ParentDir => {
                    return Err(self.error(format!("{path:?} must not contain \"..\" components")));
                }
                Component::CurDir => {}
                Component::Normal(_) => named = true,
            }
        }
        if !named {
            return Err(self.error(format!("{path:?} does not name a file")));
        }
        Ok(rel)
    }

    /// Resolves, checks and reads `rel` (blocking).
    fn read_blocking(&self, path: &str, rel: &Path) -> Result<(String, u64), ToolError> {
        let root = std::fs::canonicalize(&self.root).map_err(|e| {
            self.error(format!(
                "the root directory is not available ({})",
                e.kind()
            ))
        })?;
        let full = std::fs::canonicalize(root.join(rel)).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => self.error(format!("file not found: {path:?}")),
            kind => self.error(format!("cannot open {path:?} ({kind})")),
        })?;
        if !full.starts_with(&root) {
            return Err(self.error(format!(
                "{path:?} resolves outside the root directory (through a symlink)"
            )));
        }
        // Check the type before opening: opening a FIFO blocks until a
        // writer appears, and a device may never end.
        let meta = std::fs::symlink_metadata(&full)
            .map_err(|e| self.error(format!("cannot open {path:?} ({})", e.kind())))?;
        self.check_regular(path, &meta)?;
        let file = open_nonblocking(&full)
            .map_err(|e| self.error(format!("cannot open {path:?} ({})", e.kind())))?;
        // The path may have been swapped between the check and the open.
        let meta = file
            .metadata()
            .map_err(|e| self.error(format!("cannot read {path:?} ({})", e.kind())))?;
        self.check_regular(path, &meta)?;
        if meta.len() > self.max_bytes {
            return Err(self.too_large(path, meta.len()));
        }
        // The file may grow after the check: read at most one byte past the
        // limit to notice.
        let mut bytes = Vec::new();
        file.take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(format!("cannot read {path:?} ({})", e.kind())))?;
        let len = bytes.len() as u64;
        if len > self.max_bytes {
            return Err(self.too_large(path, len));
        }
        let content = String::from_utf8(bytes)
            .map_err(|_| self.error(format!("{path:?} is not valid UTF-8 text")))?;
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
        Err(self.error(format!("{path:?} is not a regular file (it is {what})")))
    }

    fn too_large(&self, path: &str, len: u64) -> ToolError {
        self.error(format!(
            "{path:?} is {len} bytes, over the {}-byte limit",
            self.max_bytes
        ))
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
            .ok_or_else(|| self.error("missing string argument \"path\""))?
            .to_string();
        let csv = match args.get("format") {
            None | Some(Value::Null) => false,
            Some(Value::String(f)) if f == "text" => false,
            Some(Value::String(f)) if f == "csv" => true,
            Some(other) => {
                return Err(self.error(format!(
                    "\"format\" must be \"text\" or \"csv\", got {other}"
                )));
            }
        };
        self.check_relative(&path)?;
        let tool = self.clone();
        let read_path = path.clone();
        let (content, bytes) = tokio::task::spawn_blocking(move || {
            tool.read_blocking(&read_path, Path::new(&read_path))
        })
        .await
        .map_err(|_| ToolError::transient(READ_FILE, "the file read was interrupted"))??;
        let mut result = json!({"content": content, "path": path, "bytes": bytes});
        if csv {
            let (columns, rows) = parse_csv(&content)
                .map_err(|e| self.error(format!("{path:?} is not valid CSV: {e}")))?;
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
/// [`MAX_OPERATORS`](Self::MAX_OPERATORS) operators are refused: the
/// JMESPath parser and interpreter recurse once per nesting level, and a
/// deep enough expression would overflow the stack. Evaluation runs on a
/// thread of its own with a [`STACK_BYTES`](Self::STACK_BYTES) stack, which
/// leaves a wide margin for the largest accepted expression.
#[derive(Clone, Debug)]
pub struct TransformJson {
    max_expression_len: usize,
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
    /// expression may contain; this bounds its nesting depth.
    pub const MAX_OPERATORS: usize = 256;
    /// The stack of the thread that evaluates expressions.
    pub const STACK_BYTES: usize = 16 * 1024 * 1024;

    /// The tool with the default limits.
    pub fn new() -> Self {
        Self {
            max_expression_len: Self::DEFAULT_MAX_EXPRESSION_LEN,
        }
    }

    /// Sets the longest expression it accepts, in characters (the operator
    /// limit still applies).
    pub fn max_expression_len(mut self, max: usize) -> Self {
        self.max_expression_len = max;
        self
    }

    fn check_expression(&self, expression: &str) -> Result<(), ToolError> {
        let len = expression.chars().count();
        if len > self.max_expression_len {
            return Err(ToolError::permanent(
                TRANSFORM_JSON,
                format!(
                    "expression is {len} characters, over the {}-character limit",
                    self.max_expression_len
                ),
            ));
        }
        let operators = count_operators(expression);
        if operators > Self::MAX_OPERATORS {
            return Err(ToolError::permanent(
                TRANSFORM_JSON,
                format!(
                    "expression has {operators} operators, over the limit of {}",
                    Self::MAX_OPERATORS
                ),
            ));
        }
        Ok(())
    }
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

/// Compiles and evaluates `expression` (call on a large stack).
fn evaluate(expression: &str, input: &Value) -> Result<Value, ToolError> {
    let compiled = jmespath::compile(expression).map_err(|e| {
        ToolError::permanent(
            TRANSFORM_JSON,
            format!(
                "invalid JMESPath expression: {} (at character {})",
                e.reason, e.offset
            ),
        )
    })?;
    let result = compiled.search(input).map_err(|e| {
        ToolError::permanent(
            TRANSFORM_JSON,
            format!("JMESPath evaluation failed: {}", e.reason),
        )
    })?;
    serde_json::to_value(&*result).map_err(|e| {
        ToolError::permanent(TRANSFORM_JSON, format!("JMESPath result is not JSON: {e}"))
    })
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

    /// Evaluates the expression on a dedicated thread.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the result; an evaluation already
    /// started finishes in the background. Evaluation has no side effects.
    async fn call(&self, mut args: Value) -> Result<Value, ToolError> {
        let expression = args
            .get("expression")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ToolError::permanent(TRANSFORM_JSON, "missing string argument \"expression\"")
            })?
            .to_string();
        let input = args
            .as_object_mut()
            .and_then(|o| o.remove("input"))
            .ok_or_else(|| ToolError::permanent(TRANSFORM_JSON, "missing argument \"input\""))?;
        self.check_expression(&expression)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("flowtrace-jmespath".to_string())
            .stack_size(Self::STACK_BYTES)
            .spawn(move || {
                let _ = tx.send(evaluate(&expression, &input));
            })
            .map_err(|e| {
                ToolError::transient(
                    TRANSFORM_JSON,
                    format!("cannot start the evaluation thread: {e}"),
                )
            })?;
        // The sender only drops unsent if evaluation panicked, which would
        // happen again on retry.
        rx.await.map_err(|_| {
            ToolError::permanent(TRANSFORM_JSON, "the evaluation failed unexpectedly")
        })?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

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
            assert!(!err.retryable, "{bad:?}");
        }
    }
}
