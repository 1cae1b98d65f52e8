//! Zero-downtime deploys, proven (README, "Zero-downtime deploys").
//!
//! - The API drill: two `levelup-api` processes behind HAProxy (health check on `/readyz`, retries
//!   on the other replica), steady load from a bounded client; each replica in turn gets SIGTERM,
//!   exits, and is replaced by a new process on the same address: not one request fails.
//! - The worker drill: a weekly run in progress with two `levelup-worker` processes, each replaced
//!   in turn with SIGTERM mid-run: every subscriber gets exactly one email.
//! - How the API drains, seen up close: `/readyz` answers 503 at once, everything else is still
//!   served, each response closing its connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use levelup_common::{db::weekly_runs, domain::IsoWeek, runtime::shutdown::CancellationToken};
use levelup_tests::{
    TestEnv,
    fake_ses::{FakeSes, Faults},
    fixtures,
    haproxy::{self, Haproxy},
    iso_week,
    processes::{ChildProcess, spawn_api},
    wait_until,
};

/// The drill's drain period: well above HAProxy's `CHECK_INTERVAL × CHECK_FALL` (0.4 s), so the
/// proxy takes a replica out of rotation while it still serves.
const DRAIN_SECS: u64 = 4;
const STARTUP: Duration = Duration::from_secs(60);
/// Concurrent requests of the load (each client sends one request at a time, paced).
const CLIENTS: usize = 4;
const PACE: Duration = Duration::from_millis(10);

