//! The enums of `levelup_common::domain::states` and the `CHECK (col IN (…))` constraints of the
//! migrated schema name the same values. A migration that adds a state the code does not know (or
//! an enum variant the database refuses) fails here, not in production on the first such row.

use std::collections::BTreeSet;

use levelup_common::domain::states::{
    DeadLetterQueue, DeliveryKind, DeliveryState, LevelChangeReason, RunAction, RunStatus, SubscriberStatus,
    SuppressionReason, SyncMode, SyncStatus, TestSendState, WebhookSource, WritebackState,
};
use levelup_tests::TestDb;

/// The names an enum stores.
fn names<T: Copy>(all: &[T], as_str: fn(T) -> &'static str) -> BTreeSet<String> {
    all.iter().map(|v| as_str(*v).to_owned()).collect()
}

/// (enum name as declared in `states.rs`, table, column, the enum's names).
fn enums() -> Vec<(&'static str, &'static str, &'static str, BTreeSet<String>)> {
    vec![
        ("SubscriberStatus", "subscribers", "status", names(SubscriberStatus::ALL, SubscriberStatus::as_str)),
        ("DeliveryState", "deliveries", "state", names(DeliveryState::ALL, DeliveryState::as_str)),
        ("DeliveryKind", "deliveries", "kind", names(DeliveryKind::ALL, DeliveryKind::as_str)),
        ("RunStatus", "weekly_runs", "status", names(RunStatus::ALL, RunStatus::as_str)),
        ("RunAction", "run_events", "action", names(RunAction::ALL, RunAction::as_str)),
        ("SyncStatus", "shopify_syncs", "status", names(SyncStatus::ALL, SyncStatus::as_str)),
        ("SyncMode", "shopify_syncs", "mode", names(SyncMode::ALL, SyncMode::as_str)),
        ("WritebackState", "shopify_writebacks", "state", names(WritebackState::ALL, WritebackState::as_str)),
        ("SuppressionReason", "suppressions", "reason", names(SuppressionReason::ALL, SuppressionReason::as_str)),
        ("LevelChangeReason", "level_history", "reason", names(LevelChangeReason::ALL, LevelChangeReason::as_str)),
        ("WebhookSource", "received_webhooks", "source", names(WebhookSource::ALL, WebhookSource::as_str)),
        ("DeadLetterQueue", "dead_letters", "queue", names(DeadLetterQueue::ALL, DeadLetterQueue::as_str)),
        ("TestSendState", "test_sends", "state", names(TestSendState::ALL, TestSendState::as_str)),
    ]
}

/// Columns restricted to a list of values that are deliberately not a `states` enum, with why.
const NOT_ENUMS: &[(&str, &str)] = &[
    // The API's idempotency records: `in_progress`/`completed`, private to db::idempotency_keys.
    ("idempotency_keys", "state"),
    // Shopify's own consent value, always `UNSUBSCRIBED` (the only write-back we make).
    ("shopify_writebacks", "marketing_state"),
];

/// Every single-column CHECK of the public schema that restricts a column to a list of values
/// (`col IN ('a', 'b')` is stored as `col = ANY (ARRAY['a'::text, …])`, a single value as
/// `col = 'a'::text`): (table, column, values).
async fn value_list_checks(db: &TestDb) -> Vec<(String, String, BTreeSet<String>)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT c.conrelid::regclass::text, a.attname::text, pg_get_constraintdef(c.oid)
           FROM pg_constraint c
           JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
          WHERE c.contype = 'c'
            AND cardinality(c.conkey) = 1
            AND c.connamespace = 'public'::regnamespace
          ORDER BY 1, 2",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .filter_map(|(table, column, def)| {
            let compact: String = def.chars().filter(|c| !c.is_whitespace() && *c != '(' && *c != ')').collect();
            let is_list = compact.starts_with(&format!("CHECK{column}=ANYARRAY["))
                || (compact.starts_with(&format!("CHECK{column}='")) && compact.ends_with("::text"));
            is_list.then(|| (table, column, quoted_text_literals(&def)))
        })
        .collect()
}

