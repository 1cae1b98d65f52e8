//! Test data: challenges per level and subscribers in bulk.

use sqlx::PgPool;

/// `per_level` challenges at each of levels `1..=levels`, titled `L{level}-C{position}`.
pub async fn challenges(pool: &PgPool, levels: i16, per_level: i32) {
    sqlx::query(
        "INSERT INTO challenges (level, position, title, body)
         SELECT l, p, format('L%s-C%s', l, p), format('Body of level %s challenge %s', l, p)
         FROM generate_series(1, $1::int) l, generate_series(0, $2 - 1) p",
    )
    .bind(i32::from(levels))
    .bind(per_level)
    .execute(pool)
    .await
    .unwrap();
}

/// `count` active subscribers `user{n}@example.com`, level `n % levels + 1`.
pub async fn subscribers(pool: &PgPool, count: i64, levels: i16) {
    sqlx::query(
        "INSERT INTO subscribers (email, first_name, level)
         SELECT format('user%s@example.com', n), format('User %s', n), (n % $2 + 1)::smallint
         FROM generate_series(1, $1::bigint) n",
    )
    .bind(count)
    .bind(i64::from(levels))
    .execute(pool)
    .await
    .unwrap();
}

/// The level `subscribers` gave `user{n}@example.com`.
pub fn level_of(email: &str, levels: i16) -> i16 {
    let n: i64 = email.trim_start_matches("user").split('@').next().unwrap().parse().unwrap();
    (n % i64::from(levels) + 1) as i16
}
