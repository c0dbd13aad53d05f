//! Test harness: seeded database, the gateway binary (started, killed, restarted on its
//! data directory), a TCP fault relay to cut, hang or slow the database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mock_provider::{MockConfig, MockProvider};
use perpetuo_core::apikey;
use perpetuo_core::crypto::{self, MasterKey};
use perpetuo_core::db::{self, logs::LogRecord, providers::NewProvider};
use perpetuo_core::email::Email;
use perpetuo_core::provider::ProviderKind;
use perpetuo_core::testing::TestDb;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

pub struct Env {
    pub db: TestDb,
    /// The limits' clock of every gateway this environment starts.
    pub clock: Arc<TestClock>,
    pub master_b64: String,
    pub master: MasterKey,
    pub workspace: Uuid,
    pub key: String,
    pub key_id: Uuid,
}

impl Env {
    pub async fn new() -> Self {
        Self::seeded(TestDb::new().await.expect("test database")).await
    }

    /// An environment in a database of its own on the server at `server_url` (a private
    /// cluster of the fault kit).
    pub async fn on_server(server_url: &str) -> Self {
        Self::seeded(TestDb::on_server(server_url).await.expect("test database")).await
    }

    /// An environment seeded in `db` (a database made by the test, e.g. at an earlier
    /// migration).
    pub async fn seeded(db: TestDb) -> Self {
        let master_b64 = MasterKey::generate_base64();
        let master = MasterKey::from_base64(&master_b64).unwrap();
        let mut client = db.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let user = db::users::insert(&tx, &Email::parse("gw@example.com").unwrap(), "x")
            .await
            .unwrap();
        let ws = db::workspaces::create(&tx, "gw", user.id).await.unwrap();
        tx.commit().await.unwrap();
        drop(client);
        let mut env = Self {
            db,
            clock: Arc::new(TestClock::new()),
            master_b64,
            master,
            workspace: ws.id,
            key: String::new(),
            key_id: Uuid::nil(),
        };
        let (key, id) = env.new_key().await;
        env.key = key;
        env.key_id = id;
        env
    }

    pub async fn new_key(&self) -> (String, Uuid) {
        self.new_key_in(self.workspace).await
    }

    /// A new key of `workspace`.
    pub async fn new_key_in(&self, workspace: Uuid) -> (String, Uuid) {
        let k = apikey::generate();
        let client = self.db.pool.get().await.unwrap();
        let row = db::api_keys::insert(&client, workspace, "test", &k, None, None)
            .await
            .unwrap();
        (k.plaintext.expose().clone(), row.id)
    }

    /// Another workspace in the same database, with an owner of its own.
    pub async fn new_workspace(&self, name: &str) -> Uuid {
        let mut client = self.db.pool.get().await.unwrap();
        let tx = client.transaction().await.unwrap();
        let email = Email::parse(&format!("{name}@example.com")).unwrap();
        let user = db::users::insert(&tx, &email, "x").await.unwrap();
        let ws = db::workspaces::create(&tx, name, user.id).await.unwrap();
        tx.commit().await.unwrap();
        ws.id
    }

    pub async fn add_provider(&self, name: &str, base_url: &str, priority: i32) -> Uuid {
        self.add_provider_with(
            name,
            ProviderKind::OpenaiCompatible,
            base_url,
            priority,
            &[],
            &[],
        )
        .await
    }

    pub async fn add_provider_with(
        &self,
        name: &str,
        kind: ProviderKind,
        base_url: &str,
        priority: i32,
        models: &[&str],
        map: &[(&str, &str)],
    ) -> Uuid {
        self.add_provider_in(self.workspace, name, kind, base_url, priority, models, map)
            .await
    }