/// The `'…'::text` literals of a constraint definition.
fn quoted_text_literals(def: &str) -> BTreeSet<String> {
    let mut values = BTreeSet::new();
    let mut rest = def;
    while let Some(start) = rest.find('\'') {
        let after = &rest[start + 1..];
        let mut value = String::new();
        let mut chars = after.char_indices().peekable();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, n)| *n == '\'') {
                    value.push('\'');
                    chars.next();
                    continue;
                }
                end = i + 1;
                break;
            }
            value.push(c);
        }
        values.insert(value);
        rest = &after[end..];
    }
    values
}

#[tokio::test]
async fn every_state_enum_matches_its_check_constraint() {
    let db = TestDb::new().await;
    let checks = value_list_checks(&db).await;
    let mut mismatches = Vec::new();
    for (name, table, column, expected) in enums() {
        let found: Vec<&BTreeSet<String>> =
            checks.iter().filter(|(t, c, _)| t == table && c == column).map(|(_, _, v)| v).collect();
        match found.as_slice() {
            [stored] if *stored == &expected => {}
            [stored] => mismatches.push(format!(
                "{name} vs {table}.{column}: only in the enum {:?}, only in the CHECK {:?}",
                expected.difference(stored).collect::<Vec<_>>(),
                stored.difference(&expected).collect::<Vec<_>>(),
            )),
            [] => mismatches.push(format!("{name}: {table}.{column} has no `CHECK ({column} IN (…))` any more")),
            _ => {
                mismatches
                    .push(format!("{name}: {table}.{column} has {} value-list CHECKs, expected one", found.len()));
            }
        }
    }
    assert!(mismatches.is_empty(), "the domain enums and the migrations disagree:\n  {}", mismatches.join("\n  "));
}

/// A new constrained column gets an enum (and a line in [`enums`]) or a reason in [`NOT_ENUMS`].
#[tokio::test]
async fn every_value_list_check_has_an_enum_or_a_reason() {
    let db = TestDb::new().await;
    let covered: Vec<(&str, &str)> =
        enums().iter().map(|(_, t, c, _)| (*t, *c)).chain(NOT_ENUMS.iter().copied()).collect();
    let uncovered: Vec<String> = value_list_checks(&db)
        .await
        .into_iter()
        .filter(|(t, c, _)| !covered.contains(&(t.as_str(), c.as_str())))
        .map(|(t, c, v)| format!("{t}.{c} {v:?}"))
        .collect();
    assert!(
        uncovered.is_empty(),
        "columns restricted to a list of values with no enum in domain::states (add one, or a reason to NOT_ENUMS):\n  {}",
        uncovered.join("\n  ")
    );
}

/// Every enum declared in `states.rs` is in [`enums`], so a new one cannot be forgotten here.
#[test]
fn every_enum_of_states_rs_is_checked() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../common/src/domain/states.rs");
    let source = std::fs::read_to_string(&path).unwrap();
    let declared: BTreeSet<String> = source
        .split("text_enum! {")
        .skip(1)
        .filter_map(|block| {
            block
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty() && !line.starts_with("///") && !line.starts_with("#["))
                .and_then(|line| line.strip_suffix('{'))
                .map(|name| name.trim().to_owned())
        })
        .collect();
    let checked: BTreeSet<String> = enums().iter().map(|(name, ..)| (*name).to_owned()).collect();
    assert!(!declared.is_empty(), "no text_enum! found in {}", path.display());
    assert_eq!(declared, checked, "enums in states.rs vs enums checked against the schema");
}

#[test]
fn literals_are_read_from_constraint_definitions() {
    assert_eq!(
        quoted_text_literals("CHECK ((queue = ANY (ARRAY['email'::text, 'shopify-sync'::text, 'it''s'::text])))"),
        BTreeSet::from(["email".to_owned(), "shopify-sync".to_owned(), "it's".to_owned()])
    );
}
