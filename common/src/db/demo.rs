//! Demo data for `scripts/dev`: challenges for three levels and a handful of subscribers whose
//! addresses use the reserved `.localhost` domain. Idempotent: running it again adds nothing.

use sqlx::PgPool;

pub struct Seeded {
    pub challenges: u64,
    pub subscribers: u64,
}

const CHALLENGES: &[(i16, &str, &str)] = &[
    (1, "Hello, loop", "Write a program that prints the numbers 1 to 100, one per line."),
    (1, "FizzBuzz", "Print 1 to 100, but Fizz for multiples of 3, Buzz for 5, FizzBuzz for both."),
    (1, "Reverse a string", "Write a function that returns its input string reversed, without a library call."),
    (2, "Word counter", "Read a text and print the ten most frequent words with their counts."),
    (2, "Balanced brackets", "Decide whether a string of ()[]{} is balanced."),
    (2, "Run-length encoding", "Encode `aaabcc` as `3a1b2c` and decode it back."),
    (3, "LRU cache", "Implement a least-recently-used cache with O(1) get and put."),
    (3, "Rate limiter", "Implement a token-bucket rate limiter that allows bursts of 10 and 5 per second."),
    (3, "Topological sort", "Order tasks so every task comes after its dependencies; report cycles."),
];

pub async fn seed(pool: &PgPool) -> anyhow::Result<Seeded> {
    let mut challenges = 0;
    for (position, (level, title, body)) in CHALLENGES.iter().enumerate() {
        challenges += sqlx::query(
            "INSERT INTO challenges (level, position, title, body) VALUES ($1, $2, $3, $4)
             ON CONFLICT (level, position) DO NOTHING",
        )
        .bind(level)
        .bind(position as i32)
        .bind(title)
        .bind(body)
        .execute(pool)
        .await?
        .rows_affected();
    }
    let mut subscribers = 0;
    for n in 1..=12_i16 {
        // Every fourth demo subscriber has not taken the questionnaire yet.
        let level = if n % 4 == 0 { None } else { Some(n % 3 + 1) };
        subscribers += sqlx::query(
            "INSERT INTO subscribers (email, first_name, level) VALUES ($1, $2, $3)
             ON CONFLICT ((lower(email))) DO NOTHING",
        )
        .bind(format!("demo{n}@levelup.localhost"))
        .bind(format!("Demo {n}"))
        .bind(level)
        .execute(pool)
        .await?
        .rows_affected();
    }
    Ok(Seeded { challenges, subscribers })
}
