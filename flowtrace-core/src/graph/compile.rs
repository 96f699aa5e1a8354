//! Validation and compilation of a [`GraphBuilder`] into index-based form.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{BuildError, GraphProblem};
use crate::graph::builder::{END, GraphBuilder, START};
use crate::graph::route::RouterFn;
use crate::graph::{CompiledGraph, Inner};
use crate::ids::NodeId;
use crate::node::{Node, NodeConfig};
use crate::state::State;

/// Where an edge leads: a node index or the finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Node(usize),
    End,
}

pub(crate) struct Branch {
    pub(crate) label: String,
    pub(crate) targets: Vec<Target>,
}

pub(crate) struct Router<S> {
    pub(crate) route: RouterFn<S>,
    /// By position: the router returns positions into this list.
    pub(crate) branches: Vec<Branch>,
}

pub(crate) struct CompiledNode<S: State> {
    pub(crate) id: NodeId,
    pub(crate) node: Arc<dyn Node<S>>,
    pub(crate) config: NodeConfig,
    /// Plain successors.
    pub(crate) statics: Vec<Target>,
    pub(crate) router: Option<Router<S>>,
    /// Nodes this node may dispatch instances of, sorted.
    pub(crate) dispatch: Vec<usize>,
    /// Distinct successors reached by forward (non-loop) edges of any kind.
    pub(crate) forward: Vec<usize>,
    /// Distinct successors reached by loop-closing edges.
    pub(crate) back: Vec<usize>,
    /// `back`, sorted.
    back_sorted: Vec<usize>,
    /// How many distinct forward predecessors (including the start) a join
    /// waits for.
    pub(crate) forward_in: u32,
}

impl<S: State> CompiledNode<S> {
    pub(crate) fn is_back(&self, target: usize) -> bool {
        self.back_sorted.binary_search(&target).is_ok()
    }

    /// Whether this node may dispatch instances of `target`.
    pub(crate) fn may_dispatch(&self, target: usize) -> bool {
        self.dispatch.binary_search(&target).is_ok()
    }
}

