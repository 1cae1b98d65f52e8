//! What an operator meets first, tried as they would: the binaries' logs in a file or a pipe, a
//! settings mistake caught at start-up, links under a path, and `scripts/dev` with the cargo
//! target directory somewhere else.

use std::{collections::HashMap, path::Path, process::Command};

use levelup_tests::{TestEnv, processes::ChildProcess};

#[tokio::test]
async fn human_logs_written_to_a_pipe_carry_no_colour_codes() {
    let env = TestEnv::new().await;
    let mut vars = env.vars.clone();
    vars.insert("LEVELUP_LOG_FORMAT".into(), "human".into());
    vars.insert("LEVELUP_LOG".into(), "info".into());
    let out = ChildProcess::run_to_end("levelup-api", &["migrate"], &vars);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let logs = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(logs.contains("INFO"), "the migration logs at info: {logs}");
    assert!(!logs.contains('\u{1b}'), "no ANSI escape codes outside a terminal: {logs:?}");
}

#[tokio::test]
async fn a_claim_timeout_within_the_ses_timeout_stops_every_binary_with_one_line() {
    let env = TestEnv::new().await;
    let mut vars: HashMap<String, String> = env.vars.clone();
    vars.insert("LEVELUP_CLAIM_TIMEOUT_SECS".into(), "5".into());
    vars.insert("LEVELUP_SES_TIMEOUT_MS".into(), "60000".into());
    for binary in ["levelup-worker", "levelup-scheduler", "levelup-api"] {
        let out = ChildProcess::run_to_end(binary, &[], &vars);
        assert_eq!(out.status.code(), Some(2), "{binary} exits 2");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{binary}: one line: {stderr}");
        assert!(stderr.contains("LEVELUP_CLAIM_TIMEOUT_SECS"), "{binary}: {stderr}");
        assert!(stderr.contains("LEVELUP_SES_TIMEOUT_MS"), "{binary}: {stderr}");
    }
}

/// `scripts/dev` runs the binaries from wherever cargo put them: with `CARGO_TARGET_DIR` set, that
/// is not `target/debug`.
#[test]
fn scripts_find_the_binaries_where_cargo_builds_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let elsewhere = std::env::temp_dir().join(format!("levelup-target-{}", uuid::Uuid::new_v4().simple()));
    let out = Command::new("bash")
        .args(["-c", "source scripts/lib.sh && cargo_bin_dir"])
        .current_dir(root)
        .env("CARGO_TARGET_DIR", &elsewhere)
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), elsewhere.join("debug").to_string_lossy());
    let dev = std::fs::read_to_string(root.join("scripts/dev")).unwrap();
    assert!(dev.contains("BIN=\"$(cargo_bin_dir)\""), "scripts/dev asks cargo where the binaries are");
    assert!(!dev.contains("target/debug"), "scripts/dev assumes no target directory");
}
