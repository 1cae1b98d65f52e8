//! What the HTML pages show: one view model per page, rendered by an askama template under
//! `api/templates/`. Templates ending in `.html` escape every value they print, so no handler
//! writes markup or calls an escape function: a subscriber's name, a challenge's text or an error
//! message can never become markup.

use askama::Template;
use chrono::{DateTime, Utc};
use levelup_common::{
    db::dead_letters::DeadLetter, db::shopify_syncs::Sync, db::weekly_runs::Progress, db::weekly_runs::WeeklyRun,
    flows::subscriber::LevelChangeEntry, jobs::queue::QueueDepth,
};

/// A token as a query value (`?token=…`), as the links on the pages carry it.
fn query_value(token: &str) -> String {
    url::form_urlencoded::byte_serialize(token.as_bytes()).collect()
}

/// The challenge, its submission form and a link to the level page.
#[derive(Template)]
#[template(path = "pages/challenge.html")]
pub(crate) struct ChallengePage<'a> {
    pub id: i64,
    pub level: i16,
    pub title: &'a str,
    pub body: &'a str,
    /// The access token: posted back with the form, and in the link to the level page.
    pub token: &'a str,
}

impl ChallengePage<'_> {
    fn title(&self) -> &str {
        self.title
    }

    fn token_query(&self) -> String {
        query_value(self.token)
    }
}

/// The level page of a subscriber who has no level yet: a link to the questionnaire.
#[derive(Template)]
#[template(path = "pages/no_level.html")]
pub(crate) struct NoLevelPage<'a> {
    pub token: &'a str,
}

impl NoLevelPage<'_> {
    fn title(&self) -> &str {
        "Your level"
    }

    fn token_query(&self) -> String {
        query_value(self.token)
    }
}

/// The subscriber's level, progress to the next one and history.
#[derive(Template)]
#[template(path = "pages/level.html")]
pub(crate) struct LevelPage<'a> {
    pub level: i16,
    /// Distinct challenges passed at this level.
    pub passed: i64,
    /// Passes that move the subscriber up.
    pub needed: i64,
    pub history: &'a [LevelChangeEntry],
}

impl LevelPage<'_> {
    fn title(&self) -> &str {
        "Your level"
    }

    /// The progress bar's value: full, not over-full, once enough challenges are passed.
    fn shown(&self) -> i64 {
        self.passed.min(self.needed)
    }
}

/// The placement questionnaire: one checkbox `qN` per statement.
#[derive(Template)]
#[template(path = "pages/questionnaire.html")]
pub(crate) struct QuestionnairePage<'a> {
    pub statements: &'a [&'a str],
    pub token: &'a str,
}

impl QuestionnairePage<'_> {
    fn title(&self) -> &str {
        "Find your level"
    }
}

/// Asks to confirm the unsubscribe; the form posts to the same link.
#[derive(Template)]
#[template(path = "pages/unsubscribe_confirm.html")]
pub(crate) struct UnsubscribeConfirmPage<'a> {
    pub token: &'a str,
}

impl UnsubscribeConfirmPage<'_> {
    fn title(&self) -> &str {
        "Unsubscribe"
    }

    fn token_query(&self) -> String {
        query_value(self.token)
    }
}

/// After the unsubscribe.
#[derive(Template)]
#[template(path = "pages/unsubscribed.html")]
pub(crate) struct UnsubscribedPage;

impl UnsubscribedPage {
    fn title(&self) -> &str {
        "You are unsubscribed"
    }
}

/// Any page's failure, in a sentence for the subscriber.
#[derive(Template)]
#[template(path = "pages/error.html")]
pub(crate) struct ErrorPage<'a> {
    pub message: &'a str,
}

impl ErrorPage<'_> {
    fn title(&self) -> &str {
        "Sorry"
    }
}

/// The email queue's depth, or why it is unknown.
pub(crate) enum QueueDepthView {
    Known(QueueDepth),
    /// Redis answered, but not the depth.
    Unavailable(String),
    Unreachable(String),
}

