//! Starting LevelUp in-process (the API) or as OS processes (the binaries).

use std::{
    collections::HashMap,
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use levelup_common::{Config, runtime::shutdown::CancellationToken};
use tokio::task::JoinHandle;

/// An API server running in this process on a random port.
pub struct ApiHandle {
    pub address: SocketAddr,
    pub base_url: String,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl ApiHandle {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.task.await.expect("API task panicked")
    }
}

pub fn spawn_api(config: Config) -> ApiHandle {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(levelup_api::run(config, listener, shutdown.clone()));
    ApiHandle { address, base_url: format!("http://{address}"), shutdown, task }
}

/// Directory of the workspace's built binaries (`scripts/test` builds them first), or
/// `LEVELUP_BIN_DIR` (e.g. `target/release`, so a benchmark drives release binaries).
pub fn binary_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("LEVELUP_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/debug/deps/<test> → target/debug/<name>
        exe.parent().and_then(|p| p.parent()).expect("target dir").to_owned()
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: run `cargo build --workspace --bins` (scripts/test does)", path.display());
    path
}

/// A LevelUp binary running as a child process; killed (SIGKILL) when dropped.
pub struct ChildProcess {
    pub child: Child,
    pub name: String,
}

impl ChildProcess {
    pub fn spawn(binary: &str, args: &[&str], vars: &HashMap<String, String>) -> Self {
        let child = Command::new(binary_path(binary))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
        Self { child, name: binary.to_owned() }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(self.child.id() as i32)
    }

    /// SIGKILL: the process gets no chance to clean up.
    pub fn kill_hard(&mut self) {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM, without waiting (see [`ChildProcess::exited`]).
    pub fn send_sigterm(&self) {
        nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM).expect("send SIGTERM");
    }

    /// Waits (without blocking the runtime) until the process exits, at most `deadline`.
    pub async fn exited(&mut self, deadline: std::time::Duration) -> std::process::ExitStatus {
        let what = format!("{} (pid {}) to exit", self.name, self.child.id());
        crate::wait_until(&what, deadline, || std::future::ready(self.child.try_wait().expect("child status"))).await
    }

    /// SIGTERM, then wait for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        self.child.wait().expect("wait for child")
    }

    /// Runs a one-shot command to completion.
    pub fn run_to_end(binary: &str, args: &[&str], vars: &HashMap<String, String>) -> std::process::Output {
        Command::new(binary_path(binary))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(vars)
            .output()
            .unwrap_or_else(|e| panic!("running {binary}: {e}"))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_hard();
        }
    }
}
