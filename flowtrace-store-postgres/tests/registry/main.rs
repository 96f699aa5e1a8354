//! The workflow registry: validated creates, versions, soft deletes,
//! listing, and registering by content.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../support/mod.rs"]
mod support;

use flowtrace_store_postgres::registry::{MAX_WORKFLOW_BYTES, WorkflowRegistry};
use flowtrace_store_postgres::{PgPool, StoreError, StoreErrorKind};
use serde_json::json;

/// A valid one-node workflow whose reply is `reply`.
fn doc(reply: &str) -> String {
    json!({
        "version": "1",
        "description": format!("Greets\nwith {reply}"),
        "entry": "hello",
        "nodes": [{
            "id": "hello", "type": "llm",
            "config": {
                "provider": "simulated", "model": "gpt-4o-mini", "maxTokens": 64,
                "simulated": {"response": reply, "latencyMs": 0}
            }
        }]
    })
    .to_string()
}

async fn rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("select count(*) from workflows")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn create_get_update_keeps_every_version() {
    let Some(db) = support::fresh("registry_versions").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let v1 = reg.create(Some("alice"), &doc("hi")).await.unwrap();
    assert_eq!(v1.version, 1);
    assert_eq!(v1.id.len(), 36, "a UUID: {}", v1.id);
    assert_eq!(v1.owner_id.as_deref(), Some("alice"));
    assert_eq!(v1.name, "Greets");
    assert_eq!(v1.description.as_deref(), Some("Greets\nwith hi"));
    assert_eq!(v1.graph_json["nodes"][0]["id"], "hello");
    assert_eq!(v1.content_hash.len(), 64);
    assert_eq!(reg.get(&v1.id, None).await.unwrap(), v1);

    let v2 = reg.update(&v1.id, &doc("hello")).await.unwrap();
    assert_eq!((v2.id.as_str(), v2.version), (v1.id.as_str(), 2));
    assert_eq!(v2.owner_id.as_deref(), Some("alice"));
    assert_eq!(v2.created_at, v1.created_at);
    assert_ne!(v2.content_hash, v1.content_hash);
    assert_eq!(reg.get(&v1.id, None).await.unwrap(), v2);
    assert_eq!(reg.get(&v1.id, Some(1)).await.unwrap(), v1);
    assert_eq!(reg.get(&v1.id, Some(2)).await.unwrap(), v2);
    assert!(matches!(
        reg.get(&v1.id, Some(3)).await,
        Err(StoreError::WorkflowNotFound {
            version: Some(3),
            ..
        })
    ));
    assert!(matches!(
        reg.get("no-such-id", None).await,
        Err(StoreError::WorkflowNotFound { version: None, .. })
    ));
    assert!(matches!(
        reg.update("no-such-id", &doc("x")).await,
        Err(StoreError::WorkflowNotFound { .. })
    ));
    db.cleanup().await;
}

