//! Database spans (OpenTelemetry semantic conventions v1.37, `db.*`): every statement
//! the `db` modules send goes through [`Sql`], which records a CLIENT span for it when
//! the task runs inside a sampled trace (a traced admin request) and tracing is
//! [`enable`]d. Outside a trace, or with tracing off, a statement costs one thread-local
//! read more.
//!
//! The statement's text is recorded (`db.query.text`): every statement is parameterized,
//! so it holds `$n` parameter markers, never the values sent.

use std::future::Future;
use std::sync::OnceLock;

use deadpool_postgres::GenericClient;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::trace::SdkTracer;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Error, Row};

/// The longest statement text recorded, bytes.
const MAX_QUERY_TEXT: usize = 2048;

/// Where database spans go, and what names the database.
struct Spans {
    tracer: SdkTracer,
    /// `db.system.name`, `db.namespace`, `server.address`, `server.port`.
    database: Vec<KeyValue>,
}

static SPANS: OnceLock<Spans> = OnceLock::new();

/// Records database spans with `tracer` from now on (once per process; later calls are
/// ignored). `database_url` names the database and server in the spans; its credentials
/// are not read.
pub fn enable(tracer: SdkTracer, database_url: &str) {
    let mut database = vec![KeyValue::new("db.system.name", "postgresql")];
    if let Ok(cfg) = database_url.parse::<tokio_postgres::Config>() {
        if let Some(name) = cfg.get_dbname() {
            database.push(KeyValue::new("db.namespace", name.to_string()));
        }
        if let Some(tokio_postgres::config::Host::Tcp(host)) = cfg.get_hosts().first() {
            database.push(KeyValue::new("server.address", host.clone()));
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            database.push(KeyValue::new("server.port", i64::from(port)));
        }
    }
    let _ = SPANS.set(Spans { tracer, database });
}

/// The statements of [`GenericClient`], each in a database span when traced. The `db`
/// modules call these, never the untraced methods (clippy's `disallowed-methods`, which
/// only this trait is allowed past).
#[allow(clippy::disallowed_methods)]
pub trait Sql: GenericClient {
    fn traced_query<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Vec<Row>, Error>> + Send + 'a {
        traced(sql, self.query(sql, params))
    }

    fn traced_query_one<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Row, Error>> + Send + 'a {
        traced(sql, self.query_one(sql, params))
    }

    fn traced_query_opt<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<Option<Row>, Error>> + Send + 'a {
        traced(sql, self.query_opt(sql, params))
    }

    fn traced_execute<'a>(
        &'a self,
        sql: &'a str,
        params: &'a [&'a (dyn ToSql + Sync)],
    ) -> impl Future<Output = Result<u64, Error>> + Send + 'a {
        traced(sql, self.execute(sql, params))
    }

    fn traced_batch_execute<'a>(
        &'a self,
        sql: &'a str,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'a {
        traced(sql, self.batch_execute(sql))
    }
}

impl<T: GenericClient> Sql for T {}

/// Runs `statement`, in a span when the current context holds a sampled span.
async fn traced<T, F>(sql: &str, statement: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    let Some(spans) = SPANS.get() else {
        return statement.await;
    };
    let parent = Context::current();
    if !parent.span().span_context().is_sampled() {
        return statement.await;
    }
    let summary = Summary::of(sql);
    let mut attributes = spans.database.clone();
    attributes.push(KeyValue::new("db.query.text", capped(sql).to_string()));
    if let Some(op) = summary.operation {
        attributes.push(KeyValue::new("db.operation.name", op));
    }
    if let Some(table) = summary.collection {
        attributes.push(KeyValue::new("db.collection.name", table.to_string()));
    }
    let span = spans
        .tracer
        .span_builder(summary.name())
        .with_kind(SpanKind::Client)
        .with_attributes(attributes)
        .start_with_context(&spans.tracer, &parent);
    let cx = parent.with_span(span);
    let result = statement.await;
    let span = cx.span();
    if let Err(e) = &result {
        let kind = e
            .code()
            .map(|c| c.code().to_string())
            .unwrap_or_else(|| "connection".to_string());
        span.set_attribute(KeyValue::new("db.response.status_code", kind.clone()));
        span.set_attribute(KeyValue::new("error.type", kind));
        span.set_status(Status::error("statement failed"));
    }
    span.end();
    result
}