pub(crate) fn compile<S: State>(b: GraphBuilder<S>) -> Result<CompiledGraph<S>, BuildError> {
    let mut problems = Vec::new();
    let mut index: HashMap<NodeId, usize> = HashMap::with_capacity(b.nodes.len());
    // Whether node i is the one its id names (not a reserved id or a duplicate).
    let mut named = vec![false; b.nodes.len()];
    for (i, def) in b.nodes.iter().enumerate() {
        let id = def.id.as_str();
        if id.is_empty() || id == START || id == END {
            problems.push(GraphProblem::ReservedNodeId {
                node: def.id.clone(),
            });
            continue;
        }
        if index.contains_key(id) {
            problems.push(GraphProblem::DuplicateNode {
                node: def.id.clone(),
            });
            continue;
        }
        index.insert(def.id.clone(), i);
        named[i] = true;
        for (setting, reason) in def.config.retry.iter().flat_map(|r| r.problems()) {
            problems.push(GraphProblem::InvalidSetting {
                node: Some(def.id.clone()),
                setting,
                reason,
            });
        }
        if def.config.timeout == Some(std::time::Duration::ZERO) {
            problems.push(GraphProblem::InvalidSetting {
                node: Some(def.id.clone()),
                setting: "timeout",
                reason: "must be greater than zero".into(),
            });
        }
    }

    let n = b.nodes.len();
    let mut statics: Vec<Vec<Target>> = vec![Vec::new(); n];
    let mut entries: Vec<usize> = Vec::new();
    let edge_count = b.edges.len()
        + b.routers.iter().map(|r| r.branches.len()).sum::<usize>()
        + b.dispatches.len();
    let mut pairs = Pairs::new(n, edge_count);

    for (from, to) in &b.edges {
        let by = || format!("edge {from:?} -> {to:?}");
        let f = resolve(&index, &mut problems, from, true, false, &by);
        let t = resolve(&index, &mut problems, to, false, true, &by);
        if let (Some(f), Some(t)) = (f, t) {
            // Plain edges come first: a pair new here is a new plain successor.
            let new = pairs.add(f, t);
            match (f, t) {
                (Ref::Start, Ref::Node(t)) => entries.push(t),
                (Ref::Node(f), Ref::Node(t)) if new => statics[f].push(Target::Node(t)),
                (Ref::Node(f), Ref::End) if new => statics[f].push(Target::End),
                _ => {}
            }
        }
    }

    let mut routers: Vec<Option<Router<S>>> = (0..n).map(|_| None).collect();
    for r in b.routers {
        let from_by = || format!("conditional edge from {:?}", r.from);
        let Some(Ref::Node(f)) = resolve(&index, &mut problems, &r.from, false, false, &from_by)
        else {
            continue;
        };
        if r.branches.is_empty() {
            problems.push(GraphProblem::EmptyBranches {
                node: r.from.clone(),
            });
        }
        for label in &r.unmapped {
            problems.push(GraphProblem::UnmappedBranch {
                node: r.from.clone(),
                label: label.clone(),
            });
        }
        let mut branches: Vec<Branch> = Vec::with_capacity(r.branches.len());
        for (label, targets) in &r.branches {
            let mut resolved = Vec::with_capacity(targets.len());
            for to in targets {
                let by = || format!("branch {label:?} of conditional edge from {:?}", r.from);
                let Some(t) = resolve(&index, &mut problems, to, false, true, &by) else {
                    continue;
                };
                resolved.push(match t {
                    Ref::Node(t) => Target::Node(t),
                    _ => Target::End,
                });
                pairs.add(Ref::Node(f), t);
            }
            branches.push(Branch {
                label: label.clone(),
                targets: resolved,
            });
        }
        if routers[f].is_some() {
            problems.push(GraphProblem::DuplicateRouter {
                node: r.from.clone(),
            });
            continue;
        }
        routers[f] = Some(Router {
            route: r.route,
            branches,
        });
    }

    let mut dispatch: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (from, to) in &b.dispatches {
        let by = || format!("dispatch {from:?} -> {to:?}");
        let f = resolve(&index, &mut problems, from, false, false, &by);
        let t = resolve(&index, &mut problems, to, false, false, &by);
        if let (Some(Ref::Node(f)), Some(Ref::Node(t))) = (f, t) {
            dispatch[f].push(t);
            pairs.add(Ref::Node(f), Ref::Node(t));
        }
    }
    for targets in &mut dispatch {
        targets.sort_unstable();
        targets.dedup();
    }

    if entries.is_empty() {
        problems.push(GraphProblem::NoEntry);
    }

    let mut interrupts = |nodes: &[NodeId], which: &str| -> Vec<usize> {
        nodes
            .iter()
            .filter_map(|id| {
                let by = || format!("{which} interrupt");
                match resolve(&index, &mut problems, id, false, false, &by) {
                    Some(Ref::Node(i)) => Some(i),
                    _ => None,
                }
            })
            .collect()
    };
    let interrupt_before = interrupts(&b.interrupt_before, "interrupt_before");
    let interrupt_after = interrupts(&b.interrupt_after, "interrupt_after");

    let distinct = pairs.distinct;
    let (start, end) = (n, n + 1);
    let mut back: HashSet<(usize, usize)> = HashSet::new();
    if !entries.is_empty() {
        let reachable = back_edges(&distinct, n + 2, start, &mut back);
        for (i, def) in b.nodes.iter().enumerate() {
            if named[i] && !reachable[i] {
                problems.push(GraphProblem::Unreachable {
                    node: def.id.clone(),
                });
            }
        }
    }
    let finishes = reaches(&distinct, n + 2, end);
    for (i, def) in b.nodes.iter().enumerate() {
        if named[i] && !finishes[i] {
            problems.push(GraphProblem::NoPathToFinish {
                node: def.id.clone(),
            });
        }
    }

    if !problems.is_empty() {
        return Err(BuildError { problems });
    }

    // Forward successors and in-degrees over distinct pairs.
    let mut forward: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut back_targets: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut forward_in = vec![0u32; n];
    for &e in &entries {
        if !back.contains(&(n, e)) {
            forward_in[e] += 1;
        }
    }
    forward_in.iter_mut().for_each(|c| *c = (*c).min(1));
    for &(f, t) in &distinct {
        if f >= n || t >= n {
            continue;
        }
        if !back.is_empty() && back.contains(&(f, t)) {
            back_targets[f].push(t);
        } else {
            forward[f].push(t);
            forward_in[t] += 1;
        }
    }
    entries.dedup();

    let nodes = b
        .nodes
        .into_iter()
        .zip(statics)
        .zip(routers)
        .zip(dispatch)
        .enumerate()
        .map(|(i, (((def, statics), router), dispatch))| {
            let back = std::mem::take(&mut back_targets[i]);
            let mut back_sorted = back.clone();
            back_sorted.sort_unstable();
            CompiledNode {
                id: def.id,
                node: def.node,
                config: def.config,
                statics,
                router,
                dispatch,
                forward: std::mem::take(&mut forward[i]),
                back,
                back_sorted,
                forward_in: forward_in[i],
            }
        })
        .collect();

    Ok(CompiledGraph {
        inner: Arc::new(Inner {
            name: b.name,
            nodes,
            entries,
            index,
            interrupt_before,
            interrupt_after,
        }),
    })
}

