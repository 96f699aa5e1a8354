//! The run's budget ledger: token and cost limits enforced with
//! reservations. Part of the contracts a node's context uses; the engine
//! creates one per run.

use std::sync::Mutex;

use crate::error::{BudgetBreach, BudgetExceeded};
use crate::ids::NodeId;
use crate::pricing::Cost;

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
    pub(crate) fn new(max_tokens: Option<u64>, max_cost: Option<Cost>) -> Self {
        Self {
            max_tokens,
            max_cost,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(tokens: Option<u64>, cost: Option<&str>) -> Ledger {
        Ledger::new(tokens, cost.map(|c| c.parse().unwrap()))
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
        let l = Ledger::new(None, Some(Cost::MAX));
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