/// One recent failed delivery: id, week, reason, when.
pub(crate) type FailedDelivery = (i64, String, Option<String>, DateTime<Utc>);

/// The operator's page: queue depth, weekly runs with progress, Shopify syncs, recent failures
/// and dead letters.
#[derive(Template)]
#[template(path = "admin.html")]
pub(crate) struct AdminPage {
    pub depth: QueueDepthView,
    pub runs: Vec<(WeeklyRun, Progress)>,
    pub syncs: Vec<Sync>,
    pub failures: Vec<FailedDelivery>,
    pub dead_letters: Vec<DeadLetter>,
}

#[cfg(test)]
mod tests {
    //! Snapshots of every page from fixed data; the `hostile` values (markup, quotes, line
    //! breaks) show that every value is escaped.

    use super::*;
    use levelup_common::domain::{DeadLetterQueue, IsoWeek, LevelChangeReason, RunStatus, SyncMode, SyncStatus};

    const HOSTILE: &str = "<script>alert(\"x\")</script> & 'quotes'\r\n<b>bold</b>";
    const TOKEN: &str = "v1.k1.payload+/=.mac";

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn challenge_page() {
        let page = ChallengePage {
            id: 7,
            level: 2,
            title: "FizzBuzz, but lazy",
            body: "Print the numbers 1 to 100.\nMultiples of 3: Fizz.",
            token: TOKEN,
        };
        insta::assert_snapshot!(page.render().unwrap());
    }

    #[test]
    fn challenge_page_with_hostile_values() {
        let page = ChallengePage { id: 7, level: 2, title: HOSTILE, body: HOSTILE, token: "\"><script>x</script>" };
        insta::assert_snapshot!(page.render().unwrap());
    }

    #[test]
    fn level_page() {
        let history = [
            LevelChangeEntry {
                from_level: None,
                to_level: 1,
                reason: LevelChangeReason::Placement,
                at: at("2026-11-02T09:00:00Z"),
            },
            LevelChangeEntry {
                from_level: Some(1),
                to_level: 2,
                reason: LevelChangeReason::Promotion,
                at: at("2026-11-16T09:00:00Z"),
            },
        ];
        insta::assert_snapshot!(LevelPage { level: 2, passed: 1, needed: 3, history: &history }.render().unwrap());
    }

    #[test]
    fn level_page_past_the_needed_passes_and_without_history() {
        insta::assert_snapshot!(LevelPage { level: 3, passed: 5, needed: 3, history: &[] }.render().unwrap());
    }

    #[test]
    fn level_page_without_a_level() {
        insta::assert_snapshot!(NoLevelPage { token: TOKEN }.render().unwrap());
    }

    #[test]
    fn questionnaire_page() {
        let statements: Vec<&str> =
            levelup_common::domain::placement::QUESTIONS.iter().map(|(text, _)| *text).collect();
        insta::assert_snapshot!(QuestionnairePage { statements: &statements, token: TOKEN }.render().unwrap());
    }

    #[test]
    fn questionnaire_page_with_hostile_values() {
        insta::assert_snapshot!(QuestionnairePage { statements: &[HOSTILE], token: HOSTILE }.render().unwrap());
    }

    #[test]
    fn unsubscribe_confirm_page() {
        insta::assert_snapshot!(UnsubscribeConfirmPage { token: TOKEN }.render().unwrap());
    }

    #[test]
    fn unsubscribed_page() {
        insta::assert_snapshot!(UnsubscribedPage.render().unwrap());
    }

    #[test]
    fn error_page() {
        insta::assert_snapshot!(ErrorPage { message: HOSTILE }.render().unwrap());
    }

    #[test]
    fn every_page_ends_with_one_line_break() {
        // Snapshots compare without trailing line breaks.
        let html = ErrorPage { message: "m" }.render().unwrap();
        assert!(html.ends_with("</main></body></html>\n") && !html.ends_with("\n\n"), "{html:?}");
    }