/// The analysis graph: node i is index i, then START (`n`) and END
/// (`n + 1`); each distinct pair once, in the order first added.
struct Pairs {
    n: usize,
    seen: HashSet<(usize, usize)>,
    distinct: Vec<(usize, usize)>,
}

impl Pairs {
    fn new(n: usize, capacity: usize) -> Self {
        Self {
            n,
            seen: HashSet::with_capacity(capacity),
            distinct: Vec::with_capacity(capacity),
        }
    }

    /// Adds the pair `from -> to`; whether it is new.
    fn add(&mut self, from: Ref, to: Ref) -> bool {
        let ix = |r: Ref| match r {
            Ref::Node(i) => i,
            Ref::Start => self.n,
            Ref::End => self.n + 1,
        };
        let (f, t) = (ix(from), ix(to));
        if !self.seen.insert((f, t)) {
            return false;
        }
        self.distinct.push((f, t));
        true
    }
}

/// Adjacency lists in two allocations: the successors of `i` are
/// `targets[first[i]..first[i + 1]]`, in the order the pairs came.
struct Adjacency {
    first: Vec<usize>,
    targets: Vec<usize>,
}

impl Adjacency {
    /// The lists of `len` nodes from `(from, to)` pairs (all below `len`).
    fn new(len: usize, pairs: impl Iterator<Item = (usize, usize)> + Clone) -> Self {
        let mut first = vec![0; len + 1];
        for (f, _) in pairs.clone() {
            first[f + 1] += 1;
        }
        for i in 0..len {
            first[i + 1] += first[i];
        }
        let mut next = first.clone();
        let mut targets = vec![0; first[len]];
        for (f, t) in pairs {
            targets[next[f]] = t;
            next[f] += 1;
        }
        Self { first, targets }
    }

    fn of(&self, i: usize) -> &[usize] {
        &self.targets[self.first[i]..self.first[i + 1]]
    }
}

/// Depth-first search from `start` over the `len` nodes joined by `edges`
/// (visiting each node's successors last-added first), collecting the
/// loop-closing edges into `back`. Returns which nodes it reached.
///
/// Iterative, so a long chain cannot overflow the stack; the visiting order
/// (and so which edge of a cycle counts as the loop-closing one) is that of
/// petgraph's `depth_first_search` on a `DiGraph` with `edges` added in
/// order, which this replaced.
fn back_edges(
    edges: &[(usize, usize)],
    len: usize,
    start: usize,
    back: &mut HashSet<(usize, usize)>,
) -> Vec<bool> {
    let succ = Adjacency::new(len, edges.iter().copied());
    let mut discovered = vec![false; len];
    let mut finished = vec![false; len];
    // (node, how many of its successors are still to visit).
    let mut stack: Vec<(usize, usize)> = Vec::new();
    if start < len {
        discovered[start] = true;
        stack.push((start, succ.of(start).len()));
    }
    while let Some((u, left)) = stack.last_mut() {
        let u = *u;
        let Some(k) = left.checked_sub(1) else {
            finished[u] = true;
            stack.pop();
            continue;
        };
        *left = k;
        let v = succ.of(u)[k];
        if !discovered[v] {
            discovered[v] = true;
            stack.push((v, succ.of(v).len()));
        } else if !finished[v] {
            back.insert((u, v));
        }
    }
    discovered
}

