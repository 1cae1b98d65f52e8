//! The reputation guard: pauses a run whose permanent bounces or complaints, as SES reports them
//! through SNS, cross the configured rates, before SES reviews or pauses the account (it reviews
//! at 5% bounces / 0.1% complaints and pauses sending at 10% / 0.5%).
//!
//! The API counts each event against the run that sent the message (`weekly_runs.bounces`,
//! `complaints`); the lease holder judges the run before every feed, so a crossing pauses the run
//! within a tick or two of the event. After an operator resumes, only what is sent from then on is
//! judged (else the same bounces would pause it again at once).

use levelup_common::{config::ReputationConfig, db::weekly_runs::WeeklyRun};

/// Why the run must pause, or `None`. `sent` counts the run's sends (all of them: the counts at
/// the last resume are subtracted here).
pub(crate) fn verdict(run: &WeeklyRun, sent: i64, limits: &ReputationConfig) -> Option<String> {
    let sent = sent - run.guard_sent;
    let bounces = run.bounces - run.guard_bounces;
    let complaints = run.complaints - run.guard_complaints;
    if sent < limits.pause_min_sends || sent <= 0 {
        return None;
    }
    let judged = |count: i64, limit: f64, what: &str, var: &str| {
        let rate = count as f64 / sent as f64;
        (rate > limit)
            .then(|| format!("{what} {:.2}% ({count} of {sent} sends) above {var} {:.2}%", rate * 100.0, limit * 100.0))
    };
    judged(bounces, limits.pause_bounce_rate, "permanent bounces", "LEVELUP_PAUSE_BOUNCE_RATE")
        .or_else(|| judged(complaints, limits.pause_complaint_rate, "complaints", "LEVELUP_PAUSE_COMPLAINT_RATE"))
}

/// Whether there is anything to judge: an event counted since the last resume.
pub(crate) fn has_events(run: &WeeklyRun) -> bool {
    run.bounces > run.guard_bounces || run.complaints > run.guard_complaints
}

#[cfg(test)]
mod tests {
    use super::*;
    use levelup_common::domain::{IsoWeek, RunStatus};

    fn run(bounces: i64, complaints: i64) -> WeeklyRun {
        let now = chrono::Utc::now();
        WeeklyRun {
            week: IsoWeek::parse("2026-W48").unwrap(),
            status: RunStatus::Sending,
            total: 0,
            enqueued: 0,
            pushes: 0,
            resume_after_id: 0,
            lease_owner: None,
            triggered_by: "test".into(),
            started_at: now,
            fanout_finished_at: None,
            finished_at: None,
            due_at: now,
            paused_at: None,
            paused_by: None,
            pause_reason: None,
            bounces,
            complaints,
            guard_sent: 0,
            guard_bounces: 0,
            guard_complaints: 0,
        }
    }

    const LIMITS: ReputationConfig =
        ReputationConfig { pause_bounce_rate: 0.02, pause_complaint_rate: 0.0005, pause_min_sends: 500 };

    #[test]
    fn bounces_above_the_rate_pause_only_after_the_minimum_sends() {
        assert_eq!(verdict(&run(20, 0), 499, &LIMITS), None, "too few sends to judge");
        assert_eq!(verdict(&run(10, 0), 500, &LIMITS), None, "2.0% is not above 2%");
        let reason = verdict(&run(11, 0), 500, &LIMITS).expect("2.2% pauses");
        assert!(reason.contains("2.20%") && reason.contains("11 of 500") && reason.contains("BOUNCE"), "{reason}");
    }

    #[test]
    fn complaints_have_their_own_lower_rate() {
        assert_eq!(verdict(&run(0, 1), 2000, &LIMITS), None, "0.05% is not above 0.05%");
        let reason = verdict(&run(0, 2), 2000, &LIMITS).expect("0.1% pauses");
        assert!(reason.contains("complaints 0.10%"), "{reason}");
    }

    #[test]
    fn after_a_resume_only_what_followed_is_judged() {
        let mut resumed = run(30, 0);
        (resumed.guard_sent, resumed.guard_bounces) = (1000, 30);
        assert!(!has_events(&resumed));
        assert_eq!(verdict(&resumed, 1400, &LIMITS), None, "400 sends since the resume: too few");
        resumed.bounces = 35;
        assert!(has_events(&resumed));
        assert_eq!(verdict(&resumed, 1500, &LIMITS), None, "5 of 500 since the resume is 1%");
        resumed.bounces = 41;
        assert!(verdict(&resumed, 1500, &LIMITS).is_some(), "11 of 500 since the resume");
    }
}
