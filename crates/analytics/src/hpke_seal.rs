//! HPKE (RFC 9180) sealing of input shares to an aggregator (SPEC §19.3):
//! mode base, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.

use crate::{Error, Result};
use greenlight_protocol::RegionId;
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};
use rand_core::{CryptoRng, RngCore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, ZeroizeOnDrop};

type Kem = X25519HkdfSha256;

/// Which aggregator a share is for; bound into the HPKE `info`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Receives phones' reports, drives aggregation, releases counts.
    Leader,
    /// Checks and adds its shares when the leader asks; run by another organization.
    Helper,
}

impl Role {
    /// The role's byte in the HPKE `info` and its index as a Prio3 aggregator.
    pub fn id(self) -> u8 {
        match self {
            Role::Leader => 0,
            Role::Helper => 1,
        }
    }
}

/// What a phone pins for one aggregator: its key id and HPKE public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatorConfig {
    /// One byte naming the key, so an aggregator can tell a share sealed
    /// to a key it no longer holds (SPEC §19.3).
    pub key_id: u8,
    /// The X25519 public key, 64 hex digits.
    pub public_key: String,
}

impl AggregatorConfig {
    fn public_key(&self) -> Result<<Kem as hpke::Kem>::PublicKey> {
        let bytes = hex::decode(&self.public_key).map_err(|e| Error::Malformed {
            field: "public_key",
            reason: e.to_string(),
        })?;
        <Kem as hpke::Kem>::PublicKey::from_bytes(&bytes).map_err(|e| Error::Malformed {
            field: "public_key",
            reason: e.to_string(),
        })
    }
}

/// An aggregator's HPKE key pair. The secret is zeroized on drop and never
/// printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct AggregatorKeyPair {
    secret: [u8; 32],
    #[zeroize(skip)]
    public: [u8; 32],
}

impl std::fmt::Debug for AggregatorKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "AggregatorKeyPair {{ key_id: {}, secret: <redacted> }}",
            self.key_id()
        )
    }
}

impl AggregatorKeyPair {
    /// A fresh key pair.
    pub fn generate(rng: &mut (impl RngCore + CryptoRng)) -> AggregatorKeyPair {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        let pair = AggregatorKeyPair::from_secret(secret);
        secret.zeroize();
        pair
    }

    /// The key pair of a stored 32-byte X25519 secret.
    pub fn from_secret(secret: [u8; 32]) -> AggregatorKeyPair {
        // Any 32 bytes are a valid X25519 secret (RFC 7748 clamps them).
        let public = match <Kem as hpke::Kem>::PrivateKey::from_bytes(&secret) {
            Ok(sk) => {
                let mut out = [0u8; 32];
                out.copy_from_slice(&Kem::sk_to_pk(&sk).to_bytes());
                out
            }
            Err(_) => [0u8; 32],
        };
        AggregatorKeyPair { secret, public }
    }

    /// The secret, for storing in a 0600 file.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret
    }

    /// The key id: the first byte of SHA-256 of the public key (SPEC §19.3).
    pub fn key_id(&self) -> u8 {
        Sha256::digest(self.public)[0]
    }

    /// What phones pin for this aggregator.
    pub fn config(&self) -> AggregatorConfig {
        AggregatorConfig {
            key_id: self.key_id(),
            public_key: hex::encode(self.public),
        }
    }

    /// Opens a share sealed to this key with the given bindings.
    pub(crate) fn open(
        &self,
        enc: &[u8],
        ciphertext: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>> {
        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&self.secret)
            .map_err(|_| Error::Undecryptable)?;
        let enc =
            <Kem as hpke::Kem>::EncappedKey::from_bytes(enc).map_err(|_| Error::Undecryptable)?;
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &sk,
            &enc,
            info,
            ciphertext,
            aad,
        )
        .map_err(|_| Error::Undecryptable)
    }
}

/// Seals `plaintext` to an aggregator; returns (encapsulated key, ciphertext).
pub(crate) fn seal(
    to: &AggregatorConfig,
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<(Vec<u8>, Vec<u8>)> {
    let pk = to.public_key()?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, Kem, _>(
        &OpModeS::Base,
        &pk,
        info,
        plaintext,
        aad,
        rng,
    )
    .map_err(|e| Error::Hpke(e.to_string()))?;
    Ok((enc.to_bytes().to_vec(), ct))
}

/// The HPKE `info` of a share (SPEC §19.3):
/// `"greenlight/v1/report-share" ‖ 0x00 ‖ version ‖ role ‖ len(region) ‖ region`.
pub(crate) fn info(version: u8, role: Role, region: &RegionId) -> Vec<u8> {
    let region = region.as_str().as_bytes();
    let mut out = Vec::with_capacity(32 + region.len());
    out.extend_from_slice(INFO_LABEL);
    out.push(0);
    out.push(version);
    out.push(role.id());
    out.push(region.len() as u8);
    out.extend_from_slice(region);
    out
}

/// Label at the start of every share's HPKE `info`.
pub(crate) const INFO_LABEL: &[u8] = b"greenlight/v1/report-share";
