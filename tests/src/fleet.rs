//! The worker and the scheduler in this process: the same `run(config, shutdown)` the binaries
//! call, in tokio tasks on the test's configuration, stopped by cancelling their token.
//!
//! For tests about what the fleet does (the emails, the ledger, the syncs). Tests about what a
//! process does — killed, sent SIGTERM, restarted, its log output, its memory — start the binaries
//! ([`crate::processes::ChildProcess`]).
//!
//! The mail transport must be the local outbox: the SES transport takes its AWS credentials from
//! the process environment (the SDK's default chain), which a test cannot set for itself, so tests
//! against the fake SES start worker processes.

use std::{
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use levelup_common::{Config, config::MailTransportKind, runtime::shutdown::CancellationToken};
use tokio::task::JoinHandle;

/// Workers and schedulers running in this process; stopped (without waiting) when dropped, so a
/// failing test leaves nothing running.
pub struct InProcessFleet {
    config: Config,
    shutdown: CancellationToken,
    tasks: Vec<(String, JoinHandle<anyhow::Result<()>>)>,
    /// How each task that has ended ended, written by the task itself: read while the test waits.
    ended: Arc<Mutex<Vec<String>>>,
}

impl InProcessFleet {
    /// Nothing running yet: add workers and schedulers with [`Self::add_worker`] and
    /// [`Self::add_scheduler`].
    pub fn new(config: Config) -> Self {
        assert!(
            matches!(config.mail_transport, MailTransportKind::Outbox { .. })
                || std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
            "an in-process worker sends through SES with this process's AWS credentials, and it has none: \
             use the outbox (TestEnv::with_outbox) or worker processes"
        );
        Self { config, shutdown: CancellationToken::new(), tasks: Vec::new(), ended: Arc::default() }
    }

    /// `workers` workers and `schedulers` schedulers, each with a name of its own (the scheduler's
    /// lease owner is derived from it, so replicas really race).
    pub fn start(config: Config, workers: usize, schedulers: usize) -> Self {
        let mut fleet = Self::new(config);
        for _ in 0..workers {
            fleet.add_worker();
        }
        for _ in 0..schedulers {
            fleet.add_scheduler();
        }
        fleet
    }

    pub fn add_worker(&mut self) -> &mut Self {
        let config = self.config_named("worker");
        let name = config.worker_name.clone();
        let task = tokio::spawn(record_end(
            name.clone(),
            self.ended.clone(),
            levelup_worker::run(config, self.shutdown.clone()),
        ));
        self.tasks.push((name, task));
        self
    }

    pub fn add_scheduler(&mut self) -> &mut Self {
        let config = self.config_named("scheduler");
        let name = config.worker_name.clone();
        let shutdown = self.shutdown.clone();
        let ended = self.ended.clone();
        let task_name = name.clone();
        // On a runtime of its own: rustc cannot prove the scheduler's future `Send` (a known
        // limitation with higher-ranked lifetimes in async fns), which `tokio::spawn` requires.
        let task = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(record_end(task_name, ended, levelup_scheduler::run(config, shutdown)))
        });
        self.tasks.push((name, task));
        self
    }

    fn config_named(&self, role: &str) -> Config {
        let mut config = self.config.clone();
        config.worker_name = format!("in-process-{role}-{}-{}", self.tasks.len(), uuid::Uuid::new_v4().simple());
        config
    }

    /// What `queue` holds in Redis now, for a failure message: jobs waiting, scheduled (with
    /// their due times), in flight per worker (with the worker's last heartbeat), finished and
    /// not swept. For the failures no assertion explains (a job that never ran).
    pub async fn describe_queue(&self, queue: levelup_common::jobs::Queue) -> String {
        let config = levelup_common::jobs::queue::queue_config(queue, &self.config);
        let mut conn = match levelup_common::runtime::redis_conn::connect(&self.config).await {
            Ok(conn) => conn,
            Err(err) => return format!("Redis unreachable: {err:#}"),
        };
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
        let read = async {
            let waiting: Vec<String> =
                redis::cmd("LRANGE").arg(config.active_jobs_list()).arg(0).arg(50).query_async(&mut conn).await?;
            let scheduled: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(config.scheduled_jobs_set())
                .arg(0)
                .arg(50)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            let workers: Vec<(String, f64)> = redis::cmd("ZRANGE")
                .arg(config.workers_set())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut conn)
                .await?;
            let mut inflight = Vec::new();
            for (worker, _) in &workers {
                let key = format!("{}:{worker}", config.inflight_jobs_set());
                let members: Vec<String> = redis::cmd("SMEMBERS").arg(key).query_async(&mut conn).await?;
                inflight.push((worker.clone(), members));
            }
            let done: u64 = redis::cmd("SCARD").arg(config.done_jobs_set()).query_async(&mut conn).await?;
            let dead: u64 = redis::cmd("SCARD").arg(config.dead_jobs_set()).query_async(&mut conn).await?;
            Ok::<_, redis::RedisError>(format!(
                "queue {} at {now_ms} ms: waiting {waiting:?}; scheduled {scheduled:?}; workers (last beat) {workers:?}; \
                 in flight {inflight:?}; done {done}; dead {dead}",
                config.queue.as_ref()
            ))
        };
        read.await.unwrap_or_else(|err| format!("reading the queue failed: {err}"))
    }

    /// Panics, with how they ended, if a worker or scheduler has stopped before [`Self::stop`];
    /// call it while waiting, so a dead fleet fails the test at once rather than at the deadline.
    pub fn assert_running(&self) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let stopped: Vec<&str> =
            self.tasks.iter().filter(|(_, task)| task.is_finished()).map(|(name, _)| name.as_str()).collect();
        assert!(
            stopped.is_empty(),
            "{stopped:?} stopped by themselves while the test needed them: {:?}",
            self.ended.lock().unwrap()
        );
    }

    /// Cancels everything and waits for each to finish its in-flight work (within the configured
    /// grace period, plus a margin); panics if one failed or did not stop.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        let deadline = self.config.shutdown_grace + Duration::from_secs(10);
        for (name, task) in std::mem::take(&mut self.tasks) {
            match tokio::time::timeout(deadline, task).await {
                Err(_) => panic!("{name} did not stop within {deadline:?} of the shutdown"),
                Ok(Err(join)) => panic!("{name} panicked: {join}"),
                Ok(Ok(Err(err))) => panic!("{name} failed: {err:#}"),
                Ok(Ok(Ok(()))) => {}
            }
        }
    }
}

impl Drop for InProcessFleet {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs `task`, then notes in `ended` how it ended. (A panic is printed by the panic hook and
/// reported by [`InProcessFleet::stop`].)
async fn record_end(
    name: String,
    ended: Arc<Mutex<Vec<String>>>,
    task: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let result = task.await;
    let how = match &result {
        Ok(()) => format!("{name}: returned without being stopped"),
        Err(err) => format!("{name}: {err:#}"),
    };
    ended.lock().unwrap().push(how);
    result
}
