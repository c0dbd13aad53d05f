//! The real coding agents, Codex and Claude Code, run a whole session through the gateway
//! as their users run them: headless, streaming, in a throwaway home directory, against
//! the mock's scripted agent ([`mock_provider::AgentScript`]) behind an entry of each
//! kind. The model reads a file, edits it with the agent's own edit tool, then answers;
//! the test checks the file on disk, the final text, and one log row with usage per
//! request. Ignored in the ordinary run: `scripts/test-agents` installs the agents at the
//! versions `scripts/agents/package.json` pins and runs these.
//!
//! Flags that let an agent edit without prompts while running as root (as in CI):
//! Codex `exec --dangerously-bypass-approvals-and-sandbox` (its sandbox cannot start in
//! an unprivileged container; nothing here reaches beyond 127.0.0.1); Claude Code
//! refuses `--dangerously-skip-permissions` as root, so `--permission-mode acceptEdits`
//! with `--allowedTools Read,Edit,Write`.
//!
//! An agent only ever reaches 127.0.0.1: its HTTP(S) proxy is a trap that records and
//! refuses every connection, `NO_PROXY` exempts the loopback gateway, updates and
//! telemetry are off, and Codex's plugin sync (which fetches from GitHub) is disabled.
//! A cell fails if the trap saw anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use mock_provider::agent::turn_of;
use mock_provider::{AgentScript, MockConfig, MockProvider};
use perpetuo_core::db::logs::{LogRecord, UsageSource};
use perpetuo_core::provider::ProviderKind;

use crate::harness::{Env, Gateway, Process};

/// The directory holding the installed agents' `codex` and `claude` (npm's
/// `node_modules/.bin`), set by `scripts/test-agents`.
const AGENTS_BIN: &str = "PERPETUO_AGENTS_BIN";

/// Where the throwaway home directories go (default: the system's temporary directory;
/// Codex declines to put its helper commands there and says so, harmlessly).
const AGENTS_TMP: &str = "PERPETUO_AGENTS_TMP";

/// Cells that fail because of a translation gap the gateway still has: the cell, what
/// its failure must show (the gateway's answer, as the agent printed it), and what the
/// agent sent. A listed cell must fail that way; the test says when it passes, so that
/// it comes off the list.
const EXPECTED_TO_FAIL: &[(&str, &str, &str)] = &[];

/// How long a whole session may take.
const SESSION_LIMIT: Duration = Duration::from_secs(120);

/// How soon an agent's first HTTP request must follow its first connection to the
/// gateway: a transport it tries first (a WebSocket upgrade) must be refused at once,
/// not retried or waited out. Measured from the first connection, not from the agent's
/// start, so that the agent's own start-up (hundreds of milliseconds of CPU on a busy
/// machine) is not what is timed; the start-to-first-request figure is reported.
const TRANSPORT_SETTLED: Duration = Duration::from_secs(1);

/// The file the session edits, and the edit.
const FILE: &str = "notes.txt";
const OLD_LINE: &str = "colour = red";
const NEW_LINE: &str = "colour = blue";
/// The model's final answer.
const REPLY: &str = "Changed the colour in notes.txt from red to blue.";
const PROMPT: &str = "In notes.txt, change the colour from red to blue.";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Agent {
    Codex,
    /// Codex with `supports_websockets = true` on its provider: it asks for a WebSocket
    /// upgrade of `/v1/responses` first, and must fall back to HTTP when it is refused.
    CodexWebSocketFirst,
    ClaudeCode,
}

/// One cell of the matrix: an agent and the entries its requests meet, in priority order.
/// A `true` beside an entry makes it fail the session's second turn (with a 503).
struct Cell {
    name: &'static str,
    agent: Agent,
    entries: &'static [(ProviderKind, bool)],
}

/// What a session left behind, for the report.
struct Outcome {
    /// From the agent's start to its first request's arrival at the gateway.
    first_request: Duration,
    /// WebSocket upgrades the agent asked for, and from its first connection to its
    /// first request.
    upgrades: usize,
    settled: Duration,
    rows: usize,
}

