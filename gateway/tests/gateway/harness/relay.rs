//! A TCP fault relay in front of a server (PostgreSQL, a provider) that the test can
//! delay, blackhole, reset or stop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

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
