//! Stateless, seeded randomness: every draw is a pure function of the
//! master seed and the coordinates of the draw (day, agent, contact, …),
//! so results do not depend on how rayon splits the work.

use rand::rngs::SmallRng;
use rand::SeedableRng;

/// What a draw is for; keeps streams of different purposes apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// Building households and ages.
    Population = 1,
    /// Workplace and school networks.
    Network,
    /// App adoption and device calibration.
    Devices,
    /// Daily random contacts.
    Random,
    /// Daily workplace activity.
    Work,
    /// Venue and transit visits.
    Gathering,
    /// Contact durations and when contacts start.
    Radio,
    /// Transmission on a contact.
    Transmission,
    /// The course of an infection.
    Course,
    /// Compliance with isolation or quarantine.
    Compliance,
    /// Consent to upload.
    Consent,
    /// Daily tracing keys.
    Keys,
    /// Seeding of the epidemic.
    Seeding,
    /// A contact's radio channel: distance and shadowing.
    Channel,
}

/// SplitMix64's finalizer: a bijective mix with full avalanche.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A 64-bit hash of the seed, the stream and up to three coordinates.
pub fn hash(seed: u64, stream: Stream, a: u64, b: u64, c: u64) -> u64 {
    let mut h = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    for v in [stream as u64, a, b, c] {
        h = mix(h ^ v.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    }
    h
}

/// A uniform number in `[0, 1)` from a hash.
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A uniform draw in `[0, 1)` at the given coordinates.
pub fn uniform(seed: u64, stream: Stream, a: u64, b: u64, c: u64) -> f64 {
    unit(hash(seed, stream, a, b, c))
}

/// A small fast generator for a sequence of draws at the given coordinates.
pub fn small_rng(seed: u64, stream: Stream, a: u64, b: u64, c: u64) -> SmallRng {
    SmallRng::seed_from_u64(hash(seed, stream, a, b, c))
}
