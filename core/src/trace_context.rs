//! W3C Trace Context: a client's `traceparent` and `tracestate` read and checked, and the
//! `traceparent` naming a span, for both binaries' traces.

use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

/// The longest `tracestate` kept (the specification's 32 members fit); a longer one is
/// ignored.
pub const MAX_TRACESTATE: usize = 512;

/// `00-{trace id}-{parent id}-{flags}` (a later version's extra fields are ignored, as
/// the specification asks); all-zero ids are invalid.
pub fn parse_traceparent(s: &str) -> Option<SpanContext> {
    let mut parts = s.split('-');
    let version = parts.next()?;
    let (trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !hex(version, 2) || version == "ff" || !hex(trace, 32) || !hex(span, 16) || !hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & 1),
        true,
        TraceState::NONE,
    ))
}

/// A `tracestate` header's members; an invalid or oversized one is empty.
pub fn parse_tracestate(s: &str) -> TraceState {
    let s = s.trim();
    if s.len() > MAX_TRACESTATE {
        return TraceState::NONE;
    }
    s.parse::<TraceState>().unwrap_or_default()
}

/// The remote parent a client's headers name: its `traceparent`, with its `tracestate`.
pub fn remote(traceparent: &str, tracestate: Option<&str>) -> Option<SpanContext> {
    let cx = parse_traceparent(traceparent.trim())?;
    let state = tracestate.map(parse_tracestate).unwrap_or_default();
    Some(SpanContext::new(
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags(),
        true,
        state,
    ))
}

/// `traceparent` for a span.
pub fn traceparent(cx: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        cx.trace_id(),
        cx.span_id(),
        cx.trace_flags().to_u8()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_are_checked() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(ok).unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(cx.is_sampled());
        assert_eq!(traceparent(&cx), ok);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        assert!(
            parse_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-later")
                .is_some()
        );
    }

    #[test]
    fn a_remote_parent_keeps_its_tracestate() {
        let cx = remote(
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00 ",
            Some("vendor=abc,other=1"),
        )
        .unwrap();
        assert!(cx.is_remote() && !cx.is_sampled());
        assert_eq!(cx.trace_state().get("vendor"), Some("abc"));
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE));
        assert_eq!(parse_tracestate(&long).header(), "");
    }
}
