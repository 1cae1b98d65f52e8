//! Runs [`Job`]s: one apalis worker per registered job, on its payload's queue with the queue's
//! concurrency, and what every run shares, written once:
//!
//! - a **tracked task**: the run is spawned on the process's task tracker, so a job whose apalis
//!   future is dropped (the queue backend failed, shutdown) still records its outcome, and
//!   shutdown waits for it up to the grace period;
//! - a **tracing span** `job` with the queue, the payload (ids only) and the worker's name;
//! - the **outcome metric** (see [`Queue::metric`]), and a warning for an error with what apalis
//!   will do about it ([`JobError`]: retry, or abort to the dead set).
//!
//! Either worker ending (shutdown, or its queue backend failing) stops the others.

use std::sync::Arc;

use anyhow::Context as _;
use apalis::prelude::{AbortError, BoxDynError, Data, WorkerBuilder, WorkerBuilderExt};
use apalis_redis::ConnectionManager;
use futures::future::BoxFuture;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use crate::{
    Config,
    jobs::{Job, Outcome, Payload, queue},
};

/// The jobs one worker process runs. Register each with [`Workers::add`], then [`Workers::run`].
pub struct Workers {
    config: Config,
    redis: ConnectionManager,
    /// The process's shutdown signal.
    shutdown: CancellationToken,
    /// Cancelled on shutdown, or when any worker ends: stops them all.
    stop_all: CancellationToken,
    in_flight: TaskTracker,
    running: Vec<BoxFuture<'static, anyhow::Result<()>>>,
}

/// What a run of `J` needs besides its payload; apalis hands it to [`handle`].
struct Runner<J> {
    job: Arc<J>,
    worker: Arc<str>,
    in_flight: TaskTracker,
}

impl<J> Clone for Runner<J> {
    fn clone(&self) -> Self {
        Self { job: Arc::clone(&self.job), worker: Arc::clone(&self.worker), in_flight: self.in_flight.clone() }
    }
}

impl Workers {
    pub fn new(config: &Config, redis: ConnectionManager, shutdown: CancellationToken) -> Self {
        Self {
            config: config.clone(),
            redis,
            stop_all: shutdown.child_token(),
            shutdown,
            in_flight: TaskTracker::new(),
            running: Vec::new(),
        }
    }

    /// Runs `job` on its payload's queue, under the worker name `<LEVELUP_WORKER_NAME>-<queue>`.
    pub fn add<J: Job>(&mut self, job: J) {
        let queue = <J::Payload as Payload>::QUEUE;
        let runner = Runner {
            job: Arc::new(job),
            worker: Arc::from(self.config.worker_name.as_str()),
            in_flight: self.in_flight.clone(),
        };
        let worker = WorkerBuilder::new(format!("{}-{}", self.config.worker_name, queue.name()))
            .backend(queue::storage::<J::Payload>(&self.config, self.redis.clone()))
            .concurrency(queue.concurrency(&self.config))
            .data(runner)
            .build(handle::<J>);
        let stop_all = self.stop_all.clone();
        self.running.push(Box::pin(async move {
            let stop = stop_all.clone().cancelled_owned();
            let result = worker
                .run_until(async move {
                    stop.await;
                    Ok::<(), std::io::Error>(())
                })
                .await
                .with_context(|| format!("{} worker failed", queue.name()));
            stop_all.cancel();
            result
        }));
    }

    /// Runs every registered job until shutdown (then lets the jobs in flight finish within
    /// `LEVELUP_SHUTDOWN_GRACE_SECS`) or until a worker ends on its own (its queue backend failed:
    /// then returns an error, so the process exits non-zero and its supervisor restarts it).
    pub async fn run(self) -> anyhow::Result<()> {
        let results = futures::future::join_all(self.running).await;
        let grace = self.config.shutdown_grace;
        if self.shutdown.is_cancelled() {
            tracing::info!(?grace, "draining in-flight jobs");
        }
        // Whatever ended the workers, let the jobs already running finish and record their outcome.
        self.in_flight.close();
        if tokio::time::timeout(grace, self.in_flight.wait()).await.is_err() {
            tracing::warn!(still_running = self.in_flight.len(), "grace period over with jobs still running");
        }
        results.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        // apalis ends a worker whose backend failed (e.g. Redis gone) as if it had finished: never
        // linger as a process that consumes nothing. Exit non-zero so the supervisor restarts us.
        anyhow::ensure!(
            self.shutdown.is_cancelled(),
            "worker stopped unexpectedly (queue backend failed); exiting to be restarted"
        );
        Ok(())
    }
}

/// One run of `J`, as apalis calls it.
async fn handle<J: Job>(payload: J::Payload, runner: Data<Runner<J>>) -> Result<(), BoxDynError> {
    let queue = <J::Payload as Payload>::QUEUE;
    let kind = payload.kind();
    let span = tracing::info_span!("job", queue = queue.name(), job = ?payload, worker = %runner.worker);
    let job = Arc::clone(&runner.job);
    let in_flight = metrics::gauge!("levelup_jobs_in_flight", "queue" => queue.name());
    in_flight.increment(1.0);
    let started = std::time::Instant::now();
    let result = runner.in_flight.spawn(async move { job.run(payload).await }.instrument(span.clone())).await;
    in_flight.decrement(1.0);
    metrics::histogram!("levelup_job_duration_seconds", "queue" => queue.name())
        .record(started.elapsed().as_secs_f64());
    let result = result
        .map_err(|join_error| -> BoxDynError { format!("{} job panicked: {join_error}", queue.name()).into() })?;
    let _in_span = span.enter();
    match result {
        Ok(outcome) => {
            let outcome_label = ("outcome", outcome.label());
            match kind {
                Some(kind) => metrics::counter!(queue.metric(), &[("job", kind), outcome_label]).increment(1),
                None => metrics::counter!(queue.metric(), &[outcome_label]).increment(1),
            }
            tracing::debug!(?outcome, "job done");
            Ok(())
        }
        Err(err) => {
            if err.retries() {
                tracing::warn!(error = %err, "job failed; apalis will retry it");
                Err(err.into())
            } else {
                tracing::error!(error = %err, "job failed for good; apalis moves it to the dead set");
                Err(Box::new(AbortError::new(err)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jobs::JobError;

    #[test]
    fn only_retryable_errors_are_retried_by_apalis() {
        let abort: BoxDynError = Box::new(AbortError::new(JobError::Abort(anyhow::anyhow!("bad payload"))));
        assert!(abort.downcast_ref::<AbortError>().is_some());
        let retry: BoxDynError = JobError::from(anyhow::anyhow!("db down")).into();
        assert!(retry.downcast_ref::<AbortError>().is_none());
        assert!(JobError::Retry(anyhow::anyhow!("x")).retries() && !JobError::Abort(anyhow::anyhow!("x")).retries());
    }
}
