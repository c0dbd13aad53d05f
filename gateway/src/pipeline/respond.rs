//! Response headers and whole JSON answers written to the client, with the headers every
//! answer carries (request id, attempts, provider, limits).

use bytes::Bytes;
use pingora::http::ResponseHeader;
use pingora::proxy::Session;

use super::ctx::Ctx;

/// The headers every answer carries.
pub fn common_headers(h: &mut ResponseHeader, ctx: &Ctx) -> pingora::Result<()> {
    h.insert_header("x-request-id", ctx.request_id.to_string())?;
    h.insert_header("x-perpetuo-attempts", ctx.attempts.len().to_string())?;
    let provider = ctx
        .served_by
        .as_ref()
        .map(|e| e.name.clone())
        .or_else(|| ctx.attempts.last().map(|a| a.provider_name.clone()));
    if let Some(p) = provider {
        h.insert_header("x-perpetuo-provider", p)?;
    }
    ctx.limits.write_headers(h)?;
    if let Some(s) = ctx
        .retry_after
        .filter(|_| h.headers.get("retry-after").is_none())
    {
        h.insert_header("retry-after", s.to_string())?;
    }
    if let Some(allow) = ctx.allow {
        h.insert_header("allow", allow)?;
    }
    if let Some(cache) = &ctx.cache {
        h.insert_header(crate::cache::RESULT_HEADER, cache.outcome.as_str())?;
        if let Some(age) = cache.age {
            h.insert_header("age", age.to_string())?;
        }
    }
    Ok(())
}

/// How an answer's body is framed.
pub enum Framing<'a> {
    /// A body of this many bytes.
    Length(usize),
    /// A body whose length is given as the provider gave it.
    Declared(&'a http::HeaderValue),
    /// Chunked (a stream, or a body of unknown length).
    Chunked,
}

/// An answer's header: status, content type, framing and the common headers.
pub fn header(
    ctx: &Ctx,
    status: u16,
    content_type: &str,
    framing: Framing<'_>,
) -> pingora::Result<Box<ResponseHeader>> {
    // Without a map of each name's case: every name is written as given here, in lower
    // case, and the case map is a second header map filled and read for nothing.
    let mut h = ResponseHeader::build_no_case(status, Some(10))?;
    h.insert_header("content-type", content_type)?;
    match framing {
        Framing::Length(n) => h.insert_header("content-length", n.to_string())?,
        Framing::Declared(v) => h.insert_header("content-length", v.clone())?,
        Framing::Chunked => h.insert_header("transfer-encoding", "chunked")?,
    }
    if content_type.starts_with("text/event-stream") {
        h.insert_header("cache-control", "no-cache")?;
    }
    common_headers(&mut h, ctx)?;
    Ok(Box::new(h))
}

/// Writes a whole JSON answer.
pub async fn json(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    body: Bytes,
) -> pingora::Result<()> {
    let h = header(ctx, status, "application/json", Framing::Length(body.len()))?;
    session.write_response_header(h, false).await?;
    session.write_response_body(Some(body), true).await
}
