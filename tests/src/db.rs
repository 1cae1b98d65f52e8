//! A fresh database per test, cloned from a template migrated once per schema version.

use std::time::Duration;

use sqlx::{
    ConnectOptions, Connection, PgConnection, PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

/// The server the tests use; the database part of the URL is ignored.
pub fn server_options() -> PgConnectOptions {
    let url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    url.parse::<PgConnectOptions>().expect("DATABASE_URL is a Postgres URL").database("postgres")
}

pub async fn admin_connection() -> PgConnection {
    server_options().connect().await.expect("Postgres is reachable at DATABASE_URL (scripts/test starts it)")
}

/// Template name derived from the migrations, so a schema change builds a new template.
fn template_name() -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for migration in levelup_common::db::MIGRATOR.iter() {
        for byte in migration.checksum.iter().chain(migration.version.to_le_bytes().iter()) {
            hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3);
        }
    }
    format!("levelup_tpl_{hash:016x}")
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn ensure_template(admin: &mut PgConnection) -> String {
    let template = template_name();
    // One builder at a time across all test processes.
    sqlx::query("SELECT pg_advisory_lock(74657365)").execute(&mut *admin).await.unwrap();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&template)
        .fetch_one(&mut *admin)
        .await
        .unwrap();
    if !exists {
        let building = format!("{template}_building");
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote(&building))))
            .execute(&mut *admin)
            .await
            .unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", quote(&building))))
            .execute(&mut *admin)
            .await
            .unwrap();
        let pool =
            PgPoolOptions::new().max_connections(1).connect_with(server_options().database(&building)).await.unwrap();
        levelup_common::db::migrate(&pool).await.expect("migrations apply to an empty database");
        pool.close().await;
        sqlx::query(sqlx::AssertSqlSafe(format!("ALTER DATABASE {} RENAME TO {}", quote(&building), quote(&template))))
            .execute(&mut *admin)
            .await
            .unwrap();
    }
    sqlx::query("SELECT pg_advisory_unlock(74657365)").execute(&mut *admin).await.unwrap();
    template
}

/// A migrated database of its own, dropped when the value is dropped.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let mut admin = admin_connection().await;
        let template = ensure_template(&mut admin).await;
        let name = format!("levelup_t_{}", uuid::Uuid::new_v4().simple());
        let create = format!("CREATE DATABASE {} TEMPLATE {}", quote(&name), quote(&template));
        // Cloning fails while another session is connected to the template (e.g. a concurrent
        // clone's bookkeeping); it is brief, so retry.
        let mut tries = 0;
        loop {
            match sqlx::query(sqlx::AssertSqlSafe(create.clone())).execute(&mut admin).await {
                Ok(_) => break,
                Err(err) if tries < 50 && err.to_string().contains("being accessed by other users") => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("creating test database: {err}"),
            }
        }
        admin.close().await.ok();
        let options = server_options().database(&name);
        let url = database_url(&name);
        let pool = PgPoolOptions::new().max_connections(10).connect_with(options).await.unwrap();
        Self { name, url, pool }
    }
}

/// `DATABASE_URL` with the database name replaced.
pub fn database_url(name: &str) -> String {
    let base =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let mut url = url::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; use a thread of its own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                // WITH (FORCE) ends the pool's sessions; the pool itself belongs to the test's
                // runtime, which is blocked here, so it cannot be closed gracefully.
                if let Ok(mut admin) = server_options().connect().await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote(&name)
                    )))
                    .execute(&mut admin)
                    .await;
                }
            });
        })
        .join();
    }
}
