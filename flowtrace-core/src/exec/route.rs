//! Routing after a super-step: edges, routers, dispatches and join
//! bookkeeping.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;

use tokio::time::Instant;

use super::attempt::panic_message;
use super::executor::*;
use crate::error::Error;
use crate::graph::Inner;
use crate::graph::Routes;
use crate::graph::compile::{CompiledNode, Router, Target};
use crate::node::Dispatch;
use crate::state::State;
use crate::trace::EventKind;
use crate::trace::StepRecord;

/// Dispatch inputs by target (each target is one forward or back
/// successor of `cn`).
fn dispatch_inputs<S: State>(
    graph: &Inner<S>,
    cn: &CompiledNode<S>,
    dispatches: Vec<Dispatch>,
) -> Result<HashMap<usize, Vec<serde_json::Value>>, Error> {
    let mut inputs: HashMap<usize, Vec<serde_json::Value>> = HashMap::new();
    for d in dispatches {
        let target = graph
            .index
            .get(d.target.as_str())
            .copied()
            .filter(|&t| cn.may_dispatch(t))
            .ok_or_else(|| Error::UnknownDispatchTarget {
                node: cn.id.clone(),
                target: d.target.to_string(),
            })?;
        inputs.entry(target).or_default().push(d.input);
    }
    Ok(inputs)
}