/// Which of the `len` nodes reach `target` along `edges`.
fn reaches(edges: &[(usize, usize)], len: usize, target: usize) -> Vec<bool> {
    let pred = Adjacency::new(len, edges.iter().map(|&(f, t)| (t, f)));
    let mut seen = vec![false; len];
    let mut stack = Vec::new();
    if target < len {
        seen[target] = true;
        stack.push(target);
    }
    while let Some(v) = stack.pop() {
        for &u in pred.of(v) {
            if !seen[u] {
                seen[u] = true;
                stack.push(u);
            }
        }
    }
    seen
}

/// Resolves a reference, recording a problem when it is unknown.
fn resolve(
    index: &HashMap<NodeId, usize>,
    problems: &mut Vec<GraphProblem>,
    id: &NodeId,
    allow_start: bool,
    allow_end: bool,
    by: &dyn Fn() -> String,
) -> Option<Ref> {
    if allow_start && id.as_str() == START {
        return Some(Ref::Start);
    }
    if allow_end && id.as_str() == END {
        return Some(Ref::End);
    }
    match index.get(id.as_str()) {
        Some(&i) => Some(Ref::Node(i)),
        None => {
            problems.push(GraphProblem::UnknownNode {
                node: id.clone(),
                referenced_by: by(),
            });
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ref {
    Start,
    End,
    Node(usize),
}

#[cfg(test)]
mod tests {
    use super::*;
    use petgraph::graph::{DiGraph, NodeIndex};
    use petgraph::visit::{DfsEvent, depth_first_search};
    use proptest::prelude::*;

    /// What petgraph's recursive search, which `back_edges` replaced, finds.
    fn petgraph_back_edges(
        len: usize,
        edges: &[(usize, usize)],
        start: usize,
    ) -> (HashSet<(usize, usize)>, Vec<bool>) {
        let mut g: DiGraph<(), ()> = DiGraph::new();
        for _ in 0..len {
            g.add_node(());
        }
        for &(f, t) in edges {
            g.add_edge(NodeIndex::new(f), NodeIndex::new(t), ());
        }
        let mut back = HashSet::new();
        let mut reached = vec![false; len];
        depth_first_search(&g, Some(NodeIndex::new(start)), |ev| match ev {
            DfsEvent::Discover(v, _) => reached[v.index()] = true,
            DfsEvent::BackEdge(u, v) => {
                back.insert((u.index(), v.index()));
            }
            _ => {}
        });
        (back, reached)
    }

    fn distinct(edges: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
        let mut seen = HashSet::new();
        edges.into_iter().filter(|e| seen.insert(*e)).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn back_edges_match_petgraph(
            len in 1usize..12,
            raw in proptest::collection::vec((0usize..12, 0usize..12), 0..40),
        ) {
            let edges = distinct(raw.into_iter().map(|(f, t)| (f % len, t % len)).collect());
            let mut back = HashSet::new();
            let reached = back_edges(&edges, len, 0, &mut back);
            let (want_back, want_reached) = petgraph_back_edges(len, &edges, 0);
            prop_assert_eq!(back, want_back);
            prop_assert_eq!(reached, want_reached);

            // Reverse reachability, against a plain fixpoint.
            let target = len - 1;
            let mut want = vec![false; len];
            want[target] = true;
            let mut changed = true;
            while changed {
                changed = false;
                for &(f, t) in &edges {
                    if want[t] && !want[f] {
                        want[f] = true;
                        changed = true;
                    }
                }
            }
            prop_assert_eq!(reaches(&edges, len, target), want);
        }
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let len = 1_000_000;
        let edges: Vec<(usize, usize)> = (0..len).map(|i| (i, (i + 1) % len)).collect();
        let mut back = HashSet::new();
        let reached = back_edges(&edges, len, 0, &mut back);
        assert!(reached.iter().all(|&r| r));
        assert_eq!(back, HashSet::from([(len - 1, 0)]));
    }
}
