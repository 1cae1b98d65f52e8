//! The test kit itself: an in-process fleet that dies fails the test at once, with the cause.

use std::time::Duration;

use levelup_tests::{InProcessFleet, TestEnv, wait_until};

#[tokio::test]
#[should_panic(expected = "stopped by themselves while the test needed them")]
async fn an_in_process_worker_that_stops_fails_the_wait_with_its_error() {
    let mut env = TestEnv::new().await;
    // A port nobody listens on: the worker cannot reach its queue and gives up.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    env.set("REDIS_URL", format!("redis://127.0.0.1:{closed}/0"));
    let fleet = InProcessFleet::start(env.config(), 1, 0);
    wait_until("something the fleet never does", Duration::from_secs(30), || {
        fleet.assert_running();
        async { None::<()> }
    })
    .await;
}
