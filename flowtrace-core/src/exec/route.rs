//! Routing after a super-step: edges, routers, dispatches and join
//! bookkeeping.

use std::panic::AssertUnwindSafe;

use tokio::time::Instant;

use super::attempt::panic_message;
use super::executor::*;
use crate::error::Error;
use crate::graph::Routes;
use crate::graph::compile::Target;
use crate::node::Dispatch;
use crate::state::State;
use crate::trace::EventKind;
use crate::trace::StepRecord;

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

        let n = graph.nodes.len();
        self.chosen.clear(n);
        for target in &cn.statics {
            if let Target::Node(t) = *target {
                self.chosen.insert(t);
            }
        }
        let mut skip_reason = String::from("no active predecessor");
        if let Some(router) = &cn.router {
            let state = &*self.state;
            let route_ctx = crate::graph::RouteContext { run: &self.run };
            let routes =
                std::panic::catch_unwind(AssertUnwindSafe(|| (router.route)(state, &route_ctx)))
                    .map_err(|p| Error::NodePanicked {
                        node: cn.id.clone(),
                        message: format!("router panicked: {}", panic_message(p.as_ref())),
                    })?;
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
            let mut names: Vec<String> = Vec::new();
            self.named.clear(n);
            let mut end_named = false;
            for &position in positions {
                let Some(branch) = router.branches.get(position) else {
                    continue;
                };
                for t in &branch.targets {
                    match *t {
                        Target::Node(t) => {
                            self.chosen.insert(t);
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
            let label_of = |i: &usize| router.branches.get(*i).map_or("", |b| b.label.as_str());
            let chosen_label = match &routes {
                Routes::One(i) => label_of(i).to_string(),
                Routes::Many(is) => is.iter().map(label_of).collect::<Vec<_>>().join(","),
                Routes::Unknown(label) => label.clone(),
            };
            skip_reason = match positions.len() {
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
            self.emit(
                Instant::now(),
                step_id,
                Some(node),
                0,
                EventKind::Route {
                    branch: chosen_label,
                    targets: names,
                },
            );
        }

        // Dispatch inputs by target (each target is one forward or back successor).
        let mut inputs: std::collections::HashMap<usize, Vec<serde_json::Value>> =
            Default::default();
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

        let mut batch = |t: usize| match inputs.is_empty() {
            true => None,
            false => inputs.remove(&t),
        };
        for &t in &cn.forward {
            match batch(t) {
                Some(batch) => self.fire_forward(t, batch, next),
                None if self.chosen.contains(t) => self.fire_forward(t, Vec::new(), next),
                None => self.skip_token(t, &skip_reason, next),
            }
        }
        for &t in &cn.back {
            match batch(t) {
                Some(batch) => self.schedule(t, batch, next),
                None if self.chosen.contains(t) => self.schedule(t, Vec::new(), next),
                None => {}
            }
        }
        Ok(())
    }

    /// A forward edge into `t` fired.
    pub(super) fn fire_forward(
        &mut self,
        t: usize,
        inputs: Vec<serde_json::Value>,
        next: &mut Vec<Task>,
    ) {
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
        self.emit(
            now,
            Some(step_id),
            Some(t),
            0,
            EventKind::StepSkipped {
                reason: reason.to_string(),
            },
        );
        self.records.push(StepRecord::skipped(
            step_id,
            self.graph.nodes[t].id.clone(),
            self.parent_step,
            self.run.ts(now),
            reason,
        ));
    }
}
