//! The arithmetic of one lease: the blocks a scope's limits are leased in, what a
//! request takes of them, what a call asks Redis to hold (more when a request waits or a
//! block runs low, spare beyond a block given back at a heartbeat, all that is not used
//! on return) and how its answer is taken.

use std::time::Instant;

use perpetuo_core::db::limits::Limits;

use super::{
    IDLE, MIN_BUDGET_SHARE_NUSD, MIN_CONCURRENCY_SHARE, MIN_RPM_SHARE, MIN_TPM_SHARE, SPLIT,
};
use crate::limits::policy::{Kind, Now, Seed, MAX_EXACT};

/// The blocks of each limit (0: the scope has no such limit, nothing is leased of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sizes {
    pub(super) requests: i64,
    pub(super) tokens: i64,
    pub(super) slots: i64,
    pub(super) reserve: i64,
}

/// The blocks `limits` are leased in with `gateways` sharing them; `None` when a limit's
/// share per gateway is too small to split (the scope is admitted request by request).
pub(super) fn sizes(limits: &Limits, gateways: u32) -> Option<Sizes> {
    let g = i64::from(gateways.max(1));
    let block = |limit: Option<i64>, min_share: i64| match limit {
        None => Some(0),
        Some(l) if l >= min_share * g => Some(l / (SPLIT * g)),
        Some(_) => None,
    };
    Some(Sizes {
        requests: block(limits.rpm.map(i64::from), MIN_RPM_SHARE)?,
        tokens: block(limits.tpm.map(i64::from), MIN_TPM_SHARE)?,
        slots: block(limits.concurrency.map(i64::from), MIN_CONCURRENCY_SHARE)?,
        reserve: block(limits.budget_nusd, MIN_BUDGET_SHARE_NUSD)?,
    })
}

/// What a lease holds of one limit in Redis, and what admitted requests use of it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) held: i64,
    pub(super) used: i64,
}

impl Block {
    pub(super) fn room(self) -> i64 {
        self.held - self.used
    }

    /// Whether it fell below half of `size` (never, for a limit not leased).
    pub(super) fn low(self, size: i64) -> bool {
        size > 0 && 2 * self.room() < size
    }
}

/// What a request takes of one scope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Take {
    pub(super) requests: i64,
    pub(super) slots: i64,
    pub(super) tokens: i64,
    pub(super) cost: i64,
}

/// Why a lease calls Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// A request waits: its take on top of a block.
    Wait(Take),
    /// A block fell below half: a block on top of what is used.
    Refill,
    /// Renew, report, and give back spare beyond one block.
    Heartbeat,
    /// Idle: give back all that is not used.
    Return,
}

impl Mode {
    pub(super) fn label(self) -> &'static str {
        match self {
            Mode::Wait(_) => "wait",
            Mode::Refill => "refill",
            Mode::Heartbeat => "heartbeat",
            Mode::Return => "return",
        }
    }
}

/// What a lease asks Redis to hold of one limit: `held` now, `used` of it, its block
/// `size` and a waiting request's `need`.
pub(super) fn want(held: i64, used: i64, size: i64, need: i64, mode: Mode) -> i64 {
    if size == 0 {
        return used;
    }
    match mode {
        Mode::Wait(_) | Mode::Refill => held.max(used + need + size),
        Mode::Heartbeat if held - used > size => used + size,
        Mode::Heartbeat => held,
        Mode::Return => used,
    }
}

/// One call's numbers (see `lease.lua`): per limit, what is wanted and used.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ask {
    pub(super) minute: i64,
    pub(super) period: i64,
    pub(super) limits: Limits,
    pub(super) seed: i64,
    pub(super) requests: Block,
    pub(super) tokens: Block,
    pub(super) need_tokens: i64,
    pub(super) slots: Block,
    pub(super) reserve: Block,
    pub(super) spend: i64,
    pub(super) acked: i64,
}

