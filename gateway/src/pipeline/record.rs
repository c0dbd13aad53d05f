//! The request's one log record, built when it ends: which usage counts (the provider's
//! or an estimate), what it cost, the usage counted in metrics and settled against the
//! key's limits, and the row.

use perpetuo_core::db::logs::{CacheResult, LogRecord, UsageSource};
use perpetuo_core::pricing::Pricing;

use super::ctx::Ctx;
use super::trace::{self, Content, End, SpanUsage};
use crate::metrics;
use perpetuo_wire::{tokens, Usage};

/// The usage a request is counted for, and where it comes from.
fn usage(ctx: &Ctx) -> (Usage, UsageSource) {
    let reached_provider = ctx.served_by.is_some();
    let shown = ctx.translation.as_ref();
    let (usage, source) = match shown.and_then(|t| t.usage()) {
        // A client that left (499) mid-stream: the provider's last usage figure covers
        // only what it had reported by then, so it is an estimate.
        Some(u) if ctx.status == 499 => (u, UsageSource::Estimated),
        Some(u) => (u, UsageSource::Provider),
        None if reached_provider => (
            Usage {
                prompt_tokens: ctx.request.as_deref().map_or(0, |r| tokens::prompt(r)),
                completion_tokens: shown.map_or(0, |t| t.content().tokens()),
                ..Default::default()
            },
            UsageSource::Estimated,
        ),
        None => (Usage::default(), UsageSource::None),
    };
    (usage.clamped(), source)
}

/// The cost of the served model's usage, when a provider served it and the model is
/// priced (an unpriced model is counted, by kind).
fn cost(ctx: &Ctx, pricing: &Pricing, usage: &Usage, kind: &'static str) -> Option<i64> {
    let model = ctx
        .model_served
        .as_deref()
        .filter(|_| ctx.served_by.is_some())?;
    let cost = pricing.cost_nusd(model, &usage.counts());
    if cost.is_none() {
        metrics::UNPRICED.with_label_values(&[kind]).inc();
    }
    cost
}

/// Whether the cache answered the request.
fn hit(ctx: &Ctx) -> bool {
    ctx.cache
        .as_ref()
        .is_some_and(|c| c.outcome == CacheResult::Hit)
}

/// What a hit saved: what the provider charged for the stored answer, else its usage at
/// the served model's price.
fn saved(ctx: &Ctx, pricing: &Pricing, usage: &Usage) -> Option<i64> {
    let c = ctx.cache.as_ref().filter(|_| hit(ctx))?;
    c.saved_nusd.or_else(|| {
        ctx.model_served
            .as_deref()
            .and_then(|m| pricing.cost_nusd(m, &usage.counts()))
    })
}

/// Counts the usage in metrics and against the key's limits.
fn account(ctx: &Ctx, kind: &'static str, usage: &Usage, cost: Option<i64>) {
    if let Some(c) = &ctx.cache {
        metrics::CACHE_REQUESTS
            .with_label_values(&[c.outcome.as_str()])
            .inc();
    }
    if hit(ctx) {
        // No provider was called: no provider tokens, no spend, nothing held.
        ctx.limits.settle(0, 0);
        return;
    }
    metrics::TOKENS
        .with_label_values(&[kind, "prompt"])
        .inc_by(usage.prompt_tokens);
    metrics::TOKENS
        .with_label_values(&[kind, "completion"])
        .inc_by(usage.completion_tokens);
    if let (Some(door), Some(entry)) = (ctx.door, &ctx.served_by) {
        let operation = trace::operation(door);
        let provider = trace::provider_name(entry.kind);
        let tokens = &metrics::GENAI_TOKEN_USAGE;
        tokens
            .with_label_values(&[operation, provider, "input"])
            .observe(usage.prompt_tokens as f64);
        tokens
            .with_label_values(&[operation, provider, "output"])
            .observe(usage.completion_tokens as f64);
        metrics::GENAI_REQUEST_DURATION
            .with_label_values(&[operation, provider])
            .observe(ctx.start.elapsed().as_secs_f64());
        if let (Some(t), true) = (ctx.ttfb, ctx.streamed) {
            metrics::GENAI_TIME_TO_FIRST_TOKEN
                .with_label_values(&[operation, provider])
                .observe(t.as_secs_f64());
        }
    }
    if let Some(c) = cost {
        metrics::COST
            .with_label_values(&[kind])
            .inc_by(c as f64 / 1e9);
    }
    ctx.limits.settle(
        usage.prompt_tokens + usage.completion_tokens,
        cost.unwrap_or(0),
    );
    if let Some(q) = &ctx.entry_quota {
        q.settle(usage.prompt_tokens + usage.completion_tokens, 0);
    }
}

