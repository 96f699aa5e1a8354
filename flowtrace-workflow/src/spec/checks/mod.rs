//! Semantic checks over a parsed document: ids, edges, conditions, the
//! graph's shape and the limits. Per-node checks are in [`nodes`].

use super::*;

mod nodes;

/// A node as far as its shape allows.
struct NodeView<'a> {
    id: Option<&'a str>,
    node_type: Option<&'a str>,
    config: Option<&'a Map<String, Value>>,
    inputs: Option<&'a Map<String, Value>>,
    retry: Option<&'a Map<String, Value>>,
}

/// An edge whose ends both resolve to nodes.
struct ResolvedEdge {
    index: usize,
    from: usize,
    to: usize,
}

/// Who may be read by name from a template.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TemplateRole {
    /// A node input: may read node outputs and the workflow input only.
    Input,
    /// Any other template: may also read the node's inputs by name.
    Config,
}

pub(super) struct Checker<'a, 'o> {
    root: &'a Value,
    known: &'a Known,
    out: &'o mut Vec<Problem>,
    nodes: Vec<NodeView<'a>>,
    /// Node id → index of its first definition.
    ids: HashMap<&'a str, usize>,
    edges: Vec<ResolvedEdge>,
    succ: Vec<Vec<usize>>,
    pred: Vec<Vec<usize>>,
    ancestors: HashMap<usize, HashSet<usize>>,
}

impl<'a, 'o> Checker<'a, 'o> {
    pub(super) fn new(root: &'a Value, known: &'a Known, out: &'o mut Vec<Problem>) -> Self {
        Checker {
            root,
            known,
            out,
            nodes: Vec::new(),
            ids: HashMap::new(),
            edges: Vec::new(),
            succ: Vec::new(),
            pred: Vec::new(),
            ancestors: HashMap::new(),
        }
    }

    fn push(&mut self, pointer: impl Into<String>, kind: ProblemKind, message: impl Into<String>) {
        self.out.push(Problem::new(pointer, kind, message));
    }

    pub(super) fn run(mut self) {
        let Some(root) = self.root.as_object() else {
            return;
        };
        self.collect_nodes(root);
        self.check_entry(root);
        self.collect_edges(root);
        for i in 0..self.nodes.len() {
            self.check_node(i);
        }
        self.check_limits(root);
        self.check_cycles();
        self.check_reachability(root);
    }

    fn collect_nodes(&mut self, root: &'a Map<String, Value>) {
        let Some(nodes) = root.get("nodes").and_then(Value::as_array) else {
            return;
        };
        for (i, node) in nodes.iter().enumerate() {
            let obj = node.as_object();
            let field = |k: &str| obj.and_then(|o| o.get(k));
            let view = NodeView {
                id: field("id").and_then(Value::as_str),
                node_type: field("type").and_then(Value::as_str),
                config: field("config").and_then(Value::as_object),
                inputs: field("inputs").and_then(Value::as_object),
                retry: field("retry").and_then(Value::as_object),
            };
            if let Some(id) = view.id {
                if let Some(&first) = self.ids.get(id) {
                    self.push(
                        format!("/nodes/{i}/id"),
                        ProblemKind::Duplicate,
                        format!(
                            "duplicate node id `{}` (first defined at /nodes/{first})",
                            quote(id)
                        ),
                    );
                } else {
                    self.ids.insert(id, i);
                }
            }
            self.nodes.push(view);
        }
        self.succ = vec![Vec::new(); self.nodes.len()];
        self.pred = vec![Vec::new(); self.nodes.len()];
    }

    fn check_entry(&mut self, root: &'a Map<String, Value>) {
        if let Some(entry) = root.get("entry").and_then(Value::as_str)
            && root.get("nodes").is_some_and(Value::is_array)
            && !self.ids.contains_key(entry)
        {
            self.push(
                "/entry",
                ProblemKind::UnknownNode,
                format!("entry node `{}` does not exist", quote(entry)),
            );
        }
    }