/// One lease's state in this process.
#[derive(Debug)]
pub(super) struct State {
    pub(super) limits: Limits,
    pub(super) sizes: Sizes,
    /// The budget's spend as PostgreSQL knew it when the key was loaded (-1: none).
    pub(super) seed: i64,
    pub(super) period: i64,
    pub(super) minute: i64,
    pub(super) requests: Block,
    pub(super) tokens: Block,
    pub(super) slots: Block,
    /// `used`: the cost estimates of requests not settled yet.
    pub(super) reserve: Block,
    /// Requests and tokens of this minute that Redis counted for others at the last call.
    pub(super) others_requests: i64,
    pub(super) others_tokens: i64,
    /// The scope's spend in Redis at the last call.
    pub(super) spent: i64,
    /// Real cost of the requests settled on this lease, all told, and the part of it
    /// Redis is known to have applied.
    pub(super) spend: i64,
    pub(super) acked: i64,
    /// Admitted requests not ended yet.
    pub(super) live: u64,
    pub(super) last_admit: Instant,
    /// Calls applied so far.
    pub(super) generation: u64,
    pub(super) refilling: bool,
    /// Out of the map: nothing may be admitted on it any more.
    pub(super) retired: bool,
}

impl State {
    pub(super) fn new() -> Self {
        Self {
            limits: Limits::default(),
            sizes: Sizes::default(),
            seed: -1,
            period: 0,
            minute: i64::MIN,
            requests: Block::default(),
            tokens: Block::default(),
            slots: Block::default(),
            reserve: Block::default(),
            others_requests: 0,
            others_tokens: 0,
            spent: 0,
            spend: 0,
            acked: 0,
            live: 0,
            last_admit: Instant::now(),
            generation: 0,
            refilling: false,
            retired: false,
        }
    }

    /// A newer minute voids the minute's blocks.
    pub(super) fn roll(&mut self, minute: i64) {
        if minute > self.minute {
            self.minute = minute;
            self.requests = Block::default();
            self.tokens = Block::default();
            self.others_requests = 0;
            self.others_tokens = 0;
        }
    }

    /// Takes the scope's current limits (and the budget period's seed) from the request.
    pub(super) fn update(&mut self, limits: &Limits, sizes: Sizes, seed: Option<Seed>, now: &Now) {
        let start = limits.budget_period.start(now.at);
        let period = start.unix_timestamp();
        if period != self.period {
            self.period = period;
            self.spent = 0;
        }
        self.seed = seed
            .filter(|s| s.period_start == start)
            .map_or(-1, |s| s.spent_nusd.clamp(0, MAX_EXACT));
        self.limits = *limits;
        self.sizes = sizes;
        self.roll(now.minute);
    }

    pub(super) fn unreported(&self) -> i64 {
        self.spend - self.acked
    }

    /// The first limit whose block does not cover `take`, in admit.lua's order.
    pub(super) fn short(&self, take: &Take) -> Option<Kind> {
        let l = &self.limits;
        // A reservation after a cache miss takes no slot and no request: those are not
        // checked again.
        if l.concurrency.is_some() && take.slots > 0 && self.slots.room() < take.slots {
            Some(Kind::Concurrency)
        } else if l.rpm.is_some() && take.requests > 0 && self.requests.room() < take.requests {
            Some(Kind::Rpm)
        } else if l.tpm.is_some() && self.tokens.room() < take.tokens {
            Some(Kind::Tpm)
        } else if l.budget_nusd.is_some_and(|budget| {
            let unreported = self.unreported();
            self.spent.saturating_add(unreported) >= budget
                || self.reserve.room() - unreported < take.cost
        }) {
            Some(Kind::Budget)
        } else {
            None
        }
    }

    pub(super) fn debit(&mut self, take: &Take) {
        self.requests.used += take.requests;
        self.slots.used += take.slots;
        self.tokens.used += take.tokens;
        self.reserve.used += take.cost;
        self.live += 1;
        self.last_admit = Instant::now();
    }

    /// Whether a block fell below half its size.
    pub(super) fn low(&self) -> bool {
        let s = &self.sizes;
        let reserve = Block {
            held: self.reserve.held - self.unreported(),
            ..self.reserve
        };
        self.requests.low(s.requests)
            || self.tokens.low(s.tokens)
            || self.slots.low(s.slots)
            || reserve.low(s.reserve)
    }

