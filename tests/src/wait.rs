//! Waiting on a condition with a deadline, instead of sleeping and hoping.

use std::{future::Future, time::Duration};

/// Polls `check` until it returns `Some`, failing the test with `what` after `deadline`.
pub async fn wait_until<T, F, Fut>(what: &str, deadline: Duration, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_until_explained(what, deadline, check, || async { String::new() }).await
}

/// [`wait_until`], and on timeout the failure also says what `explain` finds (the state of the
/// system the condition waited on), so a rare failure in CI can be understood from its log.
pub async fn wait_until_explained<T, F, Fut, E, EFut>(what: &str, deadline: Duration, mut check: F, explain: E) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
    E: FnOnce() -> EFut,
    EFut: Future<Output = String>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() >= deadline {
            let state = explain().await;
            panic!("timed out after {deadline:?} waiting for {what}\n{state}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}