/// Runs `cell`, then holds it to [`EXPECTED_TO_FAIL`].
async fn run(cell: Cell) {
    let expected = EXPECTED_TO_FAIL
        .iter()
        .find(|(name, _, _)| *name == cell.name);
    match (session(&cell).await, expected) {
        (Ok(outcome), None) => eprintln!(
            "{}: passed; {} requests, the first at the gateway {} ms after the agent \
             started ({} WebSocket upgrades asked for, the request {} ms after the first \
             connection)",
            cell.name,
            outcome.rows,
            outcome.first_request.as_millis(),
            outcome.upgrades,
            outcome.settled.as_millis()
        ),
        (Err(failure), None) => panic!("{}: {failure}", cell.name),
        (Ok(_), Some(_)) => panic!(
            "{} passes now: take it off EXPECTED_TO_FAIL in agents.rs",
            cell.name
        ),
        (Err(failure), Some((_, shows, _))) if failure.contains(shows) => {
            eprintln!("{}: failed as expected ({shows})", cell.name)
        }
        (Err(failure), Some((_, shows, _))) => panic!(
            "{} was expected to fail with {shows:?}, and failed otherwise: {failure}",
            cell.name
        ),
    }
}

fn base_url(kind: ProviderKind, mock: &MockProvider) -> String {
    match kind {
        ProviderKind::Anthropic => mock.anthropic_base_url(),
        ProviderKind::Gemini => mock.gemini_base_url(),
        _ => mock.base_url(),
    }
}