    fn collect_edges(&mut self, root: &'a Map<String, Value>) {
        let Some(edges) = root.get("edges").and_then(Value::as_array) else {
            return;
        };
        let mut seen: HashMap<(&str, &str, Option<&str>), usize> = HashMap::new();
        for (i, edge) in edges.iter().enumerate() {
            let Some(obj) = edge.as_object() else {
                continue;
            };
            let mut end = |key: &str| -> Option<(&'a str, usize)> {
                let id = obj.get(key)?.as_str()?;
                match self.ids.get(id) {
                    Some(&n) => Some((id, n)),
                    None => {
                        self.out.push(Problem::new(
                            format!("/edges/{i}/{key}"),
                            ProblemKind::UnknownNode,
                            format!("edge {key} unknown node `{}`", quote(id)),
                        ));
                        None
                    }
                }
            };
            let from = end("from");
            let to = end("to");
            let when = obj.get("when").and_then(Value::as_str);
            if let Some(when) = when {
                self.check_when(i, when, from.map(|(_, n)| n));
            }
            if let (Some((from_id, from)), Some((to_id, to))) = (from, to) {
                if let Some(first) = seen.get(&(from_id, to_id, when)) {
                    self.push(
                        format!("/edges/{i}"),
                        ProblemKind::Duplicate,
                        format!(
                            "duplicate edge `{}` → `{}` (same as /edges/{first})",
                            quote(from_id),
                            quote(to_id)
                        ),
                    );
                    continue;
                }
                seen.insert((from_id, to_id, when), i);
                self.edges.push(ResolvedEdge { index: i, from, to });
                self.succ[from].push(to);
                self.pred[to].push(from);
            }
        }
    }

    fn check_when(&mut self, edge: usize, when: &str, from: Option<usize>) {
        let pointer = format!("/edges/{edge}/when");
        let rule = match Rule::parse(when) {
            Ok(rule) => Some(rule),
            Err(e) => {
                self.out.push(
                    Problem::new(&pointer, ProblemKind::Rule, format!("condition {e}"))
                        .at(None, Some(e.column()))
                        .with_limit(e.limit_exceeded()),
                );
                None
            }
        };
        let Some(from) = from else {
            return;
        };
        let Some(node) = self.nodes.get(from) else {
            return;
        };
        match node.node_type {
            Some("router") => {}
            Some(other) => {
                let other = other.to_owned();
                let id = node.id.unwrap_or_default().to_owned();
                self.push(
                    pointer,
                    ProblemKind::Invalid,
                    format!(
                        "only edges leaving a router may have a `when` condition; `{}` is a {} node",
                        quote(&id),
                        quote(&other)
                    ),
                );
                return;
            }
            None => return,
        }
        let Some(rule) = rule else {
            return;
        };
        let inputs = node.inputs;
        for var in rule.variables() {
            if var != "branch" && !inputs.is_some_and(|m| m.contains_key(&var)) {
                self.push(
                    &pointer,
                    ProblemKind::UnknownVariable,
                    format!(
                        "condition reads `{}`, but only `branch` and the router's inputs ({}) are available",
                        quote(&var),
                        names(inputs)
                    ),
                );
            }
        }
    }
    /// Nodes with a path to `node` (cached).
    fn ancestors_of(&mut self, node: usize) -> &HashSet<usize> {
        let pred = &self.pred;
        self.ancestors.entry(node).or_insert_with(|| {
            let mut seen = HashSet::new();
            let mut queue = VecDeque::from([node]);
            while let Some(n) = queue.pop_front() {
                for &p in pred.get(n).into_iter().flatten() {
                    if seen.insert(p) {
                        queue.push_back(p);
                    }
                }
            }
            seen
        })
    }

    fn check_limits(&mut self, root: &Map<String, Value>) {
        let Some(limits) = root.get("limits").and_then(Value::as_object) else {
            return;
        };
        if let Some(max) = limits.get("maxNodes").and_then(Value::as_u64)
            && let Some(nodes) = root.get("nodes").and_then(Value::as_array)
            && (nodes.len() as u64) > max
        {
            self.push(
                "/limits/maxNodes",
                ProblemKind::Limits,
                format!(
                    "maxNodes is {max}, but the workflow has {} nodes",
                    nodes.len()
                ),
            );
        }
        if let Some(cost) = limits.get("maxCostUsd")
            && (cost.is_number() || cost.is_string())
        {
            match Cost::deserialize(cost) {
                Ok(c) if c.is_zero() => self.push(
                    "/limits/maxCostUsd",
                    ProblemKind::Limits,
                    "maxCostUsd must be greater than zero",
                ),
                Ok(_) => {}
                Err(e) => self.push(
                    "/limits/maxCostUsd",
                    ProblemKind::Limits,
                    format!("maxCostUsd is not an exact dollar amount: {e}"),
                ),
            }
        }
    }

