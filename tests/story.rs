//! The demo's story as a test: a real server, four real phones on the
//! simulated air and clock, and an assertion on every colour and date.

use greenlight_cli::demo::{self, DemoOptions};
use greenlight_protocol::{Colour, DayNumber};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_story_every_colour_and_date() {
    let d0 = DayNumber(20_415); // 2025-11-24, a Monday
    let options = DemoOptions {
        seed: 2026,
        start_day: d0,
    };
    let mut narration = Vec::new();
    let outcome = demo::run(&options, &mut narration)
        .await
        .expect("the demo runs");
    let text = String::from_utf8(narration).expect("utf-8");

    // Alice uploads the keys of the three days her phone broadcast,
    // padded to 15 keys.
    assert_eq!(outcome.uploaded, (3, 12), "{text}");
    // Bob heard Alice's 8 EphIDs of the two hours; Carol one; Dan one.
    assert_eq!(outcome.exposures_found, [0, 8, 1, 1], "{text}");

    let d = |n: i64| d0.offset(n);
    let expect = |person: &str, day: DayNumber, colour: Colour, green_on: Option<DayNumber>| {
        let s = outcome
            .on(person, day)
            .unwrap_or_else(|| panic!("{person} on {day} missing"));
        assert_eq!(
            (s.colour, s.green_on),
            (colour, green_on),
            "{person} on {day}\n{text}"
        );
    };
    for n in 2..=17 {
        let day = d(n);
        // Alice: isolation from her test (day 2) for 14 days, checked in daily.
        if n < 16 {
            expect("Alice", day, Colour::Red, Some(d(16)));
        } else {
            expect("Alice", day, Colour::Green, None);
        }
        // Bob: two hours at 1 m on day 0 → red until day 0 + 14.
        if n < 14 {
            expect("Bob", day, Colour::Red, Some(d(14)));
        } else {
            expect("Bob", day, Colour::Green, None);
        }
        // Carol: 12 min at 1.8 m → yellow until day 7; the check-in she
        // missed on day 4 adds a day once it is missed (seen on day 5).
        match n {
            2..=4 => expect("Carol", day, Colour::Yellow, Some(d(7))),
            5..=7 => expect("Carol", day, Colour::Yellow, Some(d(8))),
            _ => expect("Carol", day, Colour::Green, None),
        }
        // Dan: 3 minutes at 3 m stays below the threshold.
        expect("Dan", day, Colour::Green, None);
    }
    assert!(text.contains("below the yellow threshold"), "{text}");

    // The server saw one code, one upload, padded batches, nothing else.
    let c = &outcome.server_counters;
    assert_eq!(c.get("codes_issued"), Some(&1), "{c:?}");
    assert_eq!(c.get("codes_redeemed"), Some(&1), "{c:?}");
    assert_eq!(c.get("uploads"), Some(&1), "{c:?}");
    assert_eq!(c.get("keys_published"), Some(&15), "{c:?}");
    assert_eq!(
        outcome.batches.len(),
        2,
        "one compact and one unlinkable batch"
    );
    assert!(outcome.batches.iter().all(|(_, entries)| *entries >= 1000));
}