/// One session of `cell`; `Err` says what went wrong.
/// The log rows so far, one line each: status, error kind, entry, note.
async fn rows_seen(env: &Env) -> String {
    let rows = env
        .client()
        .await
        .query(
            "SELECT concat_ws(' ', status, coalesce(error_kind, '-'), coalesce(provider_name, '-'),
                    coalesce(note, '')) FROM request_logs ORDER BY created_at",
            &[],
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn session(cell: &Cell) -> Result<Outcome, String> {
    let bin = std::env::var_os(AGENTS_BIN)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("{AGENTS_BIN} is not set: run scripts/test-agents, which installs the agents")
        });
    let tmp = std::env::var_os(AGENTS_TMP)
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&tmp).unwrap();
    let work = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir_in(&tmp).unwrap();
    let file = work.path().join(FILE);
    std::fs::write(&file, format!("{OLD_LINE}\n")).unwrap();

    let env = Env::new().await;
    let mut mocks = Vec::new();
    for (priority, (kind, fails)) in cell.entries.iter().enumerate() {
        let script = AgentScript {
            file: file.clone(),
            old_line: OLD_LINE.into(),
            new_line: NEW_LINE.into(),
            reply: REPLY.into(),
            fail_turn: fails.then_some(2),
        };
        let config = MockConfig {
            agent: Some(script),
            ..MockConfig::default()
        };
        let mock = MockProvider::start(config).await.unwrap();
        let name = format!("{}-{priority}", kind.as_str());
        let priority = i32::try_from(priority).unwrap() + 1;
        env.add_provider_with(&name, *kind, &base_url(*kind, &mock), priority, &[], &[])
            .await;
        mocks.push((mock, *fails));
    }
    let gw = Gateway::start(&env).await;
    let trap = ProxyTrap::start().await;
    let door = Doorway::start(&gw.base).await;

    let mut command = agent_command(cell.agent, &bin, home.path(), &door.base, &env.key, &trap);
    command
        .current_dir(work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let child = command
        .spawn()
        .map_err(|e| format!("the agent does not start: {e}"))?;
    let output = match wait_output(child, SESSION_LIMIT).await {
        Ok(output) => output,
        // What the gateway answered so far says where the session stopped.
        Err(e) => {
            let last = mocks
                .iter()
                .filter_map(|(m, _)| m.last_request())
                .map(|r| {
                    String::from_utf8_lossy(&r.body)
                        .chars()
                        .take(6000)
                        .collect::<String>()
                })
                .collect::<Vec<_>>()
                .join("\n");
            return Err(format!(
                "{e}\n--- the gateway's log rows:\n{}\n--- the last request a provider saw:\n{last}",
                rows_seen(&env).await
            ));
        }
    };
    let shown = format!(
        "\n--- the agent's stdout:\n{}\n--- its stderr (end):\n{}",
        output.stdout,
        tail(&output.stderr, 40)
    );

    let refused = trap.seen();
    if !refused.is_empty() {
        return Err(format!(
            "the agent tried to reach beyond 127.0.0.1: {refused:?}{shown}"
        ));
    }
    // Every request a mock answered (all but the turns it failed on purpose) is one
    // request of the agent, and has its row.
    let answered: usize = mocks
        .iter()
        .map(|(mock, fails)| {
            mock.requests()
                .iter()
                .filter(|r| {
                    let turn = r.json.as_ref().and_then(|json| turn_of(&r.path, json));
                    !(*fails && turn == Some(2))
                })
                .count()
        })
        .sum();
    let rows = rows_settled(&env, answered).await;
    let summary: Vec<String> = rows.iter().map(row_summary).collect();
    let shown = format!("{shown}\n--- log rows:\n{}", summary.join("\n"));

    let content = std::fs::read_to_string(&file).unwrap_or_default();
    if content.trim_end() != NEW_LINE {
        return Err(format!("{FILE} holds {content:?}, not the edit{shown}"));
    }
    if !output.stdout.contains(REPLY) {
        return Err(format!("the final text did not arrive{shown}"));
    }
    if output.status != Some(0) {
        return Err(format!("the agent exited with {:?}{shown}", output.status));
    }
    if rows.len() != answered || rows.len() < 3 {
        return Err(format!(
            "{} log rows for {answered} answered requests (at least 3 turns){shown}",
            rows.len()
        ));
    }
    if let Some(bad) = rows.iter().find(|r| {
        r.status != 200
            || r.prompt_tokens <= 0
            || r.completion_tokens <= 0
            || r.usage_source != UsageSource::Provider
            || !r.streamed
    }) {
        return Err(format!(
            "a row without a streamed success and its usage: {}{shown}",
            row_summary(bad)
        ));
    }
    if cell.entries.iter().any(|(_, fails)| *fails) {
        let fell_back = rows.iter().any(|r| {
            r.attempts.len() == 2
                && r.attempts[0].status == Some(503)
                && r.provider_name.as_deref() == Some(r.attempts[1].provider_name.as_str())
        });
        if !fell_back {
            return Err(format!("no request fell back to the next entry{shown}"));
        }
    }
    let arrivals = door.arrivals();
    let first_connection = arrivals.first().map(|a| a.at);
    let first_request = arrivals.iter().find(|a| !a.upgrade).map(|a| a.at);
    let (Some(first_connection), Some(first_request)) = (first_connection, first_request) else {
        return Err(format!("no request reached the gateway{shown}"));
    };
    let settled = first_request - first_connection;
    if settled > TRANSPORT_SETTLED {
        return Err(format!(
            "the first request came {} ms after the first connection: {}{shown}",
            settled.as_millis(),
            arrivals
                .iter()
                .map(|a| format!("+{} ms {}", (a.at - first_connection).as_millis(), a.line))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    Ok(Outcome {
        first_request: first_request - started,
        upgrades: arrivals.iter().filter(|a| a.upgrade).count(),
        settled,
        rows: rows.len(),
    })
}

/// The agent's command line and environment: headless, in `home`, pointed at the gateway
/// with the workspace's key, everything else through the trap.
fn agent_command(
    agent: Agent,
    bin: &Path,
    home: &Path,
    gateway: &str,
    key: &str,
    trap: &ProxyTrap,
) -> Command {
    let program = match agent {
        Agent::Codex | Agent::CodexWebSocketFirst => "codex",
        Agent::ClaudeCode => "claude",
    };
    let mut command = Command::new(bin.join(program));
    let proxy = format!("http://{}", trap.addr);
    command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        command
            .env(var, &proxy)
            .env(var.to_ascii_lowercase(), &proxy);
    }
    command
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    match agent {
        Agent::Codex | Agent::CodexWebSocketFirst => {
            let codex_home = home.join(".codex");
            std::fs::create_dir_all(&codex_home).unwrap();
            let websocket = agent == Agent::CodexWebSocketFirst;
            let config = codex_config(gateway, websocket);
            std::fs::write(codex_home.join("config.toml"), config).unwrap();
            command
                .env("CODEX_HOME", &codex_home)
                .env("PERPETUO_API_KEY", key)
                .args([
                    "exec",
                    "--skip-git-repo-check",
                    "--dangerously-bypass-approvals-and-sandbox",
                    "--ephemeral",
                    "--color",
                    "never",
                    PROMPT,
                ]);
        }
        Agent::ClaudeCode => {
            command
                .env("ANTHROPIC_BASE_URL", gateway)
                .env("ANTHROPIC_API_KEY", key)
                .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
                .env("DISABLE_AUTOUPDATER", "1")
                .env("DISABLE_TELEMETRY", "1")
                .env("DISABLE_ERROR_REPORTING", "1")
                // The gateway does the falling back; an error it answers is the result.
                .env("CLAUDE_CODE_MAX_RETRIES", "0")
                .args([
                    "-p",
                    PROMPT,
                    "--permission-mode",
                    "acceptEdits",
                    "--allowedTools",
                    "Read,Edit,Write",
                    "--model",
                    "sonnet",
                    "--output-format",
                    "text",
                    "--no-session-persistence",
                ]);
        }
    }
    command
}

/// Codex's `config.toml`: the README's provider block, with retries off (the gateway
/// does the falling back) and updates, analytics and plugin sync off.
fn codex_config(gateway: &str, websocket: bool) -> String {
    format!(
        r#"model = "gpt-5.5"
model_provider = "perpetuo"
check_for_update_on_startup = false

[model_providers.perpetuo]
name = "Perpetuo"
base_url = "{gateway}/v1"
env_key = "PERPETUO_API_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
supports_websockets = {websocket}

[analytics]
enabled = false

[features]
plugins = false
"#
    )
}

struct Output {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Waits for the agent to exit (killing it after `limit`) and collects what it printed.
async fn wait_output(child: std::process::Child, limit: Duration) -> Result<Output, String> {
    let mut process = Process(child);
    let (mut out, mut err) = (
        process.0.stdout.take().unwrap(),
        process.0.stderr.take().unwrap(),
    );
    let read = |pipe: &mut dyn std::io::Read| {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    };
    let stdout = std::thread::spawn(move || read(&mut out));
    let stderr = std::thread::spawn(move || read(&mut err));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            process.kill9();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let output = Output {
        status: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    match status {
        Some(_) => Ok(output),
        None => Err(format!(
            "the agent still ran after {limit:?}\n--- stdout:\n{}\n--- stderr:\n{}",
            output.stdout,
            tail(&output.stderr, 40)
        )),
    }
}

/// The workspace's rows once `n` are there (or what is there after a while), oldest first.
async fn rows_settled(env: &Env, n: usize) -> Vec<LogRecord> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let client = env.client().await;
        let mut rows = perpetuo_core::db::logs::all_for_workspace(&client, env.workspace)
            .await
            .unwrap();
        if rows.len() >= n || Instant::now() >= deadline {
            rows.sort_by_key(|r| r.created_at);
            return rows;
        }
        drop(client);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn row_summary(r: &LogRecord) -> String {
    let attempts: Vec<String> = r
        .attempts
        .iter()
        .map(|a| format!("{}:{:?}", a.provider_name, a.status))
        .collect();
    format!(
        "{:?} {} via {:?} status {} error {:?} tokens {}/{} ({}) streamed {} attempts [{}]",
        r.route,
        r.model_requested.as_deref().unwrap_or("-"),
        r.provider_name,
        r.status,
        r.error_kind,
        r.prompt_tokens,
        r.completion_tokens,
        r.usage_source.as_str(),
        r.streamed,
        attempts.join(", ")
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A TCP relay in front of the gateway that notes when each connection arrives and what
/// it first asks (a WebSocket upgrade or an ordinary request), then passes it through.
struct Doorway {
    base: String,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct Arrival {
    at: Instant,
    /// The request line, e.g. `POST /v1/responses HTTP/1.1`.
    line: String,
    upgrade: bool,
}

impl Doorway {
    async fn start(gateway_base: &str) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let target = gateway_base.strip_prefix("http://").unwrap().to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let record = arrivals.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let at = Instant::now();
                let (record, target) = (record.clone(), target.clone());
                connections.spawn(async move {
                    let mut head = vec![0u8; 16 * 1024];
                    let Ok(n) = inbound.read(&mut head).await else {
                        return;
                    };
                    let text = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
                    let line = String::from_utf8_lossy(&head[..n])
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    let upgrade = text.contains("\r\nupgrade: websocket");
                    record
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Arrival { at, line, upgrade });
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    if outbound.write_all(&head[..n]).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            base,
            arrivals,
            task,
        }
    }

    fn arrivals(&self) -> Vec<Arrival> {
        let mut arrivals = self
            .arrivals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        arrivals.sort_by_key(|a| a.at);
        arrivals
    }
}

impl Drop for Doorway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An HTTP proxy that records the first line of every connection (`CONNECT host:443`)
/// and closes it: where an agent would have gone beyond 127.0.0.1.
struct ProxyTrap {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl ProxyTrap {
    async fn start() -> Self {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = [0u8; 512];
                let n = tokio::time::timeout(Duration::from_secs(1), stream.read(&mut head))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .unwrap_or(0);
                let line = String::from_utf8_lossy(&head[..n])
                    .lines()
                    .next()
                    .unwrap_or("(nothing sent)")
                    .to_owned();
                record
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(line);
            }
        });
        Self { addr, seen, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ProxyTrap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

use ProviderKind::{Anthropic, Gemini, Openai, OpenaiCompatible};

macro_rules! cells {
    ($($name:ident: $agent:ident, [$($kind:ident $(fails $fails:tt)?),+];)+) => {
        $(
            #[tokio::test]
            #[ignore = "runs the real coding agents: scripts/test-agents"]
            async fn $name() {
                run(Cell {
                    name: stringify!($name),
                    agent: Agent::$agent,
                    entries: &[$(($kind, cells!(@fails $($fails)?))),+],
                })
                .await;
            }
        )+
    };
    (@fails) => { false };
    (@fails on_turn_2) => { true };
}

cells! {
    codex_openai: Codex, [Openai];
    codex_anthropic: Codex, [Anthropic];
    codex_gemini: Codex, [Gemini];
    codex_openai_compatible: Codex, [OpenaiCompatible];
    codex_falls_back_mid_session: Codex, [Openai fails on_turn_2, Openai];
    codex_falls_back_from_openai_to_gemini: Codex, [Openai fails on_turn_2, Gemini];
    codex_asking_for_a_websocket_first: CodexWebSocketFirst, [Openai];
    claude_code_openai: ClaudeCode, [Openai];
    claude_code_anthropic: ClaudeCode, [Anthropic];
    claude_code_gemini: ClaudeCode, [Gemini];
    claude_code_openai_compatible: ClaudeCode, [OpenaiCompatible];
    claude_code_falls_back_mid_session: ClaudeCode, [Anthropic fails on_turn_2, Anthropic];
    claude_code_falls_back_from_anthropic_to_openai: ClaudeCode, [Anthropic fails on_turn_2, Openai];
}
