//! HAProxy (Debian's `haproxy`, which `scripts/test` installs) in front of API replicas, on free
//! ports, with the settings the README's "Zero-downtime deploys" recommends: a health check on
//! `/readyz`, and retries on another replica for requests that hit a connection being closed.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::wait_until;

/// How often HAProxy checks a replica's `/readyz`, and after how many failures in a row it takes
/// the replica out of rotation. The drill's drain period must exceed `CHECK_INTERVAL × CHECK_FALL`.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(200);
pub const CHECK_FALL: u32 = 2;

/// A running HAProxy; killed when dropped.
pub struct Haproxy {
    child: Child,
    /// Where clients send requests.
    pub address: SocketAddr,
    /// The statistics page (CSV at `/stats;csv`).
    stats: SocketAddr,
    config: PathBuf,
}

/// One backend server as HAProxy sees it.
#[derive(Debug, Clone)]
pub struct ServerStats {
    pub name: String,
    /// `UP`, `DOWN`, `UP 1/2` (going down), `DOWN 1/2` (coming up), `MAINT`, …
    pub status: String,
    /// Requests retried (`wretr`) and redispatched to another server (`wredis`).
    pub retries: u64,
    pub redispatches: u64,
}

/// A port nothing listens on now (the OS picked it); the caller binds it next.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().unwrap().port()
}

/// The `haproxy` binary; a missing one fails the test (`scripts/test` installs it).
fn binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file());
    found.unwrap_or_else(|| panic!("haproxy is not installed: `apt-get install -y haproxy` (scripts/test installs it)"))
}

impl Haproxy {
    /// Starts HAProxy balancing over `servers` (`(name, address)`), and waits until it answers.
    pub async fn start(servers: &[(&str, SocketAddr)]) -> Self {
        let (address, stats) =
            (SocketAddr::from(([127, 0, 0, 1], free_port())), SocketAddr::from(([127, 0, 0, 1], free_port())));
        let config = std::env::temp_dir().join(format!("levelup-haproxy-{}.cfg", uuid::Uuid::new_v4().simple()));
        std::fs::write(&config, Self::config(address, stats, servers)).expect("write haproxy.cfg");
        let check = Command::new(binary()).arg("-c").arg("-q").arg("-f").arg(&config).output().expect("haproxy -c");
        assert!(check.status.success(), "invalid haproxy.cfg: {}", String::from_utf8_lossy(&check.stderr));
        let child = Command::new(binary())
            .arg("-db") // foreground, no daemon
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting haproxy");
        let mut proxy = Self { child, address, stats, config };
        wait_until("HAProxy to serve its statistics", Duration::from_secs(30), || {
            let exited = proxy.child.try_wait().expect("haproxy status");
            assert!(exited.is_none(), "haproxy exited at start: {exited:?}");
            server_stats(stats)
        })
        .await;
        proxy
    }

    /// The configuration: keep-alive to the replicas (HAProxy's default, and the hard case: a
    /// connection the replica closes may be picked for the next request), `/readyz` checked every
    /// [`CHECK_INTERVAL`], [`CHECK_FALL`] failures take a replica out; a request that could not
    /// be delivered (refused, or the connection closed with no answer) is retried, each time on
    /// another replica.
    fn config(address: SocketAddr, stats: SocketAddr, servers: &[(&str, SocketAddr)]) -> String {
        let inter = CHECK_INTERVAL.as_millis();
        let mut text = format!(
            "global
    maxconn 512

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 10s
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response

frontend stats
    bind {stats}
    stats enable
    stats uri /stats

frontend api
    bind {address}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /readyz
    http-check expect status 200
    default-server check inter {inter}ms fastinter {inter}ms downinter {inter}ms fall {CHECK_FALL} rise 1
"
        );
        for (name, server) in servers {
            text.push_str(&format!("    server {name} {server}\n"));
        }
        text
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// The backend servers as HAProxy sees them now.
    pub async fn servers(&self) -> Vec<ServerStats> {
        server_stats(self.stats).await.expect("HAProxy's statistics")
    }

    /// Waits until HAProxy reports `server` with exactly `status` (`UP` or `DOWN`).
    pub async fn wait_for_status(&self, server: &str, status: &str, deadline: Duration) {
        wait_until(&format!("HAProxy to see {server} {status}"), deadline, || async {
            self.servers().await.iter().any(|s| s.name == server && s.status == status).then_some(())
        })
        .await;
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

/// The `replicas` backend's servers from the statistics page at `stats` (`None` if unreachable).
async fn server_stats(stats: SocketAddr) -> Option<Vec<ServerStats>> {
    let csv = reqwest::get(format!("http://{stats}/stats;csv")).await.ok()?.text().await.ok()?;
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (px, sv, status, wretr, wredis) =
        (column("pxname")?, column("svname")?, column("status")?, column("wretr")?, column("wredis")?);
    Some(
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.get(px) == Some(&"replicas") && !matches!(f.get(sv), Some(&"BACKEND" | &"FRONTEND")))
            .map(|f| ServerStats {
                name: f[sv].to_owned(),
                status: f[status].to_owned(),
                retries: f[wretr].parse().unwrap_or(0),
                redispatches: f[wredis].parse().unwrap_or(0),
            })
            .collect(),
    )
}