#[tokio::test]
async fn concurrent_updates_get_distinct_versions() {
    let Some(db) = support::fresh("registry_concurrent_updates").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let v1 = reg.create(None, &doc("0")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 1..=6 {
        let reg = reg.clone();
        let id = v1.id.clone();
        tasks.push(tokio::spawn(async move {
            reg.update(&id, &doc(&i.to_string())).await.unwrap().version
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        versions.push(t.await.unwrap());
    }
    versions.sort();
    assert_eq!(versions, [2, 3, 4, 5, 6, 7]);
    db.cleanup().await;
}

#[tokio::test]
async fn an_invalid_document_reports_every_problem_and_writes_nothing() {
    let Some(db) = support::fresh("registry_invalid").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let bad = json!({
        "version": "1",
        "entry": "ghost",
        "nodes": [
            {"id": "a", "type": "llm", "config": {"provider": "nope", "model": "m", "maxTokens": 64}},
            {"id": "b", "type": "tool", "config": {"tool": "no_such_tool"}}
        ],
        "edges": [{"from": "a", "to": "zzz"}]
    })
    .to_string();
    for attempt in [
        reg.create(Some("alice"), &bad).await,
        reg.register_by_content(None, &bad).await,
    ] {
        let Err(StoreError::InvalidWorkflow { problems }) = attempt else {
            panic!("expected InvalidWorkflow, got {attempt:?}");
        };
        let pointers: Vec<&str> = problems.0.iter().map(|p| p.pointer.as_str()).collect();
        assert!(problems.0.len() >= 3, "{problems}");
        for expected in ["/entry", "/nodes/0/config/provider", "/edges/0/to"] {
            assert!(
                pointers.contains(&expected),
                "{expected} not in {pointers:?}"
            );
        }
        let err = StoreError::InvalidWorkflow { problems };
        assert_eq!(err.kind(), StoreErrorKind::Invalid);
    }
    let v1 = reg.create(None, &doc("ok")).await.unwrap();
    assert!(matches!(
        reg.update(&v1.id, "{ not json").await,
        Err(StoreError::InvalidWorkflow { .. })
    ));
    assert_eq!(rows(&db.pool).await, 1, "only the valid one was written");
    assert_eq!(reg.get(&v1.id, None).await.unwrap().version, 1);

    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(MAX_WORKFLOW_BYTES));
    assert!(matches!(
        reg.create(None, &huge).await,
        Err(StoreError::LimitExceeded { .. })
    ));
    assert_eq!(rows(&db.pool).await, 1);
    db.cleanup().await;
}

#[tokio::test]
async fn deleted_workflows_are_not_found_nor_listed() {
    let Some(db) = support::fresh("registry_delete").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let w = reg.create(Some("bob"), &doc("a")).await.unwrap();
    reg.update(&w.id, &doc("b")).await.unwrap();
    reg.delete(&w.id).await.unwrap();
    for version in [None, Some(1), Some(2)] {
        assert!(matches!(
            reg.get(&w.id, version).await,
            Err(StoreError::WorkflowNotFound { .. })
        ));
    }
    assert!(reg.list(Some("bob"), None, 10).await.unwrap().is_empty());
    assert!(matches!(
        reg.delete(&w.id).await,
        Err(StoreError::WorkflowNotFound { .. })
    ));
    assert!(matches!(
        reg.update(&w.id, &doc("c")).await,
        Err(StoreError::WorkflowNotFound { .. })
    ));
    // The rows stay (runs refer to them).
    assert_eq!(rows(&db.pool).await, 2);
    db.cleanup().await;
}

#[tokio::test]
async fn list_pages_through_latest_versions_by_owner() {
    let Some(db) = support::fresh("registry_list").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let mut alice = Vec::new();
    for i in 0..5 {
        alice.push(
            reg.create(Some("alice"), &doc(&format!("a{i}")))
                .await
                .unwrap(),
        );
    }
    let carol = reg.create(Some("carol"), &doc("c")).await.unwrap();
    let updated = reg.update(&alice[2].id, &doc("a2 v2")).await.unwrap();
    alice.sort_by(|a, b| a.id.cmp(&b.id));

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = reg.list(Some("alice"), after.as_deref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|w| w.id.clone());
        seen.extend(page);
    }
    let ids: Vec<&str> = seen.iter().map(|w| w.id.as_str()).collect();
    let expected: Vec<&str> = alice.iter().map(|w| w.id.as_str()).collect();
    assert_eq!(ids, expected, "every workflow once, in id order");
    let latest = seen.iter().find(|w| w.id == updated.id).unwrap();
    assert_eq!(latest.version, 2);
    let everyone = reg.list(None, None, 100).await.unwrap();
    assert_eq!(everyone.len(), 6);
    assert!(everyone.iter().any(|w| w.id == carol.id));
    assert!(matches!(
        reg.list(None, None, 0).await,
        Err(StoreError::InvalidRequest(_))
    ));
    db.cleanup().await;
}

#[tokio::test]
async fn register_by_content_returns_the_existing_workflow() {
    let Some(db) = support::fresh("registry_by_content").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let text = doc("same");
    // The same document, keys reordered and reformatted.
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut reordered = serde_json::Map::new();
    let obj = value.as_object().unwrap();
    let mut keys: Vec<&String> = obj.keys().collect();
    keys.reverse();
    for k in keys {
        reordered.insert(k.clone(), obj[k].clone());
    }
    let pretty = serde_json::to_string_pretty(&serde_json::Value::Object(reordered)).unwrap();

    let mut tasks = Vec::new();
    for i in 0..8 {
        let reg = reg.clone();
        let doc = if i % 2 == 0 {
            text.clone()
        } else {
            pretty.clone()
        };
        tasks.push(tokio::spawn(async move {
            reg.register_by_content(Some("dave"), &doc).await.unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "registered once: {ids:?}");
    assert_eq!(rows(&db.pool).await, 1);

    // Another owner, or other content, is another workflow.
    let other_owner = reg.register_by_content(Some("erin"), &text).await.unwrap();
    assert_ne!(other_owner.id, ids[0]);
    let other = reg
        .register_by_content(Some("dave"), &doc("different"))
        .await
        .unwrap();
    assert_ne!(other.id, ids[0]);
    assert_eq!(rows(&db.pool).await, 3);
    // A deleted one is not reused.
    reg.delete(&ids[0]).await.unwrap();
    let fresh = reg.register_by_content(Some("dave"), &text).await.unwrap();
    assert_ne!(fresh.id, ids[0]);
    db.cleanup().await;
}

#[tokio::test]
async fn runs_can_still_read_a_deleted_version() {
    let Some(db) = support::fresh("registry_archived").await else {
        return;
    };
    let reg = WorkflowRegistry::new(db.pool.clone());
    let w = reg.create(None, &doc("kept")).await.unwrap();
    reg.delete(&w.id).await.unwrap();
    let archived = reg.get_archived(&w.id, 1).await.unwrap();
    assert_eq!(archived.graph_json, w.graph_json);
    assert!(matches!(
        reg.get_archived(&w.id, 2).await,
        Err(StoreError::WorkflowNotFound {
            version: Some(2),
            ..
        })
    ));
    db.cleanup().await;
}
