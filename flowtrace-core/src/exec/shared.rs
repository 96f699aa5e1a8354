//! State shared by everything that runs inside one run: the event bus, the
//! clock, pricing, the budget ledger and counters. Subgraphs share their
//! parent run's `RunShared`.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::error::{BudgetBreach, BudgetExceeded};
use crate::exec::durable::HaltSignal;
use crate::exec::{Budget, RetryPolicy, RunConfig};
use crate::ids::{NodeId, RunId, StepId};
use crate::pricing::{Cost, MissingPrice, Pricing};
use crate::trace::StepRecord;
use crate::trace::{EventBus, EventKind, Timestamp, TraceEvent};

/// Tokens and cost, the two metered quantities of the ledger.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Amount {
    pub(crate) tokens: u64,
    pub(crate) cost: Cost,
}

impl Amount {
    pub(crate) const ZERO: Amount = Amount {
        tokens: 0,
        cost: Cost::ZERO,
    };
}

#[derive(Debug, Default)]
struct LedgerState {
    spent: Amount,
    reserved: Amount,
}

/// Enforces the token and cost limits with reservations: work reserves its
/// worst-case estimate before it starts and settles with the actual amount
/// when it ends, so concurrent work can never overshoot a hard cap.
///
/// Money is tracked only under a cost limit, and exactly: a total that would
/// pass [`Cost::MAX`] is reported as a breach (observed `Cost::MAX`), never
/// clamped silently. Giving back a reservation subtracts with
/// `saturating_sub`, which stops at zero: what is given back was reserved.
#[derive(Debug)]
pub(crate) struct Ledger {
    max_tokens: Option<u64>,
    max_cost: Option<Cost>,
    state: Mutex<LedgerState>,
}

impl Ledger {
    fn new(budget: &Budget) -> Self {
        Self {
            max_tokens: budget.max_tokens,
            max_cost: budget.max_cost,
            state: Mutex::new(LedgerState::default()),
        }
    }

