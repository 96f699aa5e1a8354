//! Validation and compilation of a [`GraphBuilder`] into index-based form.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::{Dfs, DfsEvent, Reversed, depth_first_search};

use crate::error::{BuildError, GraphProblem};
use crate::graph::builder::{END, GraphBuilder, RouterFn, START};
use crate::graph::{CompiledGraph, Inner};
use crate::ids::NodeId;
use crate::node::{Node, NodeConfig};
use crate::state::State;

/// Where an edge leads: a node index or the finish.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    pub(crate) branches: Vec<Branch>,
}

pub(crate) struct CompiledNode<S: State> {
    pub(crate) id: NodeId,
    pub(crate) node: Arc<dyn Node<S>>,
    pub(crate) config: NodeConfig,
    /// Plain successors.
    pub(crate) statics: Vec<Target>,
    pub(crate) router: Option<Router<S>>,
    /// Nodes this node may dispatch instances of.
    pub(crate) dispatch: Vec<usize>,
    /// Distinct successors reached by forward (non-loop) edges of any kind.
    pub(crate) forward: Vec<usize>,
    /// Distinct successors reached by loop-closing edges.
    pub(crate) back: Vec<usize>,
    /// How many distinct forward predecessors (including the start) a join
    /// waits for.
    pub(crate) forward_in: u32,
}

impl<S: State> CompiledNode<S> {
    pub(crate) fn is_back(&self, target: usize) -> bool {
        self.back.contains(&target)
    }
}

pub(crate) fn compile<S: State>(b: GraphBuilder<S>) -> Result<CompiledGraph<S>, BuildError> {
    let mut problems = Vec::new();
    let mut index: HashMap<NodeId, usize> = HashMap::new();
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
    // (from, to) pairs for the analysis graph; usize::MAX = start, n = end.
    let mut pairs: Vec<(Ref, Ref)> = Vec::new();

    for (from, to) in &b.edges {
        let by = || format!("edge {from:?} -> {to:?}");
        let f = resolve(&index, &mut problems, from, true, false, &by);
        let t = resolve(&index, &mut problems, to, false, true, &by);
        if let (Some(f), Some(t)) = (f, t) {
            match (f, t) {
                (Ref::Start, Ref::Node(t)) => entries.push(t),
                (Ref::Start, Ref::End) => {}
                (Ref::Node(f), Ref::Node(t)) if !statics[f].contains(&Target::Node(t)) => {
                    statics[f].push(Target::Node(t))
                }
                (Ref::Node(f), Ref::End) if !statics[f].contains(&Target::End) => {
                    statics[f].push(Target::End)
                }
                _ => {}
            }
            pairs.push((f, t));
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
        let mut branches: Vec<Branch> = Vec::new();
        for (label, to) in &r.branches {
            let by = || format!("branch {label:?} of conditional edge from {:?}", r.from);
            let Some(t) = resolve(&index, &mut problems, to, false, true, &by) else {
                continue;
            };
            let target = match t {
                Ref::Node(t) => Target::Node(t),
                _ => Target::End,
            };
            pairs.push((Ref::Node(f), t));
            match branches.iter_mut().find(|br| &br.label == label) {
                Some(br) => br.targets.push(target),
                None => branches.push(Branch {
                    label: label.clone(),
                    targets: vec![target],
                }),
            }
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
            if !dispatch[f].contains(&t) {
                dispatch[f].push(t);
            }
            pairs.push((Ref::Node(f), Ref::Node(t)));
        }
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

    // Analysis graph: node i is index i, then START and END.
    let mut g: DiGraph<(), ()> = DiGraph::with_capacity(n + 2, pairs.len());
    for _ in 0..n + 2 {
        g.add_node(());
    }
    let start = NodeIndex::new(n);
    let end = NodeIndex::new(n + 1);
    let ix = |r: Ref| match r {
        Ref::Node(i) => NodeIndex::new(i),
        Ref::Start => start,
        Ref::End => end,
    };
    let mut seen_pairs = HashSet::new();
    for &(f, t) in &pairs {
        if seen_pairs.insert((ix(f), ix(t))) {
            g.add_edge(ix(f), ix(t), ());
        }
    }

    let mut back: HashSet<(usize, usize)> = HashSet::new();
    let mut reachable = vec![false; n + 2];
    if !entries.is_empty() {
        depth_first_search(&g, Some(start), |ev| match ev {
            DfsEvent::Discover(v, _) => reachable[v.index()] = true,
            DfsEvent::BackEdge(u, v) => {
                back.insert((u.index(), v.index()));
            }
            _ => {}
        });
        for (i, def) in b.nodes.iter().enumerate() {
            if index.get(def.id.as_str()) == Some(&i) && !reachable[i] {
                problems.push(GraphProblem::Unreachable {
                    node: def.id.clone(),
                });
            }
        }
    }
    let mut finishes = vec![false; n + 2];
    let rev = Reversed(&g);
    let mut dfs = Dfs::new(rev, end);
    while let Some(v) = dfs.next(rev) {
        finishes[v.index()] = true;
    }
    for (i, def) in b.nodes.iter().enumerate() {
        if index.get(def.id.as_str()) == Some(&i) && !finishes[i] {
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
    let mut counted = HashSet::new();
    for &(f, t) in &pairs {
        if let (Ref::Node(f), Ref::Node(t)) = (f, t) {
            if !counted.insert((f, t)) {
                continue;
            }
            if back.contains(&(f, t)) {
                back_targets[f].push(t);
            } else {
                forward[f].push(t);
                forward_in[t] += 1;
            }
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
        .map(|(i, (((def, statics), router), dispatch))| CompiledNode {
            id: def.id,
            node: def.node,
            config: def.config,
            statics,
            router,
            dispatch,
            forward: std::mem::take(&mut forward[i]),
            back: std::mem::take(&mut back_targets[i]),
            forward_in: forward_in[i],
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
