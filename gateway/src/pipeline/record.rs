//! The request's one log record, built when it ends: which usage counts (the provider's
//! or an estimate), what it cost, the usage counted in metrics and settled against the
//! key's limits, and the row.

use perpetuo_core::db::logs::{LogRecord, UsageSource};
use perpetuo_core::pricing::Pricing;

use super::ctx::Ctx;
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

/// Counts the usage in metrics and against the key's limits.
fn account(ctx: &Ctx, kind: &'static str, usage: &Usage, cost: Option<i64>) {
    metrics::TOKENS
        .with_label_values(&[kind, "prompt"])
        .inc_by(usage.prompt_tokens);
    metrics::TOKENS
        .with_label_values(&[kind, "completion"])
        .inc_by(usage.completion_tokens);
    if let Some(c) = cost {
        metrics::COST
            .with_label_values(&[kind])
            .inc_by(c as f64 / 1e9);
    }
    ctx.limits.settle(
        usage.prompt_tokens + usage.completion_tokens,
        cost.unwrap_or(0),
    );
}

/// The log record of a finished request (`None` for routes that are not logged); counts
/// its usage as it goes, so it is built once per request.
pub fn build(ctx: &Ctx, pricing: &Pricing) -> Option<LogRecord> {
    let door = ctx.door?;
    let entry = ctx.served_by.as_ref();
    let kind = entry.map_or("none", |e| e.kind.as_str());
    let (usage, source) = usage(ctx);
    let cost = cost(ctx, pricing, &usage, kind);
    account(ctx, kind, &usage, cost);
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
        note: ctx.note.map(str::to_string),
    })
}