    /// A provider entry of another workspace of this database.
    #[allow(clippy::too_many_arguments)]
    pub async fn add_provider_in(
        &self,
        workspace: Uuid,
        name: &str,
        kind: ProviderKind,
        base_url: &str,
        priority: i32,
        models: &[&str],
        map: &[(&str, &str)],
    ) -> Uuid {
        let id = db::providers::new_id();
        let key = format!("sk-upstream-{name}");
        let row = NewProvider {
            id,
            workspace_id: workspace,
            kind,
            name: name.into(),
            base_url: Some(base_url.into()),
            sealed: self
                .master
                .seal(
                    &key,
                    &crypto::KeyBinding {
                        entry_id: id,
                        workspace_id: workspace,
                        kind,
                        base_url: Some(base_url),
                    },
                )
                .unwrap(),
            key_last4: crypto::last4(&key),
            priority,
            enabled: true,
            models: models.iter().map(|m| m.to_string()).collect(),
            model_map: map
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<BTreeMap<_, _>>(),
        };
        let client = self.db.pool.get().await.unwrap();
        db::providers::insert(&client, &row).await.unwrap();
        id
    }

    pub async fn client(&self) -> deadpool_postgres::Client {
        self.db.pool.get().await.unwrap()
    }

    /// Waits for the log row of a request id.
    pub async fn log_row(&self, request_id: &str) -> LogRecord {
        let id = Uuid::parse_str(request_id).unwrap();
        eventually(
            &format!("the log row of {request_id}"),
            Duration::from_secs(10),
            || async {
                let client = self.client().await;
                db::logs::find_by_id(&client, id)
                    .await
                    .unwrap()
                    .into_iter()
                    .next()
            },
        )
        .await
    }

    /// Every log row of the workspace, once `n` are there.
    pub async fn log_rows(&self, n: usize) -> Vec<LogRecord> {
        eventually(
            &format!("{n} log rows"),
            Duration::from_secs(10),
            || async {
                let client = self.client().await;
                let rows = db::logs::all_for_workspace(&client, self.workspace)
                    .await
                    .unwrap();
                (rows.len() >= n).then_some(rows)
            },
        )
        .await
    }
}

pub use perpetuo_core::testing::eventually;

/// The `Retry-After` of the mock's 429s.
pub const MOCK_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `BREAKER_COOLDOWN_MS` in [`DEFAULT_ENV`].
pub const BREAKER_COOLDOWN: Duration = Duration::from_millis(800);

/// Lets a cool-down of the gateway run out (a breaker's, or a 429's `Retry-After`), with a
/// margin. The gateway times cool-downs on its monotonic clock, which the test clock does
/// not move, and where this is used, asking until the entry is back would send the very
/// requests the test counts: the wait is the behaviour under test, not a guess at an event.
pub async fn outlast(cool_down: Duration) {
    tokio::time::sleep(cool_down + Duration::from_millis(100)).await;
}

pub async fn mock() -> MockProvider {
    MockProvider::start(MockConfig::default()).await.unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Gateway {
    child: Process,
    pub base: String,
    pub metrics: String,
    pub http: reqwest::Client,
    spec: Spec,
}

/// The clock a test build of the gateway reads for limit windows and budget periods: the
/// real clock plus an offset kept in a file (`PERPETUO_TEST_CLOCK_FILE`), which a test moves
/// instead of waiting for a calendar minute.
pub struct TestClock {
    dir: tempfile::TempDir,
}

impl TestClock {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("clock directory"),
        }
    }

    fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("offset-ms")
    }

    fn offset_ms(&self) -> i128 {
        std::fs::read_to_string(self.path())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Moves the clock to the start of the next calendar minute: a count begun now has the
    /// whole minute before its window resets.
    pub fn fresh_minute(&self) {
        let offset = self.offset_ms();
        let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000 + offset;
        let to_next = 60_000 - now.rem_euclid(60_000);
        std::fs::write(self.path(), (offset + to_next).to_string()).expect("clock file");
    }

    /// Moves the clock into the next calendar minute: every minute window resets.
    pub fn next_minute(&self) {
        self.fresh_minute();
    }
}

