//! Attempts with fallback: each candidate entry in order, past open breakers, until one
//! answers; the first answer is delivered, and when none does the failures decide the
//! client's error ([`verdict`]).

use std::sync::Arc;
use std::time::Instant;

use perpetuo_core::db::logs::Attempt;

use super::ctx::{Ctx, Stop};
use super::trace::AttemptOf;
use super::Services;
use crate::errors::{ErrorKind, GatewayError};
use crate::frontdoor::{Built, Inbound};
use crate::metrics;
use crate::routing::headroom::{self, Report};
#[cfg(test)]
use crate::routing::Connect;
use crate::routing::{Entry, Failure};
use crate::upstream::Outcome;
use perpetuo_core::db::logs::SkipReason;
use perpetuo_wire::Unsupported;
use pingora::proxy::Session;

impl Services {
    pub(crate) async fn attempt_all(
        &self,
        session: &mut Session,
        ctx: &mut Ctx,
        candidates: &[Arc<Entry>],
        inbound: &Inbound<'_>,
    ) -> Result<(), Stop> {
        let mut failures: Vec<Failed> = Vec::new();
        let mut refused: Option<String> = None;
        // The earliest moment a key passed by for its headroom can take requests again.
        let mut exhausted_until: Option<u64> = None;
        // The request's token estimate, made only when a key's known headroom needs it.
        let mut estimate: Option<u64> = None;
        for (at, entry) in candidates.iter().enumerate() {
            let served = entry.served_model(inbound.call.model).to_string();
            // The entry's own quota, counted like a key's limits when the entry is first
            // about to be asked (a key passed by costs it nothing): out of it, the entry is
            // passed by until its minute ends.
            let mut quota: Option<crate::limits::Gate> = None;
            for key in self.balancer.keys_in_order(entry) {
                let id = key.map_or(entry.id, |k| k.id);
                let now_ms = headroom::now_ms();
                let tokens = if self.headrooms.counts_tokens(id, now_ms) {
                    *estimate.get_or_insert_with(|| inbound.estimated_tokens(&self.pricing))
                } else {
                    0
                };
                if let Err(out) = self.headrooms.check(id, tokens, now_ms) {
                    exhausted_until =
                        Some(exhausted_until.map_or(out.until_ms, |u| u.min(out.until_ms)));
                    ctx.skip(entry, key, SkipReason::Quota);
                    continue;
                }
                let Some(admission) = self.breakers.allow(id, Instant::now()) else {
                    ctx.skip(entry, key, SkipReason::Breaker);
                    continue;
                };
                if let (Some(q), None) = (entry.quota, &quota) {
                    let tokens =
                        *estimate.get_or_insert_with(|| inbound.estimated_tokens(&self.pricing));
                    let gate = self
                        .limiter
                        .admit_entry(entry.id, ctx.workspace_id(), q, tokens)
                        .await;
                    if let Some(wait_s) = gate.refused_for_s() {
                        let until = headroom::now_ms().saturating_add(wait_s.saturating_mul(1000));
                        exhausted_until = Some(exhausted_until.map_or(until, |u| u.min(until)));
                        ctx.skip(entry, None, SkipReason::Quota);
                        break;
                    }
                    quota = Some(gate);
                }
                let secret = key.map_or("", |k| k.secret.expose());
                let built = match inbound.door.build(inbound, entry, secret, &served) {
                    Ok(built) => built,
                    Err(Unsupported(reason)) => {
                        // What the request asks is the entry's question, not the key's.
                        refused.get_or_insert(reason);
                        break;
                    }
                };
                let Built {
                    mut request,
                    mut translation,
                } = built;
                if ctx.trace.recording() {
                    translation.read_meta();
                    translation.capture_content(ctx.capture_content);
                }
                // The attempt's span, and the trace context the provider is sent.
                request.headers.extend(ctx.trace.attempt(&AttemptOf {
                    door: inbound.door,
                    kind: entry.kind,
                    model: &served,
                    request: inbound.call.request,
                    entry: &entry.name,
                    key_label: key.map(|k| k.label.as_str()),
                    server: Some((&entry.upstream.host, entry.upstream.port)),
                }));
                self.headrooms
                    .sent(id, entry.id, ctx.workspace_id(), tokens, now_ms);
                let started = Instant::now();
                // In flight on this entry until its answer is delivered (or it failed).
                let _in_flight = self.balancer.attempting(entry);
                let deadline = started + self.upstreams.timeouts.ttfb;
                // A client that leaves drops the attempt (and with it the upstream
                // connection) and the admission, which hands a half-open breaker's probe
                // to the next request.
                let outcome = tokio::select! {
                    o = self.upstreams.attempt(entry, translation.classifier(), &request, deadline) => o,
                    _ = session.read_body_or_idle(true) => {
                        // The provider was asked (and may be holding an answer until its
                        // first content): the request is counted as this entry's, on the
                        // usage estimate, rather than as free.
                        ctx.attempts.push(Attempt {
                            provider_id: entry.id,
                            provider_name: entry.name.clone(),
                            status: None,
                            latency_ms: started.elapsed().as_millis().min(u32::MAX as u128) as u32,
                            error_kind: Some(ErrorKind::ClientDisconnected.as_str().to_string()),
                        });
                        ctx.serve(entry, key, served);
                        ctx.entry_quota = quota;
                        return Err(Stop::ClientGone);
                    }
                };
                let latency_ms = started.elapsed().as_millis().min(u32::MAX as u128) as u32;
                match outcome {
                    Outcome::Failed {
                        failure,
                        status,
                        retry_after,
                        report,
                    } => {
                        self.headrooms.report(id, report, headroom::now_ms());
                        ctx.trace.attempt_failed(status, failure.kind().as_str());
                        metrics::FALLBACKS
                            .with_label_values(&[failure.kind().as_str()])
                            .inc();
                        if !failure.counts_against_entry() {
                            drop(admission);
                        } else {
                            self.balancer.failed(entry);
                            if admission.failure(Instant::now(), retry_after) {
                                metrics::BREAKER_OPENED
                                    .with_label_values(&[entry.kind.as_str()])
                                    .inc();
                            }
                        }
                        ctx.attempts.push(Attempt {
                            provider_id: entry.id,
                            provider_name: entry.name.clone(),
                            status,
                            latency_ms,
                            error_kind: Some(failure.kind().as_str().to_string()),
                        });
                        failures.push(Failed {
                            entry: entry.name.clone(),
                            failure,
                        });
                        // A refusal of this key (its quota, its authorisation) leaves the
                        // entry's other keys worth a try; any other failure is the entry's.
                        if !failure.is_the_keys() {
                            break;
                        }
                    }
                    Outcome::Ready(ready) => {
                        let report = Report::from_headers(&ready.header, false, headroom::now_ms());
                        self.headrooms.report(id, report, headroom::now_ms());
                        admission.success();
                        self.balancer.answered(entry, started.elapsed());
                        ctx.note = translation.note();
                        ctx.attempts.push(Attempt {
                            provider_id: entry.id,
                            provider_name: entry.name.clone(),
                            status: Some(ready.header.status.as_u16()),
                            latency_ms,
                            error_kind: None,
                        });
                        ctx.serve(entry, key, served);
                        ctx.entry_quota = quota;
                        // The rest of its tier: not needed, as the balancing ordered it.
                        for other in candidates[at + 1..]
                            .iter()
                            .take_while(|o| o.priority == entry.priority)
                        {
                            ctx.skip(other, None, SkipReason::Weight);
                        }
                        metrics::UPSTREAM_DURATION
                            .with_label_values(&[entry.kind.as_str()])
                            .observe(started.elapsed().as_secs_f64());
                        let to_store = inbound.prepared.to_store();
                        return self
                            .deliver(session, ctx, ready, translation, to_store)
                            .await;
                    }
                }
            }
        }
        match exhausted_until {
            // Nothing was asked, and at least one key waits for its reset: the client
            // waits for the earliest one, without any provider having been called.
            Some(until) if failures.is_empty() && refused.is_none() => {
                metrics::ROUTE_DECISIONS
                    .with_label_values(&["exhausted"])
                    .inc();
                let wait_ms = until.saturating_sub(headroom::now_ms());
                Err(GatewayError::providers_exhausted(wait_ms.div_ceil(1000).max(1)).into())
            }
            _ => Err(verdict(&failures, refused).into()),
        }
    }
}