    fn admin_page(depth: QueueDepthView) -> AdminPage {
        let run = WeeklyRun {
            week: IsoWeek::parse("2026-W48").unwrap(),
            status: RunStatus::Sending,
            total: 12,
            enqueued: 10,
            pushes: 11,
            resume_after_id: 12,
            lease_owner: Some("scheduler-1".to_owned()),
            triggered_by: "schedule".to_owned(),
            started_at: at("2026-11-23T09:00:00Z"),
            fanout_finished_at: None,
            finished_at: None,
            due_at: at("2026-11-23T09:00:00Z"),
            paused_at: Some(at("2026-11-23T09:20:00Z")),
            paused_by: Some("reputation-guard".to_owned()),
            pause_reason: Some(
                "permanent bounces 2.40% (12 of 500 sends) above LEVELUP_PAUSE_BOUNCE_RATE 2.00%".to_owned(),
            ),
            bounces: 12,
            complaints: 0,
            guard_sent: 0,
            guard_bounces: 0,
            guard_complaints: 0,
        };
        let progress = Progress { queued: 2, sending: 1, sent: 6, failed: 1, skipped: 2, ambiguous: 1 };
        let sync = Sync {
            id: 3,
            trigger: "schedule".to_owned(),
            status: SyncStatus::Failed,
            next_page: 2,
            mode: Some(SyncMode::Pages),
            lines_done: 0,
            pages: 2,
            customers_seen: 500,
            created: 20,
            reactivated: 1,
            unsubscribed: 4,
            skipped: 0,
            throttled: 2,
            error: Some(HOSTILE.to_owned()),
            started_at: at("2026-11-23T03:00:00Z"),
            updated_at: at("2026-11-23T03:05:00Z"),
            finished_at: Some(at("2026-11-23T03:05:00Z")),
        };
        let dead = DeadLetter {
            id: 9,
            queue: DeadLetterQueue::Email,
            job: serde_json::json!({"delivery_id": 41}),
            delivery_id: Some(41),
            attempts: 8,
            last_error: HOSTILE.to_owned(),
            created_at: at("2026-11-23T09:30:00Z"),
            replayed_at: None,
        };
        let orphan = DeadLetter { id: 10, delivery_id: None, last_error: "no delivery".to_owned(), ..dead.clone() };
        AdminPage {
            depth,
            runs: vec![(run, progress)],
            syncs: vec![sync],
            failures: vec![
                (40, "2026-W48".to_owned(), Some(HOSTILE.to_owned()), at("2026-11-23T09:10:00Z")),
                (39, "2026-W48".to_owned(), None, at("2026-11-23T09:09:00Z")),
            ],
            dead_letters: vec![dead, orphan],
        }
    }

    #[test]
    fn admin_page_with_hostile_values() {
        let depth = QueueDepthView::Known(QueueDepth { waiting: 5, scheduled: 2, inflight: 1 });
        insta::assert_snapshot!(admin_page(depth).render().unwrap());
    }

    #[test]
    fn admin_page_when_redis_fails() {
        insta::assert_snapshot!(admin_page(QueueDepthView::Unavailable(HOSTILE.to_owned())).render().unwrap());
        let unreachable = admin_page(QueueDepthView::Unreachable("connection refused".to_owned())).render().unwrap();
        assert!(unreachable.contains("<td colspan=\"3\">Redis unreachable: connection refused</td>"), "{unreachable}");
    }

    #[test]
    fn an_empty_admin_page() {
        let page = AdminPage {
            depth: QueueDepthView::Known(QueueDepth::default()),
            runs: Vec::new(),
            syncs: Vec::new(),
            failures: Vec::new(),
            dead_letters: Vec::new(),
        };
        insta::assert_snapshot!(page.render().unwrap());
    }
}
