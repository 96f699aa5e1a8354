//! Provider bindings: per workflow, which model (and temperature) the `llm`
//! nodes calling a provider use, kept in `provider_bindings` and applied by
//! the [`Worker`](crate::Worker) to every run of the workflow.
//!
//! A binding overrides what the document says, without a new version: an
//! operator can move a workflow to another model, or cool its temperature,
//! for every run queued from then on.

use serde_json::Value;
use sqlx::Row;

use crate::error::StoreError;
use crate::registry::WorkflowRegistry;

/// The longest provider or model name a binding accepts, in bytes.
pub const MAX_BINDING_NAME: usize = 200;

/// The most bindings one workflow holds.
pub const MAX_BINDINGS: usize = 100;

/// One binding: the `llm` nodes of `workflow_id` calling `provider` use
/// `model` (and `temperature`, when set).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ProviderBinding {
    /// The binding's id.
    pub id: i64,
    /// Who set it, if anyone.
    pub owner_id: Option<String>,
    /// The workflow it applies to.
    pub workflow_id: String,
    /// The provider whose nodes it rebinds.
    pub provider: String,
    /// The model those nodes use.
    pub model: String,
    /// Their sampling temperature, when set (0 to 2).
    pub temperature: Option<f64>,
}

/// Rewrites `doc` (a workflow document) with `bindings`: every `llm` node
/// whose `config.provider` is a binding's provider gets its model (and
/// temperature, when the binding sets one). Returns how many nodes changed.
pub fn apply_bindings(doc: &mut Value, bindings: &[ProviderBinding]) -> usize {
    let mut changed = 0;
    let Some(nodes) = doc.get_mut("nodes").and_then(Value::as_array_mut) else {
        return 0;
    };
    for node in nodes {
        if node.get("type").and_then(Value::as_str) != Some("llm") {
            continue;
        }
        let Some(config) = node.get_mut("config").and_then(Value::as_object_mut) else {
            continue;
        };
        let provider = config
            .get("provider")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(b) = bindings
            .iter()
            .find(|b| Some(b.provider.as_str()) == provider.as_deref())
        else {
            continue;
        };
        config.insert("model".into(), Value::String(b.model.clone()));
        if let Some(t) = b.temperature.and_then(serde_json::Number::from_f64) {
            config.insert("temperature".into(), Value::Number(t));
        }
        changed += 1;
    }
    changed
}

fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    if name.trim().is_empty() {
        return Err(StoreError::InvalidRequest(format!("an empty {what}")));
    }
    if name.len() > MAX_BINDING_NAME {
        return Err(StoreError::LimitExceeded {
            what,
            limit: MAX_BINDING_NAME as u64,
        });
    }
    Ok(())
}

