//! Fault kit: a private PostgreSQL cluster a test may stop, start and pause (SIGSTOP of
//! its processes), a bounded steady load, and the reconciliation check every fault test
//! ends with. Everything started here is stopped by PID on drop, also when a test fails.
//! The TCP fault relay and the gateway's kill/restart live in `harness`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::harness::{chat_body, eventually, free_port, Env, Gateway};

fn pg_bin(name: &str) -> PathBuf {
    if let Ok(out) = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
    {
        let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !p.is_empty() {
            return PathBuf::from(p);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| panic!("{name} not found"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL tool, as the `postgres` user when we are root (PostgreSQL refuses
/// root), and returns whether it succeeded.
fn run_pg(args: &[&str]) -> bool {
    let quoted: Vec<String> = args
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect();
    let line = quoted.join(" ");
    let status = if is_root() {
        Command::new("su")
            .args(["postgres", "-s", "/bin/sh", "-c", &line])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    } else {
        Command::new("sh")
            .args(["-c", &line])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    status.map(|s| s.success()).unwrap_or(false)
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
}

/// A private PostgreSQL cluster on a free port, in a temporary directory (`fsync=off`).
pub struct PgCluster {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PgCluster {
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("perpetuo-pg-")
            .tempdir()
            .unwrap();
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "chown to postgres");
        }
        let data = dir.path().join("data");
        let initdb = pg_bin("initdb");
        assert!(
            run_pg(&[
                initdb.to_str().unwrap(),
                "-D",
                data.to_str().unwrap(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
                "--no-sync",
            ]),
            "initdb failed"
        );
        let cluster = Self {
            dir,
            port: free_port(),
        };
        assert!(cluster.start_server(), "private PostgreSQL did not start");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn start_server(&self) -> bool {
        let pg_ctl = pg_bin("pg_ctl");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60 -c shared_buffers=16MB",
            self.port,
            self.dir.path().display()
        );
        run_pg(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            self.data().to_str().unwrap(),
            "-l",
            self.dir.path().join("postgres.log").to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-o",
            &opts,
            "start",
        ])
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server at once (`pg_ctl stop -m immediate`): connections drop.
    pub fn stop(&self) {
        let pg_ctl = pg_bin("pg_ctl");
        run_pg(&[
            pg_ctl.to_str().unwrap(),
            "-D",
            self.data().to_str().unwrap(),
            "-m",
            "immediate",
            "-w",
            "stop",
        ]);
    }

    /// Starts the stopped server again on the same port.
    pub fn restart(&self) {
        assert!(self.start_server(), "private PostgreSQL did not restart");
    }

    /// The postmaster and its children, by PID.
    fn pids(&self) -> Vec<u32> {
        let Ok(text) = std::fs::read_to_string(self.data().join("postmaster.pid")) else {
            return Vec::new();
        };
        let Some(master) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<u32>().ok())
        else {
            return Vec::new();
        };
        let mut pids = vec![master];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(master) {
                if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) {
                    pids.push(pid);
                }
            }
        }
        pids
    }

    /// Freezes every process of the cluster (SIGSTOP): connections hang, nothing answers.
    /// The guard thaws it (SIGCONT) when dropped, also when the test fails.
    pub fn pause(&self) -> Paused<'_> {
        let pids = self.pids();
        assert!(!pids.is_empty(), "no PostgreSQL processes to pause");
        for &pid in &pids {
            signal(pid, "STOP");
        }
        Paused {
            _cluster: self,
            pids,
        }
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        for pid in self.pids() {
            signal(pid, "CONT");
        }
        self.stop();
    }
}

pub struct Paused<'a> {
    _cluster: &'a PgCluster,
    pids: Vec<u32>,
}

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal(pid, "CONT");
        }
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
pub struct Load {
    pub sent: usize,
    /// Request ids of the answers received (any status).
    pub answered: Vec<Uuid>,
    /// Statuses of the answers, in order.
    pub statuses: Vec<u16>,
    /// When each answer had been read whole, in order.
    pub answered_at: Vec<std::time::Instant>,
}

