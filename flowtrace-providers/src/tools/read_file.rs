//! The `read_file` tool: [`ReadFile`].

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use flowtrace_core::tool::ToolErrorKind;
use flowtrace_core::{Tool, ToolError, ToolSafety};
use serde_json::{Value, json};

use super::READ_FILE;

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

    /// [`ToolSafety::Safe`]: Reading a file has no side effects.
    fn safety(&self) -> ToolSafety {
        ToolSafety::Safe
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

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