impl WorkflowRegistry {
    /// Binds the `llm` nodes of workflow `workflow_id` that call `provider`
    /// to `model` (and `temperature`), replacing an earlier binding of the
    /// same provider. Applies to runs started from then on.
    ///
    /// # Errors
    ///
    /// [`StoreError::WorkflowNotFound`]; [`StoreError::InvalidRequest`] for
    /// an empty name or a temperature outside 0 to 2;
    /// [`StoreError::LimitExceeded`] for a name over [`MAX_BINDING_NAME`]
    /// or a workflow with [`MAX_BINDINGS`] already. Nothing is written then.
    pub async fn bind_provider(
        &self,
        workflow_id: &str,
        owner: Option<&str>,
        provider: &str,
        model: &str,
        temperature: Option<f64>,
    ) -> Result<ProviderBinding, StoreError> {
        check_name("provider name bytes", provider)?;
        check_name("model name bytes", model)?;
        if let Some(t) = temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(StoreError::InvalidRequest(format!(
                "temperature {t} is outside 0 to 2"
            )));
        }
        // The workflow must exist (any version, not deleted).
        self.get(workflow_id, None).await?;
        let count = self.bindings(workflow_id).await?.len();
        if count >= MAX_BINDINGS {
            return Err(StoreError::LimitExceeded {
                what: "provider bindings of one workflow",
                limit: MAX_BINDINGS as u64,
            });
        }
        let row = sqlx::query(
            "insert into provider_bindings (owner_id, workflow_id, provider, model, temperature)
             values ($1, $2, $3, $4, $5)
             on conflict (workflow_id, provider) do update
                set owner_id = excluded.owner_id, model = excluded.model,
                    temperature = excluded.temperature
             returning id, owner_id, workflow_id, provider, model, temperature",
        )
        .bind(owner)
        .bind(workflow_id)
        .bind(provider)
        .bind(model)
        .bind(temperature)
        .fetch_one(self.pool())
        .await
        .map_err(StoreError::db("binding a provider"))?;
        binding(&row)
    }

    /// The bindings of workflow `workflow_id`, by provider.
    pub async fn bindings(&self, workflow_id: &str) -> Result<Vec<ProviderBinding>, StoreError> {
        let rows = sqlx::query(
            "select id, owner_id, workflow_id, provider, model, temperature
             from provider_bindings where workflow_id = $1 order by provider limit $2",
        )
        .bind(workflow_id)
        .bind(MAX_BINDINGS as i64)
        .fetch_all(self.pool())
        .await
        .map_err(StoreError::db("reading provider bindings"))?;
        rows.iter().map(binding).collect()
    }

    /// Removes the binding of `provider` for workflow `workflow_id`;
    /// `false` when there was none.
    pub async fn unbind_provider(
        &self,
        workflow_id: &str,
        provider: &str,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("delete from provider_bindings where workflow_id = $1 and provider = $2")
                .bind(workflow_id)
                .bind(provider)
                .execute(self.pool())
                .await
                .map_err(StoreError::db("removing a provider binding"))?;
        Ok(done.rows_affected() == 1)
    }
}

fn binding(row: &sqlx::postgres::PgRow) -> Result<ProviderBinding, StoreError> {
    let get = |e: sqlx::Error| StoreError::Corrupt {
        message: "a provider binding row".into(),
        source: Some(Box::new(e)),
    };
    Ok(ProviderBinding {
        id: row.try_get("id").map_err(get)?,
        owner_id: row.try_get("owner_id").map_err(get)?,
        workflow_id: row.try_get("workflow_id").map_err(get)?,
        provider: row.try_get("provider").map_err(get)?,
        model: row.try_get("model").map_err(get)?,
        temperature: row.try_get("temperature").map_err(get)?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bind(provider: &str, model: &str, temperature: Option<f64>) -> ProviderBinding {
        ProviderBinding {
            id: 1,
            owner_id: None,
            workflow_id: "w".into(),
            provider: provider.into(),
            model: model.into(),
            temperature,
        }
    }

    #[test]
    fn bindings_rewrite_the_llm_nodes_of_their_provider_only() {
        let mut doc = json!({"nodes": [
            {"id": "a", "type": "llm", "config": {"provider": "simulated", "model": "gpt-4o-mini"}},
            {"id": "b", "type": "llm", "config": {"provider": "openai", "model": "gpt-4o"}},
            {"id": "c", "type": "tool", "config": {"provider": "simulated", "tool": "x"}}
        ]});
        let n = apply_bindings(
            &mut doc,
            &[bind("simulated", "claude-3-5-haiku", Some(0.2))],
        );
        assert_eq!(n, 1);
        assert_eq!(doc["nodes"][0]["config"]["model"], "claude-3-5-haiku");
        assert_eq!(doc["nodes"][0]["config"]["temperature"], json!(0.2));
        assert_eq!(doc["nodes"][1]["config"]["model"], "gpt-4o");
        assert_eq!(doc["nodes"][2]["config"].get("model"), None);
        assert_eq!(apply_bindings(&mut json!({"nodes": 3}), &[]), 0);
    }
}
