//! # greenlight-protocol
//!
//! The sans-I/O core of Greenlight, a decentralized, privacy-preserving
//! exposure-notification system. It holds everything two Greenlight
//! implementations must agree on byte for byte — daily keys, EphIDs and
//! their metadata, the BLE advertisement, exposure windows, the signed key
//! batch in its compact and unlinkable modes, the signed exposure policy,
//! matching and the status engine — exactly as `protocol-spec/SPEC.md`
//! specifies them.
//!
//! The daemon, the server, the simulator and the tests all run this code.
//! It never reads a clock, a file, a socket or the OS random generator:
//! time and randomness are parameters. No tokio, no I/O crate, may enter it.
//!
//! ```
//! use greenlight_protocol::*;
//! use rand::SeedableRng;
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
//! let today = Timestamp(1_795_000_000);
//! let (day, epoch) = (today.day(), today.epoch().index());
//! let ch = RegionId::new("CH")?;
//!
//! // Alice broadcasts; Bob's phone hears her once a minute for 20 minutes at -60 dBm.
//! let alice = DailyKey::generate(&mut rng);
//! let adv = encode_advertisement(&alice.ephid_generator(day).beacon(epoch, Metadata { tx_power_dbm: -5 }));
//! let beacon = decode_advertisement(&adv)?;
//! let heard: Vec<Sighting> = (0..20)
//!     .map(|m| Sighting { ephid: beacon.ephid, metadata: beacon.metadata, at: Timestamp(today.0 + 60 * m), rssi: Rssi(-60) })
//!     .collect();
//! let windows = group_into_windows(&heard, &WindowConfig::default());
//!
//! // Alice tests positive; the health authority publishes her key, signed.
//! let authority = ed25519_dalek::SigningKey::generate(&mut rng);
//! let batch = KeyBatch { region: ch.clone(), number: BatchNumber(1), start: today, end: today,
//!     origins: vec![ch.clone()],
//!     payload: BatchPayload::Compact(vec![PublishedKey { day, key: alice, days_since_onset: Some(0), origin: 0 }]) };
//! let file = batch.sign(&authority)?;
//! let policy = ExposurePolicy::recommended(ch.clone());
//!
//! // Bob's phone verifies, matches locally, and derives its colour and reason.
//! let index = MatchIndex::prepare(&KeyBatch::verify(&file, &ch, &authority.verifying_key())?);
//! let exposures = index.match_windows(&windows, &MatchOptions::from(&policy), day);
//! let status = evaluate(&policy, &StatusInput { today: day, positive_test: None, exposures: &exposures, checkins: &[] });
//! assert_eq!(status.colour, Colour::Red);
//! println!("{status}");
//! # Ok::<(), greenlight_protocol::Error>(())
//! ```

#![warn(missing_docs)]

pub mod advertisement;
pub mod batch;
pub mod bloom;
pub mod error;
pub mod keys;
pub mod matching;
pub mod policy;
pub mod region;
pub mod status;
pub mod time;
pub mod window;
mod wire;

pub use advertisement::{
    decode_advertisement, decode_service_data, encode_advertisement, encode_service_data,
    SERVICE_UUID16,
};
pub use batch::{BatchNumber, BatchPayload, KeyBatch, PublicationMode, PublishedKey};
pub use bloom::{EpochFilter, EpochHash};
pub use ed25519_dalek;
pub use error::{Error, Result};
pub use keys::{Beacon, Beacons, DailyKey, EncryptedMetadata, EphId, EphIdGenerator, Metadata};
pub use matching::{Exposure, IndexHit, MatchIndex, MatchOptions, TableMemory, WindowKey};
pub use policy::{AttenuationBucket, ExposurePolicy};
pub use region::RegionId;
pub use status::{evaluate, Colour, PositiveTest, Status, StatusInput};
pub use time::{DayNumber, EpochIndex, EpochNumber, Timestamp};
pub use window::{
    group_into_windows, Attenuation, AttenuationStats, ObservedWindow, Rssi, Sighting, WindowConfig,
};