    pub(crate) fn is_limited(&self) -> bool {
        self.max_tokens.is_some() || self.max_cost.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LedgerState> {
        // The ledger holds plain numbers: a poisoned lock still has valid data.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves `amount`, or refuses if spent + reserved + amount would pass
    /// a limit.
    pub(crate) fn reserve(&self, amount: Amount, node: &NodeId) -> Result<(), BudgetExceeded> {
        if !self.is_limited() || amount == Amount::ZERO {
            return Ok(());
        }
        let mut st = self.lock();
        if let Some(limit) = self.max_tokens {
            let observed = st
                .spent
                .tokens
                .saturating_add(st.reserved.tokens)
                .saturating_add(amount.tokens);
            if observed > limit {
                return Err(BudgetExceeded::new(
                    BudgetBreach::Tokens { limit, observed },
                    Some(node.clone()),
                    true,
                ));
            }
        }
        if let Some(limit) = self.max_cost {
            let observed = st
                .spent
                .cost
                .checked_add(st.reserved.cost)
                .and_then(|c| c.checked_add(amount.cost));
            // A total past Cost::MAX is over any limit.
            if observed.is_none_or(|o| o > limit) {
                return Err(BudgetExceeded::new(
                    BudgetBreach::Cost {
                        limit,
                        observed: observed.unwrap_or(Cost::MAX),
                    },
                    Some(node.clone()),
                    true,
                ));
            }
            // Exact: spent + reserved + amount ≤ limit was just checked.
            st.reserved.cost += amount.cost;
        }
        st.reserved.tokens += amount.tokens;
        Ok(())
    }

    /// Releases `reserved` and records `actual` as spent. Reports a breach
    /// if the actual spend passed a limit (the estimate was too low).
    pub(crate) fn settle(
        &self,
        reserved: Amount,
        actual: Amount,
        node: &NodeId,
    ) -> Result<(), BudgetExceeded> {
        if !self.is_limited() {
            return Ok(());
        }
        let mut st = self.lock();
        st.reserved.tokens = st.reserved.tokens.saturating_sub(reserved.tokens);
        st.reserved.cost = st.reserved.cost.saturating_sub(reserved.cost);
        st.spent.tokens = st.spent.tokens.saturating_add(actual.tokens);
        if let Some(limit) = self.max_cost {
            let Some(spent) = st.spent.cost.checked_add(actual.cost) else {
                // Past Cost::MAX, so past any limit.
                st.spent.cost = Cost::MAX;
                return Err(BudgetExceeded::new(
                    BudgetBreach::Cost {
                        limit,
                        observed: Cost::MAX,
                    },
                    Some(node.clone()),
                    false,
                ));
            };
            st.spent.cost = spent;
        }
        if let Some(limit) = self.max_tokens
            && st.spent.tokens > limit
        {
            return Err(BudgetExceeded::new(
                BudgetBreach::Tokens {
                    limit,
                    observed: st.spent.tokens,
                },
                Some(node.clone()),
                false,
            ));
        }
        if let Some(limit) = self.max_cost
            && st.spent.cost > limit
        {
            return Err(BudgetExceeded::new(
                BudgetBreach::Cost {
                    limit,
                    observed: st.spent.cost,
                },
                Some(node.clone()),
                false,
            ));
        }
        Ok(())
    }

    /// Releases a reservation without spending.
    pub(crate) fn release(&self, reserved: Amount) {
        if !self.is_limited() || reserved == Amount::ZERO {
            return;
        }
        let mut st = self.lock();
        st.reserved.tokens = st.reserved.tokens.saturating_sub(reserved.tokens);
        st.reserved.cost = st.reserved.cost.saturating_sub(reserved.cost);
    }

    /// What is left under each limit (spent and reserved taken off).
    pub(crate) fn remaining(&self) -> crate::model::RemainingBudget {
        if !self.is_limited() {
            return crate::model::RemainingBudget::default();
        }
        let st = self.lock();
        crate::model::RemainingBudget {
            tokens: self
                .max_tokens
                .map(|l| l.saturating_sub(st.spent.tokens.saturating_add(st.reserved.tokens))),
            // Nothing is left when spent and reserved pass the limit (or
            // Cost::MAX).
            cost: self.max_cost.map(|l| {
                st.spent
                    .cost
                    .checked_add(st.reserved.cost)
                    .map_or(Cost::ZERO, |used| l.saturating_sub(used))
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn reserved(&self) -> Amount {
        self.lock().reserved
    }
}

/// Everything one run (and its subgraphs) shares.
pub(crate) struct RunShared {
    pub(crate) run_id: RunId,
    pub(crate) bus: EventBus,
    pub(crate) start: Instant,
    pub(crate) start_ts: Timestamp,
    pub(crate) pricing: Arc<dyn Pricing>,
    pub(crate) missing_price: MissingPrice,
    pub(crate) cache: Option<Arc<dyn Cache>>,
    pub(crate) ledger: Ledger,
    pub(crate) max_node_executions: Option<u64>,
    pub(crate) recursion_limit: u64,
    pub(crate) max_duration: Option<std::time::Duration>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) default_max_output_tokens: u32,
    pub(crate) parallel: Option<usize>,
    pub(crate) default_retry: Option<RetryPolicy>,
    pub(crate) default_timeout: Option<std::time::Duration>,
    pub(crate) cancel: CancellationToken,
    step_seq: AtomicU64,
    pub(crate) executions: AtomicU64,
    /// Step records of subgraph runs, drained by the top-level executor.
    pub(crate) nested_steps: Mutex<Vec<StepRecord>>,
    pub(crate) halt: Option<Arc<dyn HaltSignal>>,
    pub(crate) checkpointer: Option<Arc<dyn crate::checkpoint::Checkpointer>>,
    pub(crate) thread: Option<crate::ids::ThreadId>,
    pub(crate) durability: crate::exec::Durability,
    pub(crate) interrupt_before: Vec<NodeId>,
    pub(crate) interrupt_after: Vec<NodeId>,
    pub(crate) interrupt_deadline:
        Option<(std::time::Duration, crate::checkpoint::DefaultDecision)>,
    pub(crate) snapshots: crate::exec::SnapshotPolicy,
    pub(crate) finished_thread: crate::exec::FinishedThread,
    pub(crate) metadata: std::collections::BTreeMap<String, serde_json::Value>,
    pub(crate) summary_scope: crate::exec::SummaryScope,
    /// Set when a router saw the halt request (the graph handles it).
    halt_observed: std::sync::atomic::AtomicBool,
}

impl fmt::Debug for RunShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunShared")
            .field("run_id", &self.run_id)
            .finish_non_exhaustive()
    }
}

impl RunShared {
    pub(crate) fn new(config: &RunConfig, run_id: RunId) -> Self {
        let start = Instant::now();
        Self {
            run_id,
            bus: EventBus::new(config.sinks.clone(), config.event_capacity),
            start,
            start_ts: Timestamp::now(),
            pricing: config.pricing.clone(),
            missing_price: config.missing_price,
            cache: config.cache.clone(),
            ledger: Ledger::new(&config.budget),
            max_node_executions: config.budget.max_node_executions,
            recursion_limit: config.recursion_limit,
            max_duration: config.budget.max_duration,
            deadline: deadline(config, start),
            default_max_output_tokens: config.assumed_max_output_tokens,
            parallel: config.parallel,
            default_retry: config.retry.clone(),
            default_timeout: config.node_timeout,
            // A child of the caller's token: canceling this run never
            // cancels another run sharing the caller's token.
            cancel: config
                .cancel
                .as_ref()
                .map(CancellationToken::child_token)
                .unwrap_or_default(),
            step_seq: AtomicU64::new(0),
            executions: AtomicU64::new(0),
            nested_steps: Mutex::new(Vec::new()),
            halt: config.halt.clone(),
            checkpointer: config.checkpointer.clone(),
            thread: config.thread.clone(),
            durability: config.durability,
            interrupt_before: config.interrupt_before.clone(),
            interrupt_after: config.interrupt_after.clone(),
            interrupt_deadline: config.interrupt_deadline.clone(),
            snapshots: config.snapshots,
            finished_thread: config.finished_thread,
            metadata: config.metadata.clone(),
            summary_scope: config.summary_scope,
            halt_observed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the run's halt signal fired.
    pub(crate) fn halt_requested(&self) -> bool {
        self.halt.as_ref().is_some_and(|h| h.halt_requested())
    }

    /// Whether a router saw the halt request.
    pub(crate) fn halt_observed(&self) -> bool {
        self.halt_observed.load(Ordering::Acquire)
    }

    pub(crate) fn observe_halt(&self) {
        self.halt_observed.store(true, Ordering::Release);
    }

    /// Continues step numbering after a resumed thread's history.
    pub(crate) fn set_step_base(&self, base: u64) {
        self.step_seq.store(base, Ordering::Relaxed);
    }

    /// Step ids issued so far (the latest one).
    pub(crate) fn step_ids_issued(&self) -> u64 {
        self.step_seq.load(Ordering::Relaxed)
    }

    pub(crate) fn next_step_id(&self) -> StepId {
        StepId(self.step_seq.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// The wall-clock timestamp of `at`, on the run's monotonic clock.
    pub(crate) fn ts(&self, at: Instant) -> Timestamp {
        self.start_ts
            .plus_micros(at.saturating_duration_since(self.start).as_micros() as u64)
    }

    pub(crate) fn event(
        &self,
        at: Instant,
        step_id: Option<StepId>,
        parent_step_id: Option<StepId>,
        node: Option<&NodeId>,
        attempt: u32,
        kind: EventKind,
    ) {
        self.bus.emit(TraceEvent {
            ts: self.ts(at),
            run_id: self.run_id.clone(),
            step_id,
            parent_step_id,
            node: node.cloned(),
            attempt,
            kind,
        });
    }

    /// The earliest instant the run must stop: its deadline or the end of
    /// its duration budget.
    pub(crate) fn stop_at(&self) -> Option<(Instant, StopReason)> {
        let budget = self
            .max_duration
            .map(|d| (self.start + d, StopReason::DurationBudget));
        let deadline = self.deadline.map(|d| (d, StopReason::Deadline));
        match (budget, deadline) {
            (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
            (a, b) => a.or(b),
        }
    }
}

/// The run's deadline: the config's absolute deadline or its timeout counted
/// from `start`, whichever comes first. A timeout too long to represent as
/// an instant sets no deadline.
fn deadline(config: &RunConfig, start: Instant) -> Option<Instant> {
    let relative = config.timeout.and_then(|t| start.checked_add(t));
    match (config.deadline, relative) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which run-level limit a stop instant belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    Deadline,
    DurationBudget,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(tokens: Option<u64>, cost: Option<&str>) -> Ledger {
        Ledger::new(&Budget {
            max_tokens: tokens,
            max_cost: cost.map(|c| c.parse().unwrap()),
            ..Budget::default()
        })
    }

    #[test]
    fn reservations_count_against_the_cap() {
        let l = ledger(None, Some("1.00"));
        let n = NodeId::new("n");
        let half = Amount {
            tokens: 0,
            cost: "0.5".parse().unwrap(),
        };
        l.reserve(half, &n).unwrap();
        l.reserve(half, &n).unwrap();
        let err = l.reserve(half, &n).unwrap_err();
        assert_eq!(err.breach.limit_name(), "max_cost");
        assert!(err.refused_before_run);
        // Settling one reservation at a lower actual cost frees room.
        l.settle(
            half,
            Amount {
                tokens: 0,
                cost: "0.2".parse().unwrap(),
            },
            &n,
        )
        .unwrap();
        l.reserve(
            Amount {
                tokens: 0,
                cost: "0.3".parse().unwrap(),
            },
            &n,
        )
        .unwrap();
        assert_eq!(l.reserved().cost, "0.8".parse().unwrap());
    }

    #[test]
    fn a_cost_total_past_cost_max_is_a_breach_not_a_clamp() {
        let l = Ledger::new(&Budget {
            max_cost: Some(Cost::MAX),
            ..Budget::default()
        });
        let n = NodeId::new("n");
        let cost = |picos| Amount {
            tokens: 0,
            cost: Cost::from_picodollars(picos),
        };
        l.reserve(cost(u128::MAX - 1), &n).unwrap();
        let err = l.reserve(cost(2), &n).unwrap_err();
        assert_eq!(
            err.breach,
            BudgetBreach::Cost {
                limit: Cost::MAX,
                observed: Cost::MAX
            }
        );
        assert!(err.refused_before_run);
        assert_eq!(l.remaining().cost, Some(Cost::from_picodollars(1)));
        // Spending more than Cost::MAX in total is reported too.
        l.settle(cost(u128::MAX - 1), cost(u128::MAX - 1), &n)
            .unwrap();
        let err = l.settle(Amount::ZERO, cost(2), &n).unwrap_err();
        assert_eq!(err.breach.observed_value(), Cost::MAX.to_decimal_string());
        assert!(!err.refused_before_run);
        assert_eq!(l.remaining().cost, Some(Cost::ZERO));
    }

    #[test]
    fn reservations_past_the_old_u64_ceiling_are_exact() {
        // $30M cap: more than u64 picodollars could hold.
        let l = ledger(None, Some("30000000"));
        let n = NodeId::new("n");
        let twenty_m = Amount {
            tokens: 0,
            cost: "20000000".parse().unwrap(),
        };
        l.reserve(twenty_m, &n).unwrap();
        assert_eq!(l.remaining().cost, Some("10000000".parse().unwrap()));
        let err = l.reserve(twenty_m, &n).unwrap_err();
        assert_eq!(err.breach.observed_value(), "40000000");
    }

    #[test]
    fn settle_reports_overspend() {
        let l = ledger(Some(100), None);
        let n = NodeId::new("n");
        let err = l
            .settle(
                Amount::ZERO,
                Amount {
                    tokens: 150,
                    cost: Cost::ZERO,
                },
                &n,
            )
            .unwrap_err();
        assert_eq!(
            err.breach,
            BudgetBreach::Tokens {
                limit: 100,
                observed: 150
            }
        );
        assert!(!err.refused_before_run);
    }
}
