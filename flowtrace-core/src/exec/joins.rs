//! Propagation bookkeeping whose cost follows the work done, not the size
//! of the graph: the open joins, and sets of nodes cleared in O(1).

use std::ops::{Index, IndexMut};

use super::executor::Pending;

/// Not in [`Joins::listed`].
const UNLISTED: usize = usize::MAX;

/// The join bookkeeping ([`Pending`]) of every node, with a list of the
/// nodes whose join may be partly resolved, so that a checkpoint finds the
/// open joins in time proportional to their number rather than to the
/// number of nodes.
///
/// Indexed like a `Vec<Pending>`. Any mutable access (`joins[i]`) lists
/// node `i`; [`settle`](Self::settle) unlists it once its join completed.
pub(crate) struct Joins {
    slots: Vec<Pending>,
    /// Nodes that may have `resolved > 0`, each once, in no order.
    listed: Vec<usize>,
    /// Each node's position in `listed`, or [`UNLISTED`].
    position: Vec<usize>,
}

impl Joins {
    /// No join resolved yet, for a graph of `n` nodes.
    pub(crate) fn new(n: usize) -> Self {
        Self {
            slots: (0..n).map(|_| Pending::default()).collect(),
            listed: Vec::new(),
            position: vec![UNLISTED; n],
        }
    }

    /// Node `i`'s join completed (its counts are back to zero).
    pub(crate) fn settle(&mut self, i: usize) {
        let Some(&pos) = self.position.get(i) else {
            return;
        };
        if pos == UNLISTED {
            return;
        }
        self.listed.swap_remove(pos);
        if let Some(&moved) = self.listed.get(pos) {
            self.position[moved] = pos;
        }
        self.position[i] = UNLISTED;
    }

    /// The joins some of whose predecessors resolved, by node index.
    pub(crate) fn open(&self) -> Vec<(usize, &Pending)> {
        let mut open: Vec<(usize, &Pending)> = self
            .listed
            .iter()
            .filter_map(|&i| Some((i, self.slots.get(i)?)))
            .filter(|(_, p)| p.resolved > 0)
            .collect();
        open.sort_unstable_by_key(|&(i, _)| i);
        open
    }
}

impl Index<usize> for Joins {
    type Output = Pending;

    fn index(&self, i: usize) -> &Pending {
        &self.slots[i]
    }
}

impl IndexMut<usize> for Joins {
    fn index_mut(&mut self, i: usize) -> &mut Pending {
        if let Some(pos) = self.position.get_mut(i)
            && *pos == UNLISTED
        {
            *pos = self.listed.len();
            self.listed.push(i);
        }
        &mut self.slots[i]
    }
}

/// A set of node indices that empties in O(1): a node is in it when its
/// stamp is the current one.
#[derive(Default)]
pub(crate) struct NodeSet {
    stamps: Vec<u64>,
    now: u64,
}

impl NodeSet {
    /// Empties the set, for a graph of `n` nodes.
    pub(crate) fn clear(&mut self, n: usize) {
        if self.stamps.len() != n {
            self.stamps = vec![0; n];
            self.now = 0;
        }
        self.now += 1;
    }

    /// Adds node `i`; whether it was not in the set yet.
    pub(crate) fn insert(&mut self, i: usize) -> bool {
        match self.stamps.get_mut(i) {
            Some(stamp) if *stamp != self.now => {
                *stamp = self.now;
                true
            }
            _ => false,
        }
    }

    /// Whether node `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        self.stamps.get(i) == Some(&self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_lists_partly_resolved_joins_by_index() {
        let mut joins = Joins::new(6);
        for i in [4, 1, 3] {
            joins[i].resolved += 1;
        }
        joins[1].fired += 1;
        let open: Vec<(usize, u32, u32)> = joins
            .open()
            .into_iter()
            .map(|(i, p)| (i, p.resolved, p.fired))
            .collect();
        assert_eq!(open, [(1, 1, 1), (3, 1, 0), (4, 1, 0)]);

        joins[1].resolved = 0;
        joins[1].fired = 0;
        joins.settle(1);
        joins.settle(1);
        joins.settle(5);
        assert_eq!(
            joins.open().iter().map(|(i, _)| *i).collect::<Vec<_>>(),
            [3, 4]
        );
        // A listed node whose counts are zero is not open.
        let _ = &mut joins[2];
        assert_eq!(joins.open().len(), 2);
        for i in [4, 3, 2] {
            joins[i].resolved = 0;
            joins.settle(i);
        }
        assert!(joins.open().is_empty());
        assert!(joins.listed.is_empty());
        assert!(joins.position.iter().all(|&p| p == UNLISTED));
    }

    /// A join half resolved when the run pauses is restored on resume
    /// (`joins[i]` from outside the executor) and still listed in the
    /// checkpoints that follow, until it runs.
    #[tokio::test]
    async fn a_restored_join_stays_listed_until_it_runs() {
        use std::sync::Arc;

        use crate::checkpoint::{Checkpointer, MemoryCheckpointer};
        use crate::exec::Command;
        use crate::{GraphBuilder, JsonState, NodeOutput, RunConfig, RunStatus, node_fn};

        let noop = || node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) });
        // a → join; b → c → d → join; a pause before c.
        let graph = GraphBuilder::<JsonState>::new("g")
            .add_node("a", noop())
            .add_node("b", noop())
            .add_node("c", noop())
            .add_node("d", noop())
            .add_node("join", noop())
            .set_entry("a")
            .set_entry("b")
            .add_edge("a", "join")
            .add_edge("b", "c")
            .add_edge("c", "d")
            .add_edge("d", "join")
            .set_finish("join")
            .interrupt_before(["c"])
            .compile()
            .unwrap();
        let store = Arc::new(MemoryCheckpointer::new());
        let config = || RunConfig::new().checkpointer(store.clone()).thread("t");
        let paused = graph.invoke(JsonState::new(), config()).await.unwrap();
        let interrupt = paused.interrupt().cloned().unwrap();
        let done = graph
            .invoke(
                Command::approve(interrupt.id, serde_json::Value::Null),
                config(),
            )
            .await
            .unwrap();
        assert_eq!(done.summary.status, RunStatus::Succeeded);
        assert_eq!(done.summary.steps_of("join").count(), 1);

        let mut history = store.list(&"t".into(), None, 100).await.unwrap();
        history.reverse();
        type Open = Vec<(String, u32, u32)>;
        let joins: Vec<(Vec<String>, Open)> = history
            .iter()
            .map(|cp| {
                (
                    cp.nodes.iter().map(|n| n.to_string()).collect(),
                    cp.joins
                        .iter()
                        .map(|j| (j.node.to_string(), j.resolved, j.fired))
                        .collect(),
                )
            })
            .collect();
        let open = || vec![("join".to_string(), 1, 1)];
        let nodes = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            joins,
            [
                (nodes(&[]), vec![]),
                // a and b ran; the pause before c is in the same checkpoint.
                (nodes(&["a", "b"]), open()),
                // The approval.
                (nodes(&[]), open()),
                (nodes(&["c"]), open()),
                (nodes(&["d"]), vec![]),
                (nodes(&["join"]), vec![]),
            ]
        );
    }

    #[test]
    fn node_set_empties_in_one_step() {
        let mut set = NodeSet::default();
        set.clear(4);
        assert!(set.insert(2));
        assert!(!set.insert(2));
        assert!(set.contains(2) && !set.contains(1) && !set.contains(9));
        assert!(!set.insert(9));
        set.clear(4);
        assert!(!set.contains(2));
        assert!(set.insert(2));
        set.clear(5);
        assert!(!set.contains(2));
    }
}
