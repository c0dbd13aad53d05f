//! Background services (the log writer's flushes, partition upkeep, `last_used_at`, the
//! change listener) run on their own threads beside the request threads, on the same
//! cores. A flush of a few hundred log rows is a couple of milliseconds of CPU in one go,
//! and at the same priority the scheduler lets it run out its slice while a request
//! thread that has just been woken waits (measured: a request held 1.9 ms behind a
//! flush). These services therefore run their threads at a lower priority (nice
//! [`BACKGROUND_NICE`]), so a waking request thread preempts them. Under full load they
//! still get their share — at nice 10 about a tenth of a core beside one busy request
//! thread, several times what the log writer needs.
//!
//! The same concern, keeping work that is not a request's off the request threads, puts
//! the database pool's connections on a thread of their own ([`database_driver`]).

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

/// The nice value of background threads (0 is the default, 19 the lowest priority).
pub const BACKGROUND_NICE: i32 = 10;

/// Runs a background service on a thread lowered to [`BACKGROUND_NICE`].
pub struct Lowered<S>(pub S);

#[async_trait]
impl<S: BackgroundService + Send + Sync> BackgroundService for Lowered<S> {
    async fn start(&self, shutdown: ShutdownWatch) {
        // Each Pingora background service has its own runtime thread: lowering the
        // calling thread lowers this service, its timers and the database connections it
        // opens.
        lower_this_thread();
        self.0.start(shutdown).await;
    }
}

/// Lowers the calling thread's priority to [`BACKGROUND_NICE`]; never raises it. Best
/// effort: where the platform has no per-thread nice value or refuses the change, the
/// thread keeps its priority.
pub fn lower_this_thread() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        // Only ever lowers: a gateway started at a lower priority stays there.
        let current = rustix::process::getpriority_process(Some(tid)).unwrap_or(0);
        if current >= BACKGROUND_NICE {
            return;
        }
        if let Err(e) = rustix::process::setpriority_process(Some(tid), BACKGROUND_NICE) {
            tracing::debug!(error = %e, "could not lower a background thread's priority");
        }
    }
}

/// Starts the thread that opens and drives the database pool's connections, and returns
/// its runtime. Without it a pooled connection is driven by whichever runtime first opened
/// it — often a request thread (a key lookup on a cache miss) — which then also writes
/// every log flush that later borrows the connection and reads its answer, between two
/// requests. The thread keeps the default priority: a cache miss on the request path
/// waits on it.
pub fn database_driver() -> std::io::Result<tokio::runtime::Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("db io".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime {
                Ok(runtime) => {
                    let _ = tx.send(Ok(runtime.handle().clone()));
                    runtime.block_on(std::future::pending::<()>());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the database driver thread did not start"))?
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let here = rustix::process::getpriority_process(None).ok();
        let lowered = std::thread::spawn(|| {
            lower_this_thread();
            rustix::process::getpriority_process(Some(rustix::thread::gettid())).ok()
        })
        .join()
        .ok()
        .flatten();
        assert_eq!(lowered, here.map(|p| p.max(BACKGROUND_NICE)));
        assert_eq!(rustix::process::getpriority_process(None).ok(), here);
    }
}