/// `sql` cut to [`MAX_QUERY_TEXT`] bytes on a character boundary.
fn capped(sql: &str) -> &str {
    let sql = sql.trim();
    if sql.len() <= MAX_QUERY_TEXT {
        return sql;
    }
    let mut end = MAX_QUERY_TEXT;
    while !sql.is_char_boundary(end) {
        end -= 1;
    }
    &sql[..end]
}

/// The words of a statement, with each parenthesis a word of its own and commas left out.
fn tokens(sql: &str) -> impl Iterator<Item = &str> {
    sql.split_whitespace().flat_map(|word| {
        let mut rest = word;
        std::iter::from_fn(move || {
            rest = rest.trim_start_matches(',');
            if rest.is_empty() {
                return None;
            }
            let end = match rest.find(['(', ')', ',']) {
                Some(0) => 1,
                Some(i) => i,
                None => rest.len(),
            };
            let (token, tail) = rest.split_at(end);
            rest = tail;
            Some(token)
        })
    })
}

/// A statement's operation and main table, for its span's name.
#[derive(Debug, PartialEq)]
struct Summary<'a> {
    operation: Option<&'static str>,
    collection: Option<&'a str>,
}

impl<'a> Summary<'a> {
    fn of(sql: &'a str) -> Self {
        let mut words = tokens(sql);
        let Some(first) = words.next() else {
            return Self {
                operation: None,
                collection: None,
            };
        };
        const OPERATIONS: [&str; 9] = [
            "SELECT", "INSERT", "UPDATE", "DELETE", "WITH", "CREATE", "ALTER", "DROP", "LOCK",
        ];
        let operation = OPERATIONS
            .into_iter()
            .find(|op| first.eq_ignore_ascii_case(op));
        // The table follows INSERT INTO, UPDATE, DELETE FROM and a SELECT's first FROM.
        let after = match operation {
            Some("INSERT") => Some("INTO"),
            Some("DELETE" | "SELECT") => Some("FROM"),
            _ => None,
        };
        let collection = match (operation, after) {
            (Some("UPDATE"), _) => words.next(),
            (_, Some(keyword)) => words
                .by_ref()
                .find(|w| w.eq_ignore_ascii_case(keyword))
                .and_then(|_| words.next()),
            _ => None,
        }
        .map(|t| t.trim_matches(|c: char| c == '"' || c == ';'))
        .filter(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
        });
        Self {
            operation,
            collection,
        }
    }

    /// `{operation} {table}`, the operation alone, or `postgresql`.
    fn name(&self) -> String {
        match (self.operation, self.collection) {
            (Some(op), Some(t)) => format!("{op} {t}"),
            (Some(op), None) => op.to_string(),
            _ => "postgresql".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(sql: &str) -> String {
        Summary::of(sql).name()
    }

    #[test]
    fn spans_are_named_by_operation_and_table() {
        assert_eq!(
            name("SELECT id, name FROM workspaces WHERE id = $1"),
            "SELECT workspaces"
        );
        assert_eq!(
            name("\n  insert into audit_events (a, b) values ($1, $2)"),
            "INSERT audit_events"
        );
        assert_eq!(name("UPDATE api_keys SET x = $1"), "UPDATE api_keys");
        assert_eq!(
            name("DELETE FROM sessions WHERE id = $1"),
            "DELETE sessions"
        );
        assert_eq!(
            name("SELECT count(*) FROM public.users"),
            "SELECT public.users"
        );
        // A subquery or a function where the table would be: the operation alone.
        assert_eq!(name("SELECT x FROM (SELECT 1) t"), "SELECT");
        assert_eq!(name("SELECT 1"), "SELECT");
        assert_eq!(name("WITH a AS (SELECT 1) SELECT * FROM a"), "WITH");
        assert_eq!(name("VACUUM"), "postgresql");
        assert_eq!(name(""), "postgresql");
    }

    #[test]
    fn long_statements_are_cut_on_a_character_boundary() {
        let sql = format!("SELECT '{}'", "é".repeat(MAX_QUERY_TEXT));
        let cut = capped(&sql);
        assert!(cut.len() <= MAX_QUERY_TEXT);
        assert!(sql.starts_with(cut));
    }
}
