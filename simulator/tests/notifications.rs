//! What people see: no app, no notification; with the app, notifications
//! that follow real infectious contacts, in both publication modes.

mod common;

use greenlight_sim::scenario::Mode;
use greenlight_sim::sim;

#[test]
fn without_the_app_nobody_is_notified() {
    let run = sim::run(&common::town(0.0, 3), |_| {}).expect("the run succeeds");
    assert!(run.summary.infections > 100, "{:?}", run.summary);
    assert_eq!(run.summary.app_users, 0);
    assert_eq!(run.summary.notifications, 0);
    assert_eq!(run.summary.uploads, 0);
    assert!(run
        .days
        .iter()
        .all(|d| d.yellow == 0 && d.red == 0 && d.quarantined == 0));
}

#[test]
fn with_high_adoption_notifications_occur_and_are_mostly_true() {
    let run = sim::run(&common::town(0.9, 3), |_| {}).expect("the run succeeds");
    let s = &run.summary;
    assert!(s.uploads > 10, "{s:?}");
    assert!(s.notifications > 50, "{s:?}");
    assert!(s.notification_precision > 0.8, "{s:?}");
    assert!(s.quarantine_person_days > 0, "{s:?}");
    assert!(run.days.iter().any(|d| d.red > 0));
    // Every notification is counted once, as true or false.
    assert_eq!(
        s.notifications,
        s.notifications_true + s.notifications_false
    );
}

#[test]
fn unlinkable_mode_notifies_too() {
    let mut s = common::town(0.9, 3);
    s.days = 30;
    s.app.mode = Mode::Unlinkable;
    let run = sim::run(&s, |_| {}).expect("the run succeeds");
    assert!(run.summary.notifications > 10, "{:?}", run.summary);
    assert!(
        run.summary.notification_precision > 0.8,
        "{:?}",
        run.summary
    );
}

#[test]
fn the_app_slows_the_epidemic() {
    let with = sim::run(&common::town(0.9, 11), |_| {}).expect("the run succeeds");
    let without = sim::run(&common::town(0.0, 11), |_| {}).expect("the run succeeds");
    assert!(
        with.summary.infections < without.summary.infections,
        "with {} without {}",
        with.summary.infections,
        without.summary.infections
    );
}

#[test]
fn day_long_contacts_record_a_window_for_every_epoch() {
    // Household contacts of a whole day, every epoch recorded: contacts then
    // start before 08:00, and each one must still find its sender's beacons.
    let mut s = common::town(0.9, 4);
    s.days = 8;
    s.contacts.household_minutes = 1_440;
    s.app.max_windows_per_contact = 96;
    s.validate().expect("the test scenario is valid");
    let run = sim::run(&s, |_| {}).expect("the run succeeds");
    let first_day = &run.days[0];
    // Every app-user pair in a household gives each phone 96 windows: well
    // over a thousand such pairs in a town of 3,000 at 90 % adoption.
    assert!(first_day.stored_windows > 96 * 2 * 1_000, "{first_day:?}");
}