/// How a gateway was started, so it can be started again after a kill.
struct Spec {
    clock: Arc<TestClock>,
    database_url: String,
    master_b64: String,
    extra: Vec<(String, String)>,
    /// The gateway's `DATA_DIR` (its log spool), kept across restarts.
    data_dir: Arc<tempfile::TempDir>,
    /// Where the gateway's stdout and stderr go (the test's stderr when unset).
    output: Option<Arc<std::fs::File>>,
}

pub const DEFAULT_ENV: &[(&str, &str)] = &[
    ("UPSTREAM_TTFB_TIMEOUT_MS", "2000"),
    ("UPSTREAM_CONNECT_TIMEOUT_MS", "1000"),
    ("BREAKER_THRESHOLD", "3"),
    ("BREAKER_COOLDOWN_MS", "800"), // BREAKER_COOLDOWN
    ("SHUTDOWN_GRACE_SECONDS", "3"),
];

impl Gateway {
    pub async fn start(env: &Env) -> Self {
        Self::start_with(env, &env.db.url, &[]).await
    }

    pub async fn start_with(env: &Env, database_url: &str, extra: &[(&str, &str)]) -> Self {
        Self::start_with_output(env, database_url, extra, None).await
    }

    /// Like [`Gateway::start_with`], writing the gateway's stdout and stderr to `output`.
    pub async fn start_with_output(
        env: &Env,
        database_url: &str,
        extra: &[(&str, &str)],
        output: Option<&std::fs::File>,
    ) -> Self {
        Self::start_spec(Spec {
            clock: env.clock.clone(),
            database_url: database_url.to_string(),
            master_b64: env.master_b64.clone(),
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            data_dir: Arc::new(tempfile::tempdir().expect("gateway data directory")),
            output: output.map(|f| Arc::new(f.try_clone().expect("log file"))),
        })
        .await
    }

    /// A gateway on `env`'s database whose `DATA_DIR` is `data_dir` (which may already
    /// hold a spool left there by the test).
    pub async fn start_in(env: &Env, data_dir: Arc<tempfile::TempDir>) -> Self {
        Self::start_spec(Spec {
            clock: env.clock.clone(),
            database_url: env.db.url.clone(),
            master_b64: env.master_b64.clone(),
            extra: Vec::new(),
            data_dir,
            output: None,
        })
        .await
    }

    async fn start_spec(spec: Spec) -> Self {
        let (child, base, metrics) = spawn(&spec);
        let gw = Self {
            child,
            base,
            metrics,
            http: reqwest::Client::new(),
            spec,
        };
        gw.wait_healthy().await;
        gw
    }

    async fn wait_healthy(&self) {
        eventually(
            "the gateway is healthy",
            Duration::from_secs(20),
            || async {
                let sent = self.http.get(format!("{}/healthz", self.base)).send();
                sent.await.is_ok_and(|r| r.status() == 200)
            },
        )
        .await;
    }

    /// The gateway's `DATA_DIR`.
    pub fn data_dir(&self) -> &std::path::Path {
        self.spec.data_dir.path()
    }

    /// Runs a second gateway process with this one's settings and `DATA_DIR` (on ports of
    /// its own) until it exits; returns its exit status and what it printed. Fails the
    /// test if it still runs after `within`.
    pub async fn run_beside(&self, within: Duration) -> (std::process::ExitStatus, String) {
        let out = tempfile::NamedTempFile::new().expect("output file");
        let spec = Spec {
            clock: self.spec.clock.clone(),
            database_url: self.spec.database_url.clone(),
            master_b64: self.spec.master_b64.clone(),
            extra: self.spec.extra.clone(),
            data_dir: self.spec.data_dir.clone(),
            output: Some(Arc::new(out.reopen().expect("output file"))),
        };
        let (mut second, _, _) = spawn(&spec);
        let status = second.exited("the second gateway exits", within).await;
        (status, std::fs::read_to_string(out.path()).unwrap())
    }

    /// `kill -9`: no shutdown, no drain.
    pub fn kill9(&mut self) {
        self.child.kill9();
    }