/// Sends `n` chat requests one after another, `gap` apart (bounded in count and time:
/// each request has a 10 s timeout).
pub async fn steady_load(gw: &Gateway, key: &str, n: usize, gap: Duration) -> Load {
    let mut load = Load::default();
    for _ in 0..n {
        load.sent += 1;
        let sent = gw
            .chat(key, chat_body("gpt-4o"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(resp) = sent {
            let status = resp.status().as_u16();
            let id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| Uuid::parse_str(v).ok());
            if resp.bytes().await.is_ok() {
                if let Some(id) = id {
                    load.answered.push(id);
                    load.statuses.push(status);
                    load.answered_at.push(std::time::Instant::now());
                }
            }
        }
        tokio::time::sleep(gap).await; // the load's pace
    }
    load
}

/// The reconciliation every fault test ends with, once `expected` rows are in (waits up
/// to `within`): every id in `expected` has exactly one row, no id has two, and
/// `usage_counters` equal the sums over `request_logs`. Returns the rows counted.
pub async fn reconcile(env: &Env, expected: &[Uuid], within: Duration) -> usize {
    reconcile_since(env, expected, within, OffsetDateTime::UNIX_EPOCH).await
}

/// [`reconcile`], comparing counters only from `since` on.
pub async fn reconcile_since(
    env: &Env,
    expected: &[Uuid],
    within: Duration,
    since: OffsetDateTime,
) -> usize {
    let client = eventually("the database is reachable", within, || async {
        env.db.pool.get().await.ok()
    })
    .await;
    let wanted: HashSet<Uuid> = expected.iter().copied().collect();
    let what = format!("each of {} requests has its request_logs row", wanted.len());
    eventually(&what, within, || async {
        let ids: Vec<Uuid> = client
            .query("SELECT id FROM request_logs", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let present: HashSet<Uuid> = ids.iter().copied().collect();
        assert_eq!(ids.len(), present.len(), "duplicate request_logs rows");
        wanted.is_subset(&present)
    })
    .await;
    assert_counters_match_since(&client, since).await;
    client
        .query_one("SELECT count(*) FROM request_logs", &[])
        .await
        .unwrap()
        .get::<_, i64>(0) as usize
}

/// `usage_counters` equal the sums over `request_logs`, row for row, for the hours from
/// `since` on (retention drops old rows but keeps their counters).
pub async fn assert_counters_match_since(
    client: &deadpool_postgres::Client,
    since: OffsetDateTime,
) {
    let texts = |sql: &'static str| async move {
        client
            .query(sql, &[&since])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
    };
    let from_logs = texts(
        "SELECT concat_ws('|', workspace_id, date_trunc('hour', created_at AT TIME ZONE 'UTC'),
                coalesce(api_key_id::text, '-'), coalesce(provider_id::text, '-'),
                coalesce(model_served, model_requested, ''), count(*),
                count(*) FILTER (WHERE status >= 400),
                coalesce(sum(prompt_tokens) FILTER (WHERE cache IS DISTINCT FROM 'hit'), 0),
                coalesce(sum(completion_tokens) FILTER (WHERE cache IS DISTINCT FROM 'hit'), 0),
                coalesce(sum(total_tokens) FILTER (WHERE cache IS DISTINCT FROM 'hit'), 0),
                coalesce(sum(coalesce(cost_nusd, 0)) FILTER (WHERE cache IS DISTINCT FROM 'hit'), 0),
                count(*) FILTER (WHERE cache = 'hit'),
                coalesce(sum(total_tokens) FILTER (WHERE cache = 'hit'), 0),
                coalesce(sum(coalesce(cache_saved_nusd, 0)) FILTER (WHERE cache = 'hit'), 0))
         FROM request_logs WHERE workspace_id IS NOT NULL AND created_at >= date_trunc('hour', $1::timestamptz)
         GROUP BY workspace_id, date_trunc('hour', created_at AT TIME ZONE 'UTC'), api_key_id,
                  provider_id, coalesce(model_served, model_requested, '')
         ORDER BY 1",
    )
    .await;
    let from_counters = texts(
        "SELECT concat_ws('|', workspace_id, bucket AT TIME ZONE 'UTC', coalesce(api_key_id::text, '-'),
                coalesce(provider_id::text, '-'), model, requests, errors, prompt_tokens,
                completion_tokens, total_tokens, cost_nusd, cache_hits, cache_hit_tokens,
                cache_saved_nusd)
         FROM usage_counters WHERE bucket >= date_trunc('hour', $1::timestamptz) ORDER BY 1",
    )
    .await;
    assert!(!from_logs.is_empty() || from_counters.is_empty());
    assert_eq!(
        from_logs, from_counters,
        "usage_counters differ from the sums over request_logs"
    );
}

/// Reads spool files left in a gateway's data directory (for assertions).
pub fn spool_files(data_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(data_dir.join("spool"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("spool-"))
                })
                .collect()
        })
        .unwrap_or_default()
}