/// One entry's failed attempt.
pub struct Failed {
    pub entry: String,
    pub failure: Failure,
}

/// Attempts named in an error message at most; the rest are counted.
const ATTEMPTS_NAMED: usize = 8;

/// The client's error when no entry answered: a request no entry could take is the
/// client's (400); entries all cooling down, all rate-limited, the last one timing out,
/// or failing otherwise each have their own answer, whose message names each attempt's
/// entry and the class of its failure.
pub fn verdict(failures: &[Failed], refused: Option<String>) -> GatewayError {
    let error = match (failures.last(), refused) {
        (None, Some(reason)) => {
            return GatewayError::bad_request(ErrorKind::UnsupportedRequest, reason)
        }
        (None, None) => return GatewayError::providers_unavailable(),
        _ if failures.iter().all(|f| f.failure == Failure::Status(429)) => {
            GatewayError::rate_limited()
        }
        (
            Some(Failed {
                failure: Failure::Timeout,
                ..
            }),
            _,
        ) => GatewayError::upstream_timeout(),
        _ => GatewayError::upstream_failed(),
    };
    error.with_attempts(&attempts_named(failures))
}

/// `entry "a": connection refused; entry "b": status 503`.
fn attempts_named(failures: &[Failed]) -> String {
    let mut named: Vec<String> = failures
        .iter()
        .take(ATTEMPTS_NAMED)
        .map(|f| format!("entry {:?}: {}", f.entry, f.failure.cause()))
        .collect();
    if failures.len() > ATTEMPTS_NAMED {
        named.push(format!("{} more", failures.len() - ATTEMPTS_NAMED));
    }
    named.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(failures: &[Failure]) -> Vec<Failed> {
        failures
            .iter()
            .enumerate()
            .map(|(i, &failure)| Failed {
                entry: format!("e{i}"),
                failure,
            })
            .collect()
    }

    #[test]
    fn the_failures_decide_the_error() {
        let code = |failures: &[Failure], refused: Option<&str>| {
            verdict(&failed(failures), refused.map(str::to_string))
                .code
                .as_str()
        };
        assert_eq!(code(&[], Some("n>1")), "unsupported_request");
        assert_eq!(code(&[], None), "providers_unavailable");
        let limited = [Failure::Status(429), Failure::Status(429)];
        assert_eq!(code(&limited, Some("n>1")), "rate_limit_exceeded");
        assert_eq!(
            code(&[Failure::Status(500), Failure::Timeout], None),
            "upstream_timeout"
        );
        assert_eq!(
            code(&[Failure::Timeout, Failure::Status(429)], None),
            "upstream_error"
        );
    }

    #[test]
    fn the_message_names_each_attempt_and_its_cause() {
        let failures = failed(&[
            Failure::Connect(Connect::Refused),
            Failure::Status(503),
            Failure::Timeout,
        ]);
        let e = verdict(&failures[..2], None);
        assert_eq!(
            e.message,
            "Every provider for this model failed. Attempts: entry \"e0\": connection \
             refused; entry \"e1\": status 503."
        );
        let e = verdict(&failures, None);
        assert_eq!(e.code, ErrorKind::UpstreamTimeout);
        assert!(
            e.message.ends_with("entry \"e2\": timeout."),
            "{}",
            e.message
        );
        let many = failed(&[Failure::Status(500); 11]);
        let e = verdict(&many, None);
        assert!(
            e.message.ends_with("entry \"e7\": status 500; 3 more."),
            "{}",
            e.message
        );
    }
}