    /// The call's numbers for `mode`. What is given back leaves the blocks here, before
    /// the call: requests admitted while it runs cannot take it.
    pub(super) fn ask(&mut self, mode: Mode) -> Ask {
        let need = match mode {
            Mode::Wait(t) => t,
            _ => Take::default(),
        };
        let s = self.sizes;
        let unreported = self.unreported();
        let requests = want(
            self.requests.held,
            self.requests.used,
            s.requests,
            need.requests,
            mode,
        );
        let tokens = want(
            self.tokens.held,
            self.tokens.used,
            s.tokens,
            need.tokens,
            mode,
        );
        let slots = want(self.slots.held, self.slots.used, s.slots, need.slots, mode);
        // The spend reported by this call leaves the reservation for the scope's spend.
        let reserve = want(
            self.reserve.held - unreported,
            self.reserve.used,
            s.reserve,
            need.cost,
            mode,
        );
        self.requests.held = self.requests.held.min(requests);
        self.tokens.held = self.tokens.held.min(tokens);
        self.slots.held = self.slots.held.min(slots);
        self.reserve.held = self.reserve.held.min(reserve + unreported);
        let block = |held: i64, used: i64| Block {
            held: held.clamp(0, MAX_EXACT),
            used: used.clamp(0, MAX_EXACT),
        };
        Ask {
            minute: self.minute,
            period: self.period,
            limits: self.limits,
            seed: self.seed,
            requests: block(requests, self.requests.used),
            tokens: block(tokens, self.tokens.used),
            need_tokens: need.tokens.clamp(0, MAX_EXACT),
            slots: block(slots, self.slots.used),
            reserve: block(reserve, self.reserve.used),
            spend: self.spend.clamp(0, MAX_EXACT),
            acked: self.acked.clamp(0, MAX_EXACT),
        }
    }

    /// Takes Redis's answer to `ask`: what the lease now holds.
    pub(super) fn apply(&mut self, ask: &Ask, out: &[i64]) {
        let at = |i: usize| out.get(i).copied().unwrap_or(0);
        let minute = at(1);
        self.roll(minute);
        // Blocks of a minute this lease has left behind are void.
        if minute == self.minute {
            self.requests.held = at(2);
            self.tokens.held = at(3);
            self.others_requests = (at(6) - at(2)).max(0);
            self.others_tokens = (at(7) - at(3)).max(0);
        }
        self.slots.held = at(4);
        // Spend settled while the call ran stays unreported, taken from this reservation.
        self.reserve.held = at(5);
        self.spent = at(8);
        self.acked = self.acked.max(ask.spend);
        self.generation += 1;
    }

    /// Whether nothing of the lease is in use or owed to Redis.
    pub(super) fn done(&self) -> bool {
        self.live == 0
            && self.spend == self.acked
            && self.slots.held == 0
            && self.reserve.held == 0
            && self.last_admit.elapsed() >= IDLE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rpm: u32, tpm: u32, concurrency: u32, budget_nusd: i64) -> Limits {
        Limits {
            rpm: Some(rpm),
            tpm: Some(tpm),
            concurrency: Some(concurrency),
            budget_nusd: Some(budget_nusd),
            ..Limits::default()
        }
    }

    #[test]
    fn blocks_are_an_eighth_of_each_gateways_share_and_small_limits_are_not_split() {
        let s = sizes(&limits(960, 1_000_000, 32, 1_000_000_000), 2).unwrap();
        assert_eq!(
            s,
            Sizes {
                requests: 60,
                tokens: 62_500,
                slots: 2,
                reserve: 62_500_000
            }
        );
        // One limit too small to split keeps the whole scope request by request.
        assert_eq!(sizes(&limits(3, 1_000_000, 32, 1_000_000_000), 2), None);
        assert_eq!(sizes(&limits(960, 1_000_000, 15, 1_000_000_000), 2), None);
        assert_eq!(sizes(&limits(960, 15_999, 32, 1_000_000_000), 2), None);
        assert_eq!(sizes(&limits(960, 1_000_000, 32, 15_999_999), 2), None);
        // The thresholds themselves are leased; absent limits lease nothing.
        let rpm_only = Limits {
            rpm: Some(60),
            ..Limits::default()
        };
        assert_eq!(
            sizes(&rpm_only, 1),
            Some(Sizes {
                requests: 7,
                ..Sizes::default()
            })
        );
    }

    fn leased(l: Limits, gateways: u32) -> State {
        let mut st = State::new();
        st.limits = l;
        st.sizes = sizes(&l, gateways).unwrap();
        st.minute = 0;
        st
    }

