//! Typed routing: a router returns a label of the user's type; labels are
//! mapped to branch positions when the conditional edge is declared, so the
//! run looks a branch up by position and never compares strings.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use crate::graph::RouteContext;
use crate::ids::NodeId;

/// A value a router returns to choose a branch of a conditional edge.
///
/// Strings (`&'static str`, `String`, `Cow<'static, str>`), `bool`, `char`
/// and the integer types are labels out of the box. For your own enum, use
/// [`branch_label!`](crate::branch_label): it lists every variant with its
/// trace name, so forgetting a variant is a Rust compile error, and
/// compiling the graph fails with
/// [`GraphProblem::UnmappedBranch`](crate::GraphProblem::UnmappedBranch)
/// when a variant has no branch. Open types (strings, integers) cannot be
/// checked ahead: a label with no branch fails the run with
/// [`Error::UnknownBranch`](crate::Error::UnknownBranch).
///
/// ```
/// use flowtrace_core::{GraphBuilder, JsonState, NodeOutput, RunConfig, branch_label, node_fn};
///
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// enum Tier { Fast, Careful }
/// branch_label!(Tier { Fast => "fast", Careful => "careful" });
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let noop = || node_fn(|_s, _ctx| async { Ok(NodeOutput::none()) });
/// let graph = GraphBuilder::<JsonState>::new("tiers")
///     .add_node("triage", noop())
///     .add_node("quick", noop())
///     .add_node("review", noop())
///     .set_entry("triage")
///     .add_conditional_edges(
///         "triage",
///         |s: &JsonState| if s.get("urgent").is_some() { Tier::Fast } else { Tier::Careful },
///         [(Tier::Fast, "quick"), (Tier::Careful, "review")],
///     )
///     .set_finish("quick")
///     .set_finish("review")
///     .compile()
///     .unwrap();
/// let out = graph.invoke(JsonState::new(), RunConfig::new()).await.unwrap();
/// let triage = out.summary.steps_of("triage").next().unwrap();
/// assert_eq!(triage.branch.as_deref(), Some("careful"));
///
/// // A variant without a branch is refused when the graph is compiled.
/// let err = GraphBuilder::<JsonState>::new("tiers")
///     .add_node("triage", noop())
///     .add_node("quick", noop())
///     .set_entry("triage")
///     .add_conditional_edges("triage", |_s: &JsonState| Tier::Fast, [(Tier::Fast, "quick")])
///     .set_finish("quick")
///     .compile()
///     .unwrap_err();
/// assert!(err.to_string().contains("\"careful\""), "{err}");
/// # });
/// ```
pub trait BranchLabel: Clone + Eq + Hash + Send + Sync + 'static {
    /// Every value of the type when it is a closed set (an enum), so that
    /// compiling the graph can prove each one has a branch. `None` (the
    /// default) for open types.
    fn all() -> Option<Vec<Self>>
    where
        Self: Sized,
    {
        None
    }

    /// The label's name in the trace (`StepRecord::branch`, `route` events).
    fn name(&self) -> Cow<'_, str>;
}

impl BranchLabel for &'static str {
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl BranchLabel for String {
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl BranchLabel for Cow<'static, str> {
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self)
    }
}

impl BranchLabel for NodeId {
    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.as_str())
    }
}

impl BranchLabel for bool {
    fn all() -> Option<Vec<Self>> {
        Some(vec![true, false])
    }

    fn name(&self) -> Cow<'_, str> {
        Cow::Borrowed(if *self { "true" } else { "false" })
    }
}

