//! A fresh Redis key namespace per test on the shared server, deleted when dropped.

pub fn server_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned())
}

pub struct TestRedis {
    pub namespace: String,
    pub client: redis::Client,
}

impl TestRedis {
    pub async fn new() -> Self {
        let client = redis::Client::open(server_url()).expect("REDIS_URL is a Redis URL");
        let namespace = format!("lt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        Self { namespace, client }
    }

    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        self.client
            .get_multiplexed_async_connection()
            .await
            .expect("Redis is reachable at REDIS_URL (scripts/test starts it)")
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let client = self.client.clone();
        let pattern = format!("{}*", self.namespace);
        let _ = std::thread::spawn(move || {
            let Ok(mut conn) = client.get_connection() else { return };
            let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(&mut conn).unwrap_or_default();
            for chunk in keys.chunks(500) {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(chunk).query(&mut conn);
            }
        })
        .join();
    }
}