impl<S: State> Executor<'_, S> {
    /// Re-evaluates the edges out of `node` (after a human edited the state
    /// as if the node had produced it), adding what they schedule to `next`.
    pub(crate) fn reroute(&mut self, node: usize, next: &mut Vec<Task>) -> Result<(), Error> {
        self.propagate(node, usize::MAX, Vec::new(), next)?;
        self.generation += 1;
        Ok(())
    }

    /// Fires, skips or dispatches the successors of a node whose instances
    /// all finished in the last super-step.
    pub(super) fn propagate(
        &mut self,
        node: usize,
        record: usize,
        dispatches: Vec<Dispatch>,
        next: &mut Vec<Task>,
    ) -> Result<(), Error> {
        let graph = self.graph;
        let cn = &graph.nodes[node];
        if cn.router.is_none() && cn.dispatch.is_empty() && dispatches.is_empty() {
            // Plain edges only: every successor fires.
            for target in &cn.statics {
                if let Target::Node(t) = *target {
                    if cn.is_back(t) {
                        self.schedule(t, Vec::new(), next);
                    } else {
                        self.fire_forward(t, Vec::new(), next);
                    }
                }
            }
            return Ok(());
        }
        self.chosen.clear(graph.nodes.len());
        for target in &cn.statics {
            if let Target::Node(t) = *target {
                self.chosen.insert(t);
            }
        }
        let skip_reason = match &cn.router {
            Some(router) => self.route(node, router, record)?,
            None => String::from("no active predecessor"),
        };
        let inputs = dispatch_inputs(graph, cn, dispatches)?;
        self.fire_successors(cn, inputs, &skip_reason, next);
        Ok(())
    }

    /// Asks `router` (the router of `node`, whose last step record is
    /// `record`) for its branches, marks their targets chosen, notes the
    /// branch in the record and emits `route`. Returns the reason the
    /// targets not chosen are skipped.
    fn route(&mut self, node: usize, router: &Router<S>, record: usize) -> Result<String, Error> {
        let cn = &self.graph.nodes[node];
        let routes = self.call_router(cn, router)?;
        let positions: &[usize] = match &routes {
            Routes::One(i) => std::slice::from_ref(i),
            Routes::Many(is) => is,
            Routes::Unknown(label) => {
                return Err(Error::UnknownBranch {
                    node: cn.id.clone(),
                    branch: label.clone(),
                    known: router.branches.iter().map(|b| b.label.clone()).collect(),
                });
            }
        };
        for branch in positions.iter().filter_map(|&p| router.branches.get(p)) {
            for t in &branch.targets {
                if let Target::Node(t) = *t {
                    self.chosen.insert(t);
                }
            }
        }
        let label_of = |i: &usize| router.branches.get(*i).map_or("", |b| b.label.as_str());
        let chosen_label = match &routes {
            Routes::One(i) => label_of(i).to_string(),
            Routes::Many(is) => is.iter().map(label_of).collect::<Vec<_>>().join(","),
            Routes::Unknown(label) => label.clone(),
        };
        let skip_reason = match positions.len() {
            0 => format!("router {:?} chose no branch", cn.id.as_str()),
            1 => format!(
                "branch {:?} of {:?} was chosen",
                chosen_label,
                cn.id.as_str()
            ),
            _ => format!(
                "branches {:?} of {:?} were chosen",
                chosen_label,
                cn.id.as_str()
            ),
        };
        let step_id = self.records.get(record).map(|r| r.step_id);
        if let Some(r) = self.records.get_mut(record) {
            r.branch = Some(chosen_label.clone());
        }
        if self.run.bus.wants_event() {
            let targets = self.target_names(router, positions);
            self.emit(
                Instant::now(),
                step_id,
                Some(node),
                0,
                EventKind::Route {
                    branch: chosen_label,
                    targets,
                },
            );
        }
        Ok(skip_reason)
    }

    /// Runs a router, turning a panic into an error naming its node.
    fn call_router(&self, cn: &CompiledNode<S>, router: &Router<S>) -> Result<Routes, Error> {
        let state = &*self.state;
        let route_ctx = crate::graph::RouteContext { run: &self.run };
        std::panic::catch_unwind(AssertUnwindSafe(|| (router.route)(state, &route_ctx))).map_err(
            |p| Error::NodePanicked {
                node: cn.id.clone(),
                message: format!("router panicked: {}", panic_message(p.as_ref())),
            },
        )
    }

    /// The distinct targets of the chosen branches, in branch order, as
    /// named in the `route` event.
    fn target_names(&mut self, router: &Router<S>, positions: &[usize]) -> Vec<String> {
        let graph = self.graph;
        let mut names: Vec<String> = Vec::new();
        self.named.clear(graph.nodes.len());
        let mut end_named = false;
        for branch in positions.iter().filter_map(|&p| router.branches.get(p)) {
            for t in &branch.targets {
                match *t {
                    Target::Node(t) => {
                        if self.named.insert(t) {
                            names.push(graph.nodes[t].id.to_string());
                        }
                    }
                    Target::End if !end_named => {
                        end_named = true;
                        names.push(crate::graph::END.to_string());
                    }
                    Target::End => {}
                }
            }
        }
        names
    }

    /// Fires the chosen (or dispatched to) forward and back successors of
    /// `cn`; forward successors not chosen get a skip for `skip_reason`.
    fn fire_successors(
        &mut self,
        cn: &CompiledNode<S>,
        mut inputs: HashMap<usize, Vec<serde_json::Value>>,
        skip_reason: &str,
        next: &mut Vec<Task>,
    ) {
        let mut batch = |t: usize| match inputs.is_empty() {
            true => None,
            false => inputs.remove(&t),
        };
        for &t in &cn.forward {
            match batch(t) {
                Some(batch) => self.fire_forward(t, batch, next),
                None if self.chosen.contains(t) => self.fire_forward(t, Vec::new(), next),
                None => self.skip_token(t, skip_reason, next),
            }
        }
        for &t in &cn.back {
            match batch(t) {
                Some(batch) => self.schedule(t, batch, next),
                None if self.chosen.contains(t) => self.schedule(t, Vec::new(), next),
                None => {}
            }
        }
    }

    /// A forward edge into `t` fired.
    pub(super) fn fire_forward(
        &mut self,
        t: usize,
        inputs: Vec<serde_json::Value>,
        next: &mut Vec<Task>,
    ) {
        // A node with one forward predecessor and no token pending (the
        // common case: chains): the token completes its join at once, so it
        // is scheduled without counting and settling it.
        if inputs.is_empty() && self.graph.nodes[t].forward_in == 1 {
            let p = &self.pending[t];
            if p.resolved == 0 && p.fired == 0 && p.inputs.is_empty() {
                self.schedule(t, inputs, next);
                return;
            }
        }
        let p = &mut self.pending[t];
        p.resolved += 1;
        p.fired += 1;
        if !inputs.is_empty() {
            p.inputs.extend(inputs);
        }
        self.check_ready(t, "no active predecessor", next);
    }

    /// A forward edge into `t` will not fire in this activation.
    pub(super) fn skip_token(&mut self, t: usize, reason: &str, next: &mut Vec<Task>) {
        self.pending[t].resolved += 1;
        self.check_ready(t, reason, next);
    }

    /// Once every forward predecessor of `t` resolved: runs it if any fired,
    /// otherwise records it as skipped and passes the skip on.
    pub(super) fn check_ready(&mut self, t: usize, reason: &str, next: &mut Vec<Task>) {
        let graph = self.graph;
        // Nodes skipped transitively, handled after `t`.
        let mut work: Vec<usize> = Vec::new();
        let mut current = Some((t, reason));
        while let Some((t, reason)) = current
            .take()
            .or_else(|| work.pop().map(|u| (u, "every predecessor was skipped")))
        {
            let p = &mut self.pending[t];
            if p.resolved < graph.nodes[t].forward_in {
                continue;
            }
            let fired = p.fired;
            let inputs = std::mem::take(&mut p.inputs);
            p.resolved = 0;
            p.fired = 0;
            self.pending.settle(t);
            if fired > 0 {
                self.schedule(t, inputs, next);
                continue;
            }
            self.record_skip(t, reason);
            for &u in &graph.nodes[t].forward {
                self.pending[u].resolved += 1;
                work.push(u);
            }
        }
    }

    pub(super) fn schedule(
        &mut self,
        t: usize,
        inputs: Vec<serde_json::Value>,
        next: &mut Vec<Task>,
    ) {
        if inputs.is_empty() {
            if self.scheduled[t] == self.generation {
                return;
            }
            self.scheduled[t] = self.generation;
            next.push(Task::new(t, None));
        } else {
            next.extend(inputs.into_iter().map(|input| Task::new(t, Some(input))));
        }
    }

    pub(super) fn record_skip(&mut self, t: usize, reason: &str) {
        let step_id = self.run.next_step_id();
        let now = Instant::now();
        self.emit_with(now, Some(step_id), Some(t), 0, || EventKind::StepSkipped {
            reason: reason.to_string(),
        });
        self.records.push(StepRecord::skipped(
            step_id,
            self.graph.nodes[t].id.clone(),
            self.parent_step,
            self.run.ts(now),
            reason,
        ));
    }
}
