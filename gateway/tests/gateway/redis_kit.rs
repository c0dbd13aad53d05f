//! A private `redis-server` per test (started, paused, stopped by its PID) and the shared
//! one on 127.0.0.1:6379 when it runs.

use std::time::Duration;

use crate::harness::eventually;

/// A `redis-server` of this test's own on a free port, stopped by its PID.
pub struct PrivateRedis {
    child: Option<std::process::Child>,
    port: u16,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let mut r = Self {
            child: None,
            port: crate::harness::free_port(),
        };
        r.restart().await;
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub async fn restart(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is installed");
        self.child = Some(child);
        let port = self.port;
        eventually(
            "redis-server listens",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            },
        )
        .await;
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        if let Some(c) = &self.child {
            crate::harness::kill(c.id(), "STOP");
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) {
        if let Some(c) = &self.child {
            crate::harness::kill(c.id(), "CONT");
        }
    }

    /// What `redis-cli` prints for `args`, trimmed.
    pub fn query(&self, args: &[&str]) -> String {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn cli(&self, args: &[&str]) {
        let ok = std::process::Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The shared Redis on 127.0.0.1:6379 when one runs there, else a private one.
pub async fn shared_redis() -> (String, Option<PrivateRedis>) {
    if tokio::net::TcpStream::connect("127.0.0.1:6379")
        .await
        .is_ok()
    {
        ("redis://127.0.0.1:6379/".into(), None)
    } else {
        let r = PrivateRedis::start().await;
        (r.url(), Some(r))
    }
}

/// Waits until `gateways` gateways hold their three Redis connections each (the limits'
/// and the headroom link's publisher and subscription), beside `redis-cli`'s own.
pub async fn connected(redis: &PrivateRedis, gateways: usize) {
    eventually(
        "the gateways connected to Redis",
        Duration::from_secs(10),
        || async {
            (redis.query(&["CLIENT", "LIST"]).lines().count() > 3 * gateways).then_some(())
        },
    )
    .await;
}