macro_rules! display_labels {
    ($($t:ty),*) => {$(
        impl BranchLabel for $t {
            fn name(&self) -> Cow<'_, str> {
                Cow::Owned(self.to_string())
            }
        }
    )*};
}
display_labels!(char, u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

/// Implements [`BranchLabel`] for a fieldless enum: every variant with the
/// name it has in the trace. A variant left out is a compile error (the
/// generated `match` is exhaustive).
///
/// ```
/// #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
/// enum Verdict { Approve, Reject }
/// flowtrace_core::branch_label!(Verdict { Approve => "approve", Reject => "reject" });
/// ```
#[macro_export]
macro_rules! branch_label {
    ($ty:ident { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $crate::graph::BranchLabel for $ty {
            fn all() -> ::core::option::Option<::std::vec::Vec<Self>> {
                ::core::option::Option::Some(::std::vec![$($ty::$variant),+])
            }

            fn name(&self) -> ::std::borrow::Cow<'_, str> {
                match self {
                    $($ty::$variant => ::std::borrow::Cow::Borrowed($name),)+
                }
            }
        }
    };
}

/// The branches a router chose, by position in its branch list.
pub(crate) enum Routes {
    /// One branch (the common case, no allocation).
    One(usize),
    /// Any number of branches (fan-out; none ends the branch).
    Many(Vec<usize>),
    /// A label with no branch (open label types only): its name.
    Unknown(String),
}

/// A router: reads the merged state and returns branch positions.
pub(crate) type RouterFn<S> = Arc<dyn Fn(&S, &RouteContext<'_>) -> Routes + Send + Sync>;

/// Up to this many labels, a lookup compares labels in turn (a bounded,
/// allocation-free scan); above it, a hash map answers.
const SCAN_LABELS: usize = 8;

/// Label → branch position, fixed when the edge is declared.
pub(crate) struct LabelMap<L> {
    scan: Vec<(L, usize)>,
    hashed: HashMap<L, usize>,
}

impl<L: BranchLabel> LabelMap<L> {
    pub(crate) fn position(&self, label: &L) -> Option<usize> {
        if self.hashed.is_empty() {
            self.scan.iter().find(|(l, _)| l == label).map(|&(_, i)| i)
        } else {
            self.hashed.get(label).copied()
        }
    }

    pub(crate) fn route(&self, label: &L) -> Routes {
        match self.position(label) {
            Some(i) => Routes::One(i),
            None => Routes::Unknown(label.name().into_owned()),
        }
    }

    pub(crate) fn route_many(&self, labels: impl IntoIterator<Item = L>) -> Routes {
        let mut out = Vec::new();
        for label in labels {
            match self.position(&label) {
                Some(i) => out.push(i),
                None => return Routes::Unknown(label.name().into_owned()),
            }
        }
        Routes::Many(out)
    }
}

/// A conditional edge's branches as declared: names and targets by
/// position, the label map, and the labels of a closed type left unmapped.
pub(crate) struct DeclaredBranches<L> {
    pub(crate) map: LabelMap<L>,
    /// `(name, targets)` per branch position.
    pub(crate) branches: Vec<(String, Vec<NodeId>)>,
    pub(crate) unmapped: Vec<String>,
}

/// Groups `(label, target)` pairs by label (a label may lead to several
/// targets) and lists the labels of a closed type that have no branch.
pub(crate) fn declare<L, T>(pairs: impl IntoIterator<Item = (L, T)>) -> DeclaredBranches<L>
where
    L: BranchLabel,
    T: Into<NodeId>,
{
    let mut hashed: HashMap<L, usize> = HashMap::new();
    let mut branches: Vec<(String, Vec<NodeId>)> = Vec::new();
    let mut order: Vec<L> = Vec::new();
    for (label, to) in pairs {
        match hashed.get(&label) {
            Some(&i) => branches[i].1.push(to.into()),
            None => {
                hashed.insert(label.clone(), branches.len());
                branches.push((label.name().into_owned(), vec![to.into()]));
                order.push(label);
            }
        }
    }
    let unmapped = L::all()
        .unwrap_or_default()
        .into_iter()
        .filter(|l| !hashed.contains_key(l))
        .map(|l| l.name().into_owned())
        .collect();
    let map = if order.len() <= SCAN_LABELS {
        LabelMap {
            scan: order.into_iter().enumerate().map(|(i, l)| (l, i)).collect(),
            hashed: HashMap::new(),
        }
    } else {
        LabelMap {
            scan: Vec::new(),
            hashed,
        }
    };
    DeclaredBranches {
        map,
        branches,
        unmapped,
    }
}
