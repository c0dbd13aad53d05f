//! Percentiles of per-stream durations and the run's summary.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Nearest-rank percentiles of a set of durations, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Percentiles {
    /// `samples` in any order; all zero when empty.
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let rank = (q * samples.len() as f64).ceil() as usize;
            ms(samples[rank.clamp(1, samples.len()) - 1])
        };
        Percentiles {
            count: samples.len(),
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: ms(samples[samples.len() - 1]),
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Why a stream did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Failure {
    /// The TCP connection could not be opened.
    Connect,
    /// The request could not be sent or the response header not read.
    Request,
    /// A status other than 200 (the status).
    Status(u16),
    /// The body broke off (connection cut, read error).
    Body,
    /// An error event in the stream.
    ErrorEvent,
    /// Bytes that are not events of the dialect.
    Garbled,
    /// The body ended without any content.
    NoContent,
    /// The body ended without the answer's usage.
    NoUsage,
    /// The body ended without the dialect's end event (`[DONE]`, `message_stop`, …).
    NoEnd,
    /// The whole stream took longer than the per-stream timeout.
    Timeout,
}

impl Failure {
    /// The reason's name in the report; a status carries its code (`status_502`).
    pub fn label(self) -> std::borrow::Cow<'static, str> {
        std::borrow::Cow::Borrowed(match self {
            Failure::Status(code) => return format!("status_{code}").into(),
            Failure::Connect => "connect",
            Failure::Request => "request",
            Failure::Body => "body",
            Failure::ErrorEvent => "error_event",
            Failure::Garbled => "garbled",
            Failure::NoContent => "no_content",
            Failure::NoUsage => "no_usage",
            Failure::NoEnd => "no_end",
            Failure::Timeout => "timeout",
        })
    }
}

/// How one stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Status 200, content, usage and the end event.
    Completed,
    /// No byte arrived for longer than the stall limit.
    Stalled,
    Failed(Failure),
}

/// One stream's timings, from the start of its request (connecting included when the
/// stream had to open a connection).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub outcome: Outcome,
    /// Until the response header.
    pub ttfb: Option<Duration>,
    /// Until the first event with content.
    pub ttft: Option<Duration>,
    /// Until the end of the body.
    pub total: Duration,
    /// Whether the stream opened a new connection.
    pub connected: bool,
    /// SSE events with data it received.
    pub events: usize,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub concurrency: usize,
    pub streams: usize,
    pub completed: usize,
    pub failed: usize,
    pub stalled: usize,
    pub failures: BTreeMap<String, usize>,
    pub connections: usize,
    pub elapsed_s: f64,
    pub streams_per_s: f64,
    pub ttfb_ms: Percentiles,
    pub ttft_ms: Percentiles,
    pub total_ms: Percentiles,
    /// Most streams open at the same time.
    pub peak_in_flight: usize,
    /// SSE events with data received, over every stream (failed ones included).
    pub events: usize,
}

impl Summary {
    /// TTFB and TTFT percentiles are over completed streams only, so that a failed
    /// stream's early end does not flatter them.
    pub fn new(
        concurrency: usize,
        samples: &[Sample],
        elapsed: Duration,
        peak_in_flight: usize,
    ) -> Summary {
        let completed: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.outcome == Outcome::Completed)
            .collect();
        let mut failures = BTreeMap::new();
        for sample in samples {
            if let Outcome::Failed(why) = sample.outcome {
                *failures.entry(why.label().into_owned()).or_insert(0) += 1;
            }
        }
        let stalled = samples
            .iter()
            .filter(|s| s.outcome == Outcome::Stalled)
            .count();
        let mut ttfb: Vec<Duration> = completed.iter().filter_map(|s| s.ttfb).collect();
        let mut ttft: Vec<Duration> = completed.iter().filter_map(|s| s.ttft).collect();
        let mut total: Vec<Duration> = completed.iter().map(|s| s.total).collect();
        let secs = elapsed.as_secs_f64();
        Summary {
            concurrency,
            streams: samples.len(),
            completed: completed.len(),
            failed: failures.values().sum(),
            stalled,
            failures,
            connections: samples.iter().filter(|s| s.connected).count(),
            elapsed_s: secs,
            streams_per_s: if secs > 0.0 {
                completed.len() as f64 / secs
            } else {
                0.0
            },
            ttfb_ms: Percentiles::of(&mut ttfb),
            ttft_ms: Percentiles::of(&mut ttft),
            total_ms: Percentiles::of(&mut total),
            peak_in_flight,
            events: samples.iter().map(|s| s.events).sum(),
        }
    }

    /// The summary for a person.
    pub fn report(&self) -> String {
        let row = |name: &str, p: &Percentiles| {
            format!(
                "{name:<6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                p.p50, p.p90, p.p99, p.max
            )
        };
        let mut out = format!(
            "streams {} (concurrency {}, peak in flight {}), completed {}, failed {}, stalled {}; \
             {} connections opened; {:.2} s, {:.0} completed streams/s\n",
            self.streams,
            self.concurrency,
            self.peak_in_flight,
            self.completed,
            self.failed,
            self.stalled,
            self.connections,
            self.elapsed_s,
            self.streams_per_s,
        );
        if !self.failures.is_empty() {
            let reasons: Vec<String> = self
                .failures
                .iter()
                .map(|(why, n)| format!("{why} {n}"))
                .collect();
            out.push_str(&format!("failures: {}\n", reasons.join(", ")));
        }
        out.push_str("ms        p50       p90       p99       max\n");
        out.push_str(&row("ttfb", &self.ttfb_ms));
        out.push_str(&row("ttft", &self.ttft_ms));
        out.push_str(&row("total", &self.total_ms));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(
            (p.count, p.p50, p.p90, p.p99, p.max),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        let mut one = [Duration::from_millis(7)];
        assert_eq!(Percentiles::of(&mut one).p99, 7.0);
        assert_eq!(Percentiles::of(&mut []), Percentiles::default());
    }

    #[test]
    fn summary_counts_outcomes_and_times_completed_streams_only() {
        let ok = |ms| Sample {
            outcome: Outcome::Completed,
            ttfb: Some(Duration::from_millis(ms)),
            ttft: Some(Duration::from_millis(ms + 1)),
            total: Duration::from_millis(ms + 10),
            connected: true,
            events: 23,
        };
        let failed = Sample {
            outcome: Outcome::Failed(Failure::NoUsage),
            ttfb: Some(Duration::from_millis(1000)),
            ..ok(0)
        };
        let stalled = Sample {
            outcome: Outcome::Stalled,
            connected: false,
            events: 0,
            ..ok(0)
        };
        let s = Summary::new(
            4,
            &[ok(1), ok(3), failed, stalled],
            Duration::from_secs(2),
            4,
        );
        assert_eq!((s.streams, s.completed, s.failed, s.stalled), (4, 2, 1, 1));
        assert_eq!(s.failures.get("no_usage"), Some(&1));
        assert_eq!((s.ttfb_ms.max, s.ttft_ms.max, s.connections), (3.0, 4.0, 3));
        assert_eq!(s.streams_per_s, 1.0);
        // Events over every stream: the failed one's too.
        assert_eq!(s.events, 23 * 3);
    }
}