/// What the load saw: answered requests, and every failure (status or transport error).
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Steady load through the proxy: `CLIENTS` clients, each sending one request at a time, paced,
/// in turn `GET /healthz`, `GET /v1/level` with a link token, and `POST /v1/questionnaire` with a
/// fresh `Idempotency-Key` (so a retry of it by the proxy can never apply it twice).
struct Load {
    tally: Arc<Tally>,
    stop: CancellationToken,
    clients: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(base_url: String, token: String) -> Self {
        let tally = Arc::new(Tally::default());
        let stop = CancellationToken::new();
        let clients = (0..CLIENTS)
            .map(|n| {
                let (tally, stop, base_url, token) = (tally.clone(), stop.clone(), base_url.clone(), token.clone());
                tokio::spawn(async move {
                    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
                    let mut pace = tokio::time::interval(PACE);
                    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    for i in n.. {
                        if stop.is_cancelled() {
                            break;
                        }
                        pace.tick().await;
                        let (what, request) = match i % 3 {
                            0 => ("GET /healthz", http.get(format!("{base_url}/healthz"))),
                            1 => ("GET /v1/level", http.get(format!("{base_url}/v1/level?token={token}"))),
                            _ => (
                                "POST /v1/questionnaire",
                                http.post(format!("{base_url}/v1/questionnaire?token={token}"))
                                    .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
                                    .json(&serde_json::json!({"answers": [true, true, true, false, false, false]})),
                            ),
                        };
                        match request.send().await {
                            Ok(response) if response.status().is_success() => {
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok(response) => {
                                let status = response.status();
                                let body = response.text().await.unwrap_or_default();
                                tally.failures.lock().unwrap().push(format!("{what}: {status} {body}"));
                            }
                            Err(err) => tally.failures.lock().unwrap().push(format!("{what}: {err:#}")),
                        }
                    }
                })
            })
            .collect();
        Self { tally, stop, clients }
    }

    fn served(&self) -> u64 {
        self.tally.ok.load(Ordering::Relaxed)
    }

    /// Waits until `more` further requests have been answered: the load is flowing.
    async fn flows(&self, more: u64) {
        let target = self.served() + more;
        wait_until(&format!("{more} more requests answered"), Duration::from_secs(60), || async {
            (self.served() >= target).then_some(())
        })
        .await;
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.cancel();
        for client in self.clients {
            client.await.expect("load client panicked");
        }
        let failures = self.tally.failures.lock().unwrap().clone();
        (self.tally.ok.load(Ordering::Relaxed), failures)
    }
}

fn spawn_replica(env: &TestEnv, address: SocketAddr) -> ChildProcess {
    let mut vars = env.vars.clone();
    vars.insert("LEVELUP_API_BIND".to_owned(), address.to_string());
    ChildProcess::spawn("levelup-api", &["serve"], &vars)
}

async fn wait_ready(address: SocketAddr) {
    let http = reqwest::Client::new();
    wait_until(&format!("the replica on {address} to be ready"), STARTUP, || async {
        let response = http.get(format!("http://{address}/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_both_api_replicas_under_load_fails_no_request() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_DRAIN_SECS", DRAIN_SECS.to_string())
        // One subscriber sends all the load: lift its rate limit.
        .set("LEVELUP_API_RATE_PER_SECOND", "100000")
        .set("LEVELUP_API_BURST", "100000");
    assert!(
        Duration::from_secs(DRAIN_SECS) > haproxy::CHECK_INTERVAL * haproxy::CHECK_FALL * 2,
        "the drain must outlast the proxy's health checks"
    );
    let (_, token) = env.subscriber_with_access_token("drill@example.com", 1).await;

    let addresses: HashMap<&str, SocketAddr> =
        ["a", "b"].into_iter().map(|name| (name, SocketAddr::from(([127, 0, 0, 1], haproxy::free_port())))).collect();
    let mut replicas: HashMap<&str, ChildProcess> =
        addresses.iter().map(|(name, address)| (*name, spawn_replica(&env, *address))).collect();
    for address in addresses.values() {
        wait_ready(*address).await;
    }
    let proxy = Haproxy::start(&[("a", addresses["a"]), ("b", addresses["b"])]).await;
    for name in ["a", "b"] {
        proxy.wait_for_status(name, "UP", STARTUP).await;
    }

    let load = Load::start(proxy.url(""), token);
    load.flows(100).await;
    let mut during_replacement = Vec::new();
    for name in ["a", "b"] {
        let before = load.served();
        let old = replicas.get_mut(name).unwrap();
        old.send_sigterm();
        // The replica fails /readyz at once: the proxy takes it out while it still serves.
        proxy.wait_for_status(name, "DOWN", Duration::from_secs(30)).await;
        assert!(
            old.child.try_wait().unwrap().is_none(),
            "replica {name} exited before the proxy took it out of rotation: the drain is too short"
        );
        let status = old.exited(Duration::from_secs(DRAIN_SECS + 60)).await;
        assert!(status.success(), "replica {name} exits 0 after SIGTERM: {status:?}");
        // Its replacement, on the same address (the proxy's configuration does not change).
        replicas.insert(name, spawn_replica(&env, addresses[name]));
        wait_ready(addresses[name]).await;
        proxy.wait_for_status(name, "UP", STARTUP).await;
        during_replacement.push(load.served() - before);
        load.flows(100).await;
    }
    let (served, failures) = load.stop().await;
    let servers = proxy.servers().await;

    eprintln!(
        "zero-downtime drill: {served} requests answered, {} failed; answered while a replaced: {}, while b \
         replaced: {}; HAProxy retries {:?}, redispatches {:?}",
        failures.len(),
        during_replacement[0],
        during_replacement[1],
        servers.iter().map(|s| (s.name.as_str(), s.retries)).collect::<Vec<_>>(),
        servers.iter().map(|s| (s.name.as_str(), s.redispatches)).collect::<Vec<_>>(),
    );
    assert!(failures.is_empty(), "{} requests failed during the deploy: {failures:#?}", failures.len());
    assert!(
        during_replacement.iter().all(|n| *n > 0),
        "requests were answered while each replica was replaced: {during_replacement:?}"
    );
    assert!(served >= 300, "the load ran throughout: {served} requests");
    // The proxy's retries are the safety net, not the mechanism: the drain alone kept every
    // request off the replica that was going away (without it the same drill needs ~15 retries).
    assert!(
        servers.iter().all(|s| s.retries == 0 && s.redispatches == 0),
        "the proxy had to retry requests: {servers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_draining_api_fails_readyz_but_serves_everything_else_then_stops() {
    let mut env = TestEnv::new().await;
    env.set("LEVELUP_DRAIN_SECS", "5");
    let api = spawn_api(env.config());
    let http = reqwest::Client::new();
    wait_until("the API to be ready", STARTUP, || async {
        let response = http.get(api.url("/readyz")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let healthz = http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.headers().get("connection"), None, "kept alive while serving");

    api.shutdown.cancel();
    let ready = http.get(api.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.headers().get("connection").unwrap(), "close", "no connection is reused while draining");
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap(), serde_json::json!({"status": "draining"}));
    let healthz = http.get(api.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200, "still serving while draining");
    assert_eq!(healthz.headers().get("connection").unwrap(), "close");

    let address = api.address;
    api.task.await.expect("API task").expect("the API stops cleanly after the drain");
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "no longer accepting once stopped");
}

const WEEK: &str = "2026-W47";

/// The worker drill uses the fake SES, not the outbox: it records every `SendEmail`, so a second
/// send shows, whereas the outbox names its file after the delivery and a resend would overwrite it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replacing_both_workers_mid_run_loses_nothing_and_sends_nothing_twice() {
    const SUBSCRIBERS: i64 = 3000;
    let ses = FakeSes::start().await;
    // Sends take a while, so some are always in flight when a worker gets SIGTERM.
    ses.set_faults(Faults { latency: Duration::from_millis(40), ..Faults::default() });
    let env = TestEnv::with_fake_ses(&ses).await;
    let pool = &env.db.pool;
    fixtures::challenges(pool, 3, 2).await;
    fixtures::subscribers(pool, SUBSCRIBERS, 3).await;
    weekly_runs::create(pool, IsoWeek::parse(WEEK).unwrap(), "test").await.unwrap();
    let mut workers: Vec<ChildProcess> =
        (0..2).map(|_| ChildProcess::spawn("levelup-worker", &[], &env.vars)).collect();
    let _scheduler = ChildProcess::spawn("levelup-scheduler", &[], &env.vars);

    let sending = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM deliveries WHERE state = 'sending'")
            .fetch_one(pool)
            .await
            .unwrap()
    };
    let mut replaced_at = Vec::new();
    for (i, threshold) in [SUBSCRIBERS / 4, SUBSCRIBERS / 2].into_iter().enumerate() {
        let sent =
            wait_until(&format!("{threshold} emails sent, more in flight"), Duration::from_secs(180), || async {
                let sent = ses.accepted().len() as i64;
                (sent >= threshold && sending().await > 0).then_some(sent)
            })
            .await;
        replaced_at.push(sent);
        workers[i].send_sigterm();
        let status = workers[i].exited(Duration::from_secs(60)).await;
        assert!(status.success(), "worker {i} exits 0 after SIGTERM: {status:?}");
        workers[i] = ChildProcess::spawn("levelup-worker", &[], &env.vars);
    }
    let run = env.run_completed(WEEK, Duration::from_secs(300)).await;

    let requests = ses.requests();
    let mut per_recipient: HashMap<&str, usize> = HashMap::new();
    for request in &requests {
        *per_recipient.entry(request.to[0].as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_recipient.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "worker drill: workers replaced at {replaced_at:?} of {SUBSCRIBERS} sent; {} SendEmail requests",
        requests.len()
    );
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(per_recipient.len() as i64, SUBSCRIBERS, "every subscriber got an email");
    assert_eq!(requests.len() as i64, SUBSCRIBERS, "one SendEmail per subscriber, none retried");
    let progress = weekly_runs::progress(pool, iso_week(WEEK)).await.unwrap();
    assert_eq!((run.total, progress.sent, progress.failed), (SUBSCRIBERS, SUBSCRIBERS, 0));
    let ambiguous: i64 =
        sqlx::query_scalar("SELECT count(*) FROM deliveries WHERE ambiguous").fetch_one(pool).await.unwrap();
    assert_eq!(ambiguous, 0, "a graceful stop leaves no send in doubt");
}