    /// Starts the binary again (after [`Gateway::kill9`] or an exit) on the same database
    /// and `DATA_DIR`, on new ports (`base` and `metrics` change).
    pub async fn restart(&mut self) {
        self.kill9();
        let (child, base, metrics) = spawn(&self.spec);
        self.child = child;
        self.base = base;
        self.metrics = metrics;
        self.wait_healthy().await;
    }

    pub fn chat(&self, key: &str, body: Value) -> reqwest::RequestBuilder {
        self.http
            .post(format!("{}/v1/chat/completions", self.base))
            .bearer_auth(key)
            .json(&body)
    }

    /// The Prometheus text of the gateway's metrics endpoint.
    pub async fn metrics_text(&self) -> String {
        self.http
            .get(&self.metrics)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    pub fn signal(&self, sig: &str) {
        kill(self.pid(), sig);
    }

    /// Waits for the process to exit; returns whether it exited cleanly.
    pub async fn wait_exit(&mut self, within: Duration) -> bool {
        self.child
            .exited("the gateway exits", within)
            .await
            .success()
    }
}

/// Sends `sig` to the process `pid` (one we started).
pub fn kill(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(ok.success());
}

/// A child process of the test, killed (`SIGKILL`) when dropped.
pub struct Process(pub Child);

impl Process {
    /// `kill -9` and reap: no shutdown, no drain.
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// Waits for the process to exit by itself; fails the test naming `what` after
    /// `within`.
    pub async fn exited(&mut self, what: &str, within: Duration) -> std::process::ExitStatus {
        let child = &mut self.0;
        eventually(what, within, || {
            let status = child.try_wait().unwrap();
            async move { status }
        })
        .await
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn(spec: &Spec) -> (Process, String, String) {
    let (port, mport) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_perpetuo-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &spec.database_url)
        .env("PERPETUO_MASTER_KEY", &spec.master_b64)
        .env("GATEWAY_ADDR", format!("127.0.0.1:{port}"))
        .env("METRICS_ADDR", format!("127.0.0.1:{mport}"))
        .env("ALLOWED_PRIVATE_UPSTREAMS", "127.0.0.0/8")
        .env("DATA_DIR", spec.data_dir.path())
        .env("PERPETUO_TEST_CLOCK_FILE", spec.clock.path())
        .env(
            "RUST_LOG",
            std::env::var("GW_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(file) = &spec.output {
        cmd.stdout(file.try_clone().expect("log file"))
            .stderr(file.try_clone().expect("log file"));
    }
    for (k, v) in DEFAULT_ENV {
        cmd.env(k, v);
    }
    for (k, v) in &spec.extra {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("gateway starts");
    (
        Process(child),
        format!("http://127.0.0.1:{port}"),
        format!("http://127.0.0.1:{mport}/metrics"),
    )
}

/// The value of an unlabelled counter or gauge in Prometheus text (0 when absent).
pub fn metric_value(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

pub fn chat_body(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Say hello to the test suite"}]})
}

/// Reads an SSE response to its end; returns the `data:` payloads and whether it ended cleanly.
pub async fn read_sse(resp: reqwest::Response) -> (Vec<String>, bool) {
    let text = resp.text().await;
    let (text, clean) = match text {
        Ok(t) => (t, true),
        Err(_) => (String::new(), false),
    };
    let data = text
        .split("\n\n")
        .filter_map(|ev| {
            ev.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(str::to_string)
        })
        .collect();
    (data, clean)
}

/// What the fault relay does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// Forwards everything.
    Pass,
    /// Forwards every chunk after this delay.
    Delay(Duration),
    /// Forwards nothing and holds what it received (a hung peer or a partition); new
    /// connections are accepted and left waiting. Traffic resumes on `Pass`.
    Blackhole,
    /// Closes every connection with a reset, and every new one at once.
    Reset,
}

/// A TCP fault relay in front of a server (PostgreSQL, a provider): the test points the
/// gateway at `addr` and switches modes to take the server away.
pub struct Relay {
    pub addr: SocketAddr,
    mode: Arc<tokio::sync::watch::Sender<RelayMode>>,
    stop: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// Waits while the relay is blackholed; false once it resets (or the relay is gone).
async fn passable(mode: &mut tokio::sync::watch::Receiver<RelayMode>) -> bool {
    loop {
        let m = *mode.borrow_and_update();
        match m {
            RelayMode::Reset => return false,
            RelayMode::Blackhole => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
            RelayMode::Pass | RelayMode::Delay(_) => return true,
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::ReadHalf<'_>,
    mut to: tokio::net::tcp::WriteHalf<'_>,
    mut mode: tokio::sync::watch::Receiver<RelayMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !passable(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        let m = *mode.borrow();
        if let RelayMode::Delay(d) = m {
            // The delay the relay is asked for.
            tokio::time::sleep(d).await;
        }
        if !passable(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[allow(deprecated)] // SO_LINGER 0 is what makes the close a reset; it never blocks.
fn reset(stream: &TcpStream) {
    let _ = stream.set_linger(Some(Duration::ZERO));
}

async fn relay_conn(
    mut inbound: TcpStream,
    target: SocketAddr,
    mut mode: tokio::sync::watch::Receiver<RelayMode>,
) {
    if !passable(&mut mode).await {
        reset(&inbound);
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(target).await else {
        return;
    };
    {
        let (ri, wi) = inbound.split();
        let (ro, wo) = outbound.split();
        tokio::select! {
            _ = pump(ri, wo, mode.clone()) => {}
            _ = pump(ro, wi, mode.clone()) => {}
        }
    }
    if *mode.borrow() == RelayMode::Reset {
        reset(&inbound);
        reset(&outbound);
    }
}

impl Relay {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, _) = tokio::sync::watch::channel(RelayMode::Pass);
        let mode = Arc::new(mode);
        let stop = Arc::new(tokio::sync::Notify::new());
        let (stop2, mode2) = (stop.clone(), mode.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop2.notified() => break,
                    accepted = listener.accept() => {
                        let Ok((inbound, _)) = accepted else { break };
                        conns.spawn(relay_conn(inbound, target, mode2.subscribe()));
                    }
                }
            }
            conns.abort_all();
        });
        Self {
            addr,
            mode,
            stop,
            task,
        }
    }

    pub fn set_mode(&self, mode: RelayMode) {
        self.mode.send_replace(mode);
    }

    /// Closes the listener and every relayed connection: the database is gone.
    pub async fn stop(mut self) {
        self.mode.send_replace(RelayMode::Reset);
        self.stop.notify_one();
        let _ = (&mut self.task).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A workspace with one provider entry (`main`, the mock) and a gateway that reaches the
/// database through a [`Relay`] the test can delay, blackhole or stop.
pub struct BehindRelay {
    pub env: Env,
    pub mock: MockProvider,
    pub relay: Relay,
    pub gw: Gateway,
}

/// Starts a [`BehindRelay`], the gateway with `extra` settings.
pub async fn behind_relay(extra: &[(&str, &str)]) -> BehindRelay {
    let env = Env::new().await;
    let mock = mock().await;
    env.add_provider("main", &mock.base_url(), 1).await;
    let relay = Relay::start(db_addr(&env.db.url)).await;
    let gw = Gateway::start_with(&env, &relay_url(&env.db.url, relay.addr), extra).await;
    BehindRelay {
        env,
        mock,
        relay,
        gw,
    }
}

pub fn relay_url(db_url: &str, relay: SocketAddr) -> String {
    let mut u = url::Url::parse(db_url).unwrap();
    u.set_host(Some("127.0.0.1")).unwrap();
    u.set_port(Some(relay.port())).unwrap();
    u.to_string()
}

pub fn db_addr(db_url: &str) -> SocketAddr {
    let u = url::Url::parse(db_url).unwrap();
    let host = u.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", u.port().unwrap_or(5432))
        .parse()
        .unwrap()
}