    #[test]
    fn a_request_waits_for_a_block_and_the_next_ones_use_it() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        let take = Take {
            requests: 1,
            slots: 1,
            tokens: 100,
            cost: 1_000,
        };
        assert_eq!(st.short(&take), Some(Kind::Concurrency));
        let ask = st.ask(Mode::Wait(take));
        assert_eq!(ask.requests.held, 61, "the request and one block");
        assert_eq!(ask.slots.held, 3);
        assert_eq!(ask.tokens.held, 62_600);
        assert_eq!(ask.reserve.held, 62_501_000);
        // Redis grants all of it.
        st.apply(&ask, &[0, 0, 61, 62_600, 3, 62_501_000, 61, 62_600, 0]);
        assert_eq!(st.short(&take), None);
        st.debit(&take);
        assert!(!st.low(), "a whole block is left");
        for _ in 0..30 {
            st.debit(&Take { slots: 0, ..take });
        }
        assert!(!st.low(), "half a block is left");
        st.debit(&Take { slots: 0, ..take });
        assert!(st.low(), "below half a block: refill");
        let ask = st.ask(Mode::Refill);
        assert_eq!(ask.requests.held, 32 + 60);
    }

    #[test]
    fn heartbeats_give_back_spare_beyond_a_block_and_idle_leases_all_they_do_not_use() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        st.slots = Block { held: 10, used: 3 };
        st.requests = Block { held: 61, used: 50 };
        let ask = st.ask(Mode::Heartbeat);
        assert_eq!(ask.slots.held, 5, "three used and one block of two");
        assert_eq!(st.slots.held, 5, "given back before the call");
        assert_eq!(ask.requests.held, 61, "eleven spare: less than a block");
        let ask = st.ask(Mode::Return);
        assert_eq!((ask.slots.held, ask.requests.held), (3, 50));
        assert_eq!(st.slots.room(), 0);
    }

    #[test]
    fn spend_reported_leaves_the_reservation_and_is_never_lost_between_calls() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        st.reserve = Block {
            held: 100_000_000,
            used: 1_000,
        };
        st.spend = 5_000;
        let ask = st.ask(Mode::Heartbeat);
        assert_eq!((ask.spend, ask.acked), (5_000, 0));
        assert_eq!(
            ask.reserve.held, 62_501_000,
            "spare beyond a block given back"
        );
        // A request settles while the call runs: its cost is not in this report.
        st.spend += 700;
        st.apply(&ask, &[0, 0, 0, 0, 0, 62_501_000, 0, 0, 5_000]);
        assert_eq!(st.acked, 5_000);
        assert_eq!(st.unreported(), 700);
        assert_eq!(st.spent, 5_000);
        assert_eq!(st.reserve.room() - st.unreported(), 62_500_000 - 700);
        // Spend at the budget refuses even a request that costs nothing.
        st.spent = 1_000_000_000;
        assert_eq!(st.short(&Take::default()), Some(Kind::Budget));
    }

    #[test]
    fn a_new_minute_voids_the_minutes_blocks_and_late_answers_for_the_old_one() {
        let mut st = leased(limits(960, 1_000_000, 32, 1_000_000_000), 2);
        st.requests = Block { held: 61, used: 10 };
        st.slots = Block { held: 3, used: 1 };
        let ask = st.ask(Mode::Refill);
        st.roll(1);
        assert_eq!(st.requests, Block::default());
        st.apply(&ask, &[0, 0, 70, 0, 3, 0, 70, 0, 0]);
        assert_eq!(
            st.requests,
            Block::default(),
            "the old minute's block stays void"
        );
        assert_eq!(st.slots.held, 3, "slots do not belong to a minute");
    }

    #[test]
    fn what_a_lease_wants_of_a_limit() {
        let wait = Mode::Wait(Take::default());
        assert_eq!(want(10, 4, 0, 1, wait), 4, "not leased: what is used");
        assert_eq!(want(10, 4, 5, 1, wait), 10);
        assert_eq!(want(5, 4, 5, 1, wait), 10);
        assert_eq!(want(5, 4, 5, 0, Mode::Refill), 9);
        assert_eq!(want(20, 4, 5, 0, Mode::Heartbeat), 9);
        assert_eq!(want(8, 4, 5, 0, Mode::Heartbeat), 8);
        assert_eq!(want(8, 4, 5, 0, Mode::Return), 4);
    }
}
