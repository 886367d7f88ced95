//! Byte-level reading and writing shared by every binary format (SPEC §1.2):
//! big-endian integers, length-prefixed region ids, bounds-checked reads.

use crate::error::{Error, Result};
use crate::region::RegionId;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Length of an ed25519 signature.
pub(crate) const SIGNATURE_LEN: usize = 64;

/// A bounds-checked cursor over input bytes. Every read names the format
/// it belongs to, so an error says which file was short.
pub(crate) struct Reader<'a> {
    what: &'static str,
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, bytes: &'a [u8]) -> Self {
        Reader { what, bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.bytes.len() < n {
            return Err(Error::Truncated {
                what: self.what,
                needed: n,
                remaining: self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn i8(&mut self) -> Result<i8> {
        Ok(i8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads the magic and version that open every signed format.
    pub(crate) fn header(&mut self, magic: &[u8; 4], version: u8) -> Result<()> {
        if self.take(4)? != magic {
            return Err(Error::BadMagic { what: self.what });
        }
        let got = self.u8()?;
        if got != version {
            return Err(Error::UnknownVersion {
                what: self.what,
                got,
                supported: version,
            });
        }
        Ok(())
    }

    /// Reads a region id: one length byte, then that many ASCII bytes.
    pub(crate) fn region(&mut self) -> Result<RegionId> {
        let len = usize::from(self.u8()?);
        let raw = self.take(len)?;
        let text = std::str::from_utf8(raw).map_err(|_| Error::InvalidField {
            what: self.what,
            field: "region",
            reason: "not ASCII".into(),
        })?;
        RegionId::new(text)
    }

    /// Fails unless every byte was consumed.
    pub(crate) fn finish(self) -> Result<()> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(Error::TrailingBytes {
                what: self.what,
                extra: self.bytes.len(),
            })
        }
    }
}

/// Appends big-endian fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer(pub(crate) Vec<u8>);

impl Writer {
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub(crate) fn i8(&mut self, v: i8) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    pub(crate) fn region(&mut self, r: &RegionId) {
        // Invariant: RegionId::new caps the length at 16 bytes.
        self.u8(r.as_str().len() as u8);
        self.bytes(r.as_str().as_bytes());
    }
    /// Signs everything written so far and appends the signature.
    pub(crate) fn sign(mut self, key: &SigningKey) -> Vec<u8> {
        let signature = key.sign(&self.0);
        self.bytes(&signature.to_bytes());
        self.0
    }
}

/// Splits `bytes` into body and trailing signature and checks the signature
/// over the body with `verify_strict` (rejects malleable signatures and weak
/// keys). Nothing in the body may be used before this returns `Ok`.
pub(crate) fn verify_signed<'a>(
    what: &'static str,
    bytes: &'a [u8],
    key: &VerifyingKey,
) -> Result<&'a [u8]> {
    if bytes.len() < SIGNATURE_LEN {
        return Err(Error::Truncated {
            what,
            needed: SIGNATURE_LEN,
            remaining: bytes.len(),
        });
    }
    let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let mut sig_bytes = [0u8; SIGNATURE_LEN];
    sig_bytes.copy_from_slice(sig);
    let signature = Signature::from_bytes(&sig_bytes);
    key.verify_strict(body, &signature)
        .map_err(|_| Error::BadSignature { what })?;
    Ok(body)
}
