//! Differential privacy for released counts (SPEC §19.6): each aggregator
//! adds two-sided geometric (discrete Laplace) noise of scale 1/ε to every
//! bucket of its own aggregate share, so neither can remove the other's.

use crate::AggregateShare;
use prio::field::Field128;
use prio::vdaf::Aggregatable;
use rand_core::{CryptoRng, RngCore};

/// A sample of the two-sided geometric distribution with
/// P(k) ∝ exp(-ε·|k|): the difference of two geometric variables with
/// success probability 1 − e^(−ε).
pub fn two_sided_geometric(epsilon: f64, rng: &mut (impl RngCore + CryptoRng)) -> i64 {
    let alpha = (-epsilon).exp();
    let mut geometric = || {
        // Uniform in (0, 1]: 53 random bits.
        let u = ((rng.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64;
        (u.ln() / alpha.ln()).floor().min(1e12) as i64
    };
    geometric() - geometric()
}

/// Adds independent two-sided geometric noise with parameter `epsilon` to
/// every bucket of `share`. A share noised once per batch gives each
/// bucket ε-differential privacy for a change of one report, which moves
/// one count by one in each of two buckets (2ε for the whole histogram).
pub fn add_noise(
    share: &mut AggregateShare,
    epsilon: f64,
    rng: &mut (impl RngCore + CryptoRng),
) -> crate::Result<()> {
    let noise: Vec<Field128> = (0..crate::BUCKETS)
        .map(|_| {
            let k = two_sided_geometric(epsilon, rng);
            let magnitude = Field128::from(u128::from(k.unsigned_abs()));
            if k < 0 {
                -magnitude
            } else {
                magnitude
            }
        })
        .collect();
    share
        .0
        .merge(&prio::vdaf::AggregateShare::from(noise))
        .map_err(|e| crate::Error::Vdaf(e.to_string()))
}