    fn check_cycles(&mut self) {
        let mut graph = DiGraph::<usize, usize>::with_capacity(self.nodes.len(), self.edges.len());
        let index: Vec<NodeIndex> = (0..self.nodes.len()).map(|i| graph.add_node(i)).collect();
        for e in &self.edges {
            if let (Some(&a), Some(&b)) = (index.get(e.from), index.get(e.to)) {
                graph.add_edge(a, b, e.index);
            }
        }
        let mut components: Vec<Vec<usize>> = petgraph::algo::tarjan_scc(&graph)
            .into_iter()
            .map(|c| {
                let mut c: Vec<usize> = c.into_iter().map(NodeIndex::index).collect();
                c.sort_unstable();
                c
            })
            .filter(|c| match c.as_slice() {
                [single] => self.succ.get(*single).is_some_and(|s| s.contains(single)),
                _ => true,
            })
            .collect();
        components.sort();
        for component in components {
            if let Some((edge, path)) = self.find_cycle(&component) {
                let path = path
                    .iter()
                    .map(|&n| quote(self.nodes.get(n).and_then(|v| v.id).unwrap_or_default()))
                    .collect::<Vec<_>>();
                self.push(
                    format!("/edges/{edge}"),
                    ProblemKind::Cycle,
                    format!(
                        "edges form a cycle {}; workflows must be acyclic",
                        path.join(" → ")
                    ),
                );
            }
        }
    }

    /// A shortest cycle through the first node of a strongly connected
    /// `component`: the index of its closing edge and the node path (first
    /// node repeated at the end).
    fn find_cycle(&self, component: &[usize]) -> Option<(usize, Vec<usize>)> {
        let start = *component.first()?;
        let members: HashSet<usize> = component.iter().copied().collect();
        let mut out_edges: HashMap<usize, Vec<&ResolvedEdge>> = HashMap::new();
        for e in &self.edges {
            if members.contains(&e.from) && members.contains(&e.to) {
                out_edges.entry(e.from).or_default().push(e);
            }
        }
        let mut parent: HashMap<usize, usize> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        while let Some(n) = queue.pop_front() {
            for e in out_edges.get(&n).into_iter().flatten() {
                if e.to == start {
                    let mut path = vec![start];
                    let mut cur = n;
                    while cur != start {
                        path.push(cur);
                        cur = *parent.get(&cur)?;
                    }
                    path.push(start);
                    path.reverse();
                    return Some((e.index, path));
                }
                if e.to != start && !parent.contains_key(&e.to) {
                    parent.insert(e.to, n);
                    queue.push_back(e.to);
                }
            }
        }
        None
    }

    fn check_reachability(&mut self, root: &Map<String, Value>) {
        let Some(&entry) = root
            .get("entry")
            .and_then(Value::as_str)
            .and_then(|e| self.ids.get(e))
        else {
            return;
        };
        let mut reached = vec![false; self.nodes.len()];
        let mut queue = VecDeque::from([entry]);
        if let Some(r) = reached.get_mut(entry) {
            *r = true;
        }
        while let Some(n) = queue.pop_front() {
            for &s in self.succ.get(n).into_iter().flatten() {
                if let Some(r) = reached.get_mut(s)
                    && !*r
                {
                    *r = true;
                    queue.push_back(s);
                }
            }
        }
        let entry_id = quote(
            root.get("entry")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        let unreached: Vec<(usize, &str)> = self
            .ids
            .iter()
            .filter(|&(_, &i)| !reached.get(i).copied().unwrap_or(true))
            .map(|(&id, &i)| (i, id))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        for (i, id) in unreached {
            self.push(
                format!("/nodes/{i}"),
                ProblemKind::Unreachable,
                format!(
                    "node `{}` is not reachable from the entry node `{entry_id}`",
                    quote(id)
                ),
            );
        }
    }
}

/// The input names of a node for a message.
fn names(inputs: Option<&Map<String, Value>>) -> String {
    match inputs {
        Some(m) if !m.is_empty() => {
            let mut list: Vec<String> = m.keys().take(16).map(|k| quote(k)).collect();
            if m.len() > 16 {
                list.push("…".to_owned());
            }
            list.join(", ")
        }
        _ => "none".to_owned(),
    }
}

/// Whether any string inside `value` contains a template placeholder.
fn has_template(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains("{{"),
        Value::Array(items) => items.iter().any(has_template),
        Value::Object(map) => map.values().any(has_template),
        _ => false,
    }
}