/// The log record of a finished request (`None` for routes that are not logged); counts
/// its usage as it goes, so it is built once per request.
pub fn build(ctx: &Ctx, pricing: &Pricing) -> Option<LogRecord> {
    let door = ctx.door?;
    let entry = ctx.served_by.as_ref();
    let kind = entry.map_or("none", |e| e.kind.as_str());
    let (usage, source) = usage(ctx);
    let cost = match hit(ctx) {
        true => Some(0),
        false => cost(ctx, pricing, &usage, kind),
    };
    account(ctx, kind, &usage, cost);
    let saved = saved(ctx, pricing, &usage);
    if let Some(s) = saved {
        metrics::CACHE_SAVED.inc_by(s.max(0) as f64 / 1e9);
    }
    let clamp = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
    Some(LogRecord {
        id: ctx.request_id,
        created_at: ctx.started_at,
        workspace_id: ctx.key.as_ref().map(|k| k.workspace_id),
        api_key_id: ctx.key.as_ref().map(|k| k.id),
        provider_id: entry.map(|e| e.id),
        provider_name: entry.map(|e| e.name.clone()),
        provider_kind: entry.map(|e| e.kind),
        route: door.route(),
        model_requested: ctx.model_requested.clone(),
        model_served: ctx.model_served.clone(),
        status: i16::try_from(ctx.status).unwrap_or(0),
        error_kind: ctx
            .limits
            .refused_kind()
            .or(ctx.error_kind)
            .map(|k| k.as_str().to_string()),
        streamed: ctx.streamed,
        prompt_tokens: clamp(usage.prompt_tokens),
        completion_tokens: clamp(usage.completion_tokens),
        total_tokens: clamp(usage.prompt_tokens + usage.completion_tokens), // both ≤ 10^8
        cost_nusd: cost,
        usage_source: source,
        latency_ms: clamp(ctx.start.elapsed().as_millis() as u64),
        ttfb_ms: ctx.ttfb.map(|t| clamp(t.as_millis() as u64)),
        attempts: ctx.attempts.clone(),
        note: ctx.note.as_deref().map(str::to_string),
        cache: ctx.cache.as_ref().map(|c| c.outcome),
        cache_saved_nusd: saved,
        provider_key_id: ctx.served_key.as_ref().map(|(id, _)| *id),
        provider_key_label: ctx.served_key.as_ref().map(|(_, label)| label.clone()),
        skipped: ctx.skipped.clone(),
        trace_id: ctx.trace.trace_id().map(str::to_string),
    })
}

/// Ends the request's spans with what its record says (nothing when tracing is off or
/// the trace is not sampled).
pub fn finish_trace(ctx: &mut Ctx, record: &LogRecord) {
    if !ctx.trace.recording() {
        return;
    }
    let served = ctx.served_by.is_some() && !hit(ctx);
    let usage = served.then(|| {
        let u = ctx.translation.as_ref().and_then(|t| t.usage());
        SpanUsage {
            input: u64::try_from(record.prompt_tokens).unwrap_or(0),
            output: u64::try_from(record.completion_tokens).unwrap_or(0),
            cache_read: u.map(|u| u.cached_tokens).filter(|n| *n > 0),
            cache_creation: u.map(|u| u.cache_write_tokens).filter(|n| *n > 0),
        }
    });
    let content = (ctx.capture_content && served).then(|| {
        Content::capture(
            ctx.request.as_deref(),
            ctx.translation.as_ref().map(|t| t.content().text()),
        )
    });
    let answer = ctx.translation.as_ref().and_then(|t| t.answer_meta());
    let end = End {
        status: ctx.status,
        error: ctx
            .limits
            .refused_kind()
            .or(ctx.error_kind)
            .map(|k| k.as_str()),
        request_id: ctx.request_id,
        workspace: record.workspace_id,
        key: record.api_key_id,
        entry: record.provider_name.as_deref(),
        key_label: record.provider_key_label.as_deref(),
        requested_model: record.model_requested.as_deref(),
        served_model: record.model_served.as_deref(),
        cache: record.cache.map(|c| c.as_str()),
        cost_nusd: record.cost_nusd,
        usage,
        ttfb: ctx.ttfb,
        content,
        answer,
    };
    ctx.trace.finish(end);
}
