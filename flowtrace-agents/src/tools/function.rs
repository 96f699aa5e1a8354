//! Tools made from typed async functions, their input schema derived with
//! `schemars`.

use std::fmt;
use std::marker::PhantomData;

use async_trait::async_trait;
use flowtrace_core::{Tool, ToolError, ToolErrorKind, ToolSafety};
use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// A [`Tool`] made from an async function of a typed input `A`: the input
/// schema is derived from `A` with `schemars`, the JSON input is
/// deserialized into `A` (a mismatch fails with
/// [`InvalidInput`](ToolErrorKind::InvalidInput) naming the field as a JSON
/// pointer) and the output is serialized back to JSON.
///
/// Register one in a line with
/// [`ToolRegistryBuilder::function`](super::ToolRegistryBuilder::function).
///
/// ```
/// use flowtrace_agents::tools::FunctionTool;
/// use flowtrace_core::{Tool, ToolError, ToolErrorKind, ToolSafety};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
/// use serde_json::json;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct AddArgs {
///     /// The first term.
///     a: i64,
///     /// The second term.
///     b: i64,
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let add = FunctionTool::new("add", "Adds two integers", ToolSafety::Safe, |args: AddArgs| async move {
///     Ok::<_, ToolError>(args.a + args.b)
/// });
/// assert_eq!(add.parameters()["required"], json!(["a", "b"]));
/// assert_eq!(add.call(json!({"a": 2, "b": 3})).await.unwrap(), json!(5));
/// let err = add.call(json!({"a": 2, "b": "three"})).await.unwrap_err();
/// assert_eq!(err.kind(), ToolErrorKind::InvalidInput);
/// assert!(err.message.contains("/b"), "{err}");
/// # }
/// ```
pub struct FunctionTool<A, F> {
    name: String,
    description: String,
    safety: ToolSafety,
    parameters: Value,
    f: F,
    _args: PhantomData<fn(A)>,
}

impl<A, F> fmt::Debug for FunctionTool<A, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionTool")
            .field("name", &self.name)
            .field("safety", &self.safety)
            .finish_non_exhaustive()
    }
}

impl<A, O, F, Fut> FunctionTool<A, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ToolError>> + Send,
{
    /// A tool named `name`, described to the model by `description`, that
    /// runs `f`.
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        safety: ToolSafety,
        f: F,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            safety,
            parameters: input_schema::<A>(),
            f,
            _args: PhantomData,
        }
    }
}

/// The JSON Schema of `A`, without the `$schema` and `title` keywords that
/// model APIs do not want in tool parameters.
fn input_schema<A: JsonSchema>() -> Value {
    let mut schema = Value::from(schemars::schema_for!(A));
    if let Value::Object(map) = &mut schema {
        map.remove("$schema");
        map.remove("title");
    }
    schema
}

/// The JSON pointer of a `serde_path_to_error` path (`/` for the root).
fn pointer(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => {
                out.push('/');
                out.push_str(&index.to_string());
            }
            Segment::Map { key } => {
                out.push('/');
                out.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[async_trait]
impl<A, O, F, Fut> Tool for FunctionTool<A, F>
where
    A: DeserializeOwned + JsonSchema + Send + 'static,
    O: Serialize,
    F: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, ToolError>> + Send,
{
    fn name(&self) -> &str {
        &self.name
    }

    fn description(&self) -> &str {
        &self.description
    }

    fn parameters(&self) -> Value {
        self.parameters.clone()
    }

    fn safety(&self) -> ToolSafety {
        self.safety
    }

    async fn call(&self, args: Value) -> Result<Value, ToolError> {
        let args: A = serde_path_to_error::deserialize(args).map_err(|e| {
            let at = pointer(e.path());
            let inner = e.into_inner();
            ToolError::new(
                &self.name,
                ToolErrorKind::InvalidInput,
                format!("input at {at} does not fit: {inner}"),
            )
            .with_source(inner)
        })?;
        let output = (self.f)(args).await?;
        serde_json::to_value(output).map_err(|e| {
            ToolError::new(
                &self.name,
                ToolErrorKind::Failed,
                "cannot encode the output as JSON",
            )
            .with_source(e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Deserialize, JsonSchema)]
    struct Inner {
        tags: Vec<String>,
    }

    #[derive(Deserialize, JsonSchema)]
    struct Args {
        inner: Inner,
    }

    #[tokio::test]
    async fn deserialization_errors_name_the_field_by_pointer() {
        let tool = FunctionTool::new("t", "d", ToolSafety::Safe, |a: Args| async move {
            Ok::<_, ToolError>(a.inner.tags.len())
        });
        assert_eq!(
            tool.call(json!({"inner": {"tags": ["a", "b"]}}))
                .await
                .unwrap(),
            json!(2)
        );
        let err = tool
            .call(json!({"inner": {"tags": ["a", 7]}}))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ToolErrorKind::InvalidInput);
        assert!(err.message.contains("/inner/tags/1"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
        let err = tool.call(json!({"inner": {}})).await.unwrap_err();
        assert!(
            err.message.contains("/inner") && err.message.contains("tags"),
            "{err}"
        );
        assert_eq!(tool.safety(), ToolSafety::Safe);
        let schema = tool.parameters();
        assert!(schema.get("$schema").is_none() && schema.get("title").is_none());
        assert_eq!(schema["type"], "object");
    }
}
