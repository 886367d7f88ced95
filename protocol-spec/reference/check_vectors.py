#!/usr/bin/env python3
"""An independent implementation of Greenlight protocol version 1, written
from protocol-spec/SPEC.md alone, checked against the frozen vectors.

It shares no code with the Rust implementation: if both agree with the
vectors byte for byte, the spec is complete enough to interoperate.

Usage: python3 check_vectors.py [VECTORS_DIR]   (needs `cryptography`)
"""

import hashlib
import json
import math
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

EPOCHS_PER_DAY = 96
EPHID_STREAM = 16 * EPOCHS_PER_DAY
UUID16 = 0x4C47


# SPEC §4: daily key -> ChaCha20 key -> EphIDs and metadata masks
def chacha_key(daily_key: bytes, day: int) -> bytes:
    info = b"greenlight/v1/ephid-key" + struct.pack(">I", day)
    return HKDFExpand(hashes.SHA256(), 32, info).derive(daily_key)


def keystream(key: bytes, length: int) -> bytes:
    # cryptography's ChaCha20 nonce: 4-byte LE block counter || 12-byte nonce.
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    return enc.update(bytes(length))


def ephid(key: bytes, i: int) -> bytes:
    return keystream(key, EPHID_STREAM)[16 * i : 16 * i + 16]


def metadata_mask(key: bytes, i: int) -> bytes:
    s = keystream(key, EPHID_STREAM + 4 * EPOCHS_PER_DAY)
    return s[EPHID_STREAM + 4 * i : EPHID_STREAM + 4 * i + 4]


def xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b))


# SPEC §5: the advertisement
def advertisement(eph: bytes, sealed: bytes) -> bytes:
    u = struct.pack("<H", UUID16)
    return bytes([2, 0x01, 0x06, 3, 0x03]) + u + bytes([23, 0x16]) + u + eph + sealed


def decode_advertisement(payload: bytes):
    if len(payload) > 1650:
        return "too_large"
    found, rest = None, payload
    while rest:
        n = rest[0]
        if n == 0:
            break
        if len(rest) - 1 < n:
            return "truncated"
        ad_type, data, rest = rest[1], rest[2 : 1 + n], rest[1 + n :]
        if ad_type == 0x16 and len(data) >= 2 and struct.unpack("<H", data[:2])[0] == UUID16:
            if found is not None:
                return "invalid_field"
            if len(data) - 2 != 20:
                return "invalid_field"
            found = (data[2:18], data[18:22])
    return found if found is not None else "not_greenlight"


# SPEC §7: epoch hashes and the Bloom filter
def epoch_hash(eph: bytes, epoch: int) -> bytes:
    return hashlib.sha256(b"greenlight/v1/epoch-hash" + eph + struct.pack(">I", epoch)).digest()[:16]


M64 = (1 << 64) - 1


def rotl(x, b):
    return ((x << b) | (x >> (64 - b))) & M64


def siphash13(key: bytes, msg: bytes) -> int:
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D
    v2, v3 = k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573

    def rnd():
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & M64; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32)
        v2 = (v2 + v3) & M64; v3 = rotl(v3, 16); v3 ^= v2
        v0 = (v0 + v3) & M64; v3 = rotl(v3, 21); v3 ^= v0
        v2 = (v2 + v1) & M64; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32)

    tail = len(msg) % 8
    for off in range(0, len(msg) - tail, 8):
        m = struct.unpack("<Q", msg[off : off + 8])[0]
        v3 ^= m; rnd(); v0 ^= m
    b = ((len(msg) & 0xFF) << 56) | int.from_bytes(msg[len(msg) - tail :], "little")
    v3 ^= b; rnd(); v0 ^= b
    v2 ^= 0xFF
    rnd(); rnd(); rnd()
    return v0 ^ v1 ^ v2 ^ v3


BLOOM_K = 32
BLOOM_SEED = hashlib.sha256(b"greenlight/v1/bloom-seed").digest()
PRIME = 0xFFFFFFFFFFFFFFC5


def bloom_bits(item: bytes, m: int):
    h0, h1 = siphash13(BLOOM_SEED[:16], item), siphash13(BLOOM_SEED[16:], item)
    for i in range(BLOOM_K):
        h = h0 if i == 0 else h1 if i == 1 else ((h0 + i * h1) & M64) % PRIME
        yield h % m


def bloom_bytes(capacity: int) -> int:
    return math.ceil(max(capacity, 1) * BLOOM_K / math.log(2) / 8)


def bloom_insert(bitmap: bytearray, item: bytes):
    for b in bloom_bits(item, len(bitmap) * 8):
        bitmap[b // 8] |= 1 << (b % 8)


def bloom_contains(bitmap: bytes, item: bytes) -> bool:
    return all(bitmap[b // 8] >> (b % 8) & 1 for b in bloom_bits(item, len(bitmap) * 8))


# SPEC §8: batches
def region(r: str) -> bytes:
    return bytes([len(r)]) + r.encode("ascii")


def batch_body(c: dict, mode: int, payload: bytes) -> bytes:
    out = b"GLKB" + bytes([1, mode]) + region(c["region"])
    out += struct.pack(">QQQ", c["number"], c["start"], c["end"])
    out += bytes([len(c["origins"])]) + b"".join(region(o) for o in c["origins"])
    return out + payload


def compact_payload(keys) -> bytes:
    out = struct.pack(">I", len(keys))
    for k in keys:
        onset = -128 if k["days_since_onset"] is None else k["days_since_onset"]
        out += struct.pack(">I", k["day"]) + bytes.fromhex(k["key"]) + struct.pack(">bB", onset, k["origin"])
    return out


def unlinkable_payload(items) -> bytes:
    bitmap = bytearray(bloom_bytes(len(items)))
    for it in items:
        bloom_insert(bitmap, bytes.fromhex(it))
    return struct.pack(">II", len(items), len(bitmap)) + bytes(bitmap)


def verify_batch(data: bytes, expected_region: str, pub: Ed25519PublicKey):
    if len(data) < 5:
        return "truncated"
    if data[:4] != b"GLKB":
        return "bad_magic"
    if data[4] != 1:
        return "unknown_version"
    n = data[6]
    if data[7 : 7 + n].decode("ascii", "replace") != expected_region:
        return "wrong_region"
    try:
        pub.verify(data[-64:], data[:-64])
    except Exception:
        return "bad_signature"
    return "ok"


# SPEC §9: policy
def policy_body(p: dict) -> bytes:
    out = b"GLPL\x01" + region(p["region"]) + struct.pack(">I", p["serial"])
    out += bytes(p["attenuation_thresholds_db"])
    out += b"".join(struct.pack(">H", w) for w in p["attenuation_weights_pct"] + p["infectiousness_weights_pct"])
    out += struct.pack(">HIHH", p["unknown_onset_weight_pct"], p["min_window_secs"], p["yellow_threshold_minutes"], p["red_threshold_minutes"])
    out += bytes([p["yellow_quarantine_days"], p["red_quarantine_days"], p["isolation_days"], int(p["daily_checkin"]), p["epoch_skew"]])
    return out + struct.pack(">b", p["assumed_tx_power_dbm"])


# SPEC §11: status engine
def evaluate(p: dict, today: int, positive_test, exposures, checkins):
    days = {}
    for e in exposures:
        if e["duration_secs"] < p["min_window_secs"]:
            continue
        a = e["attenuation"]["median"]
        t = p["attenuation_thresholds_db"]
        bucket = 0 if a <= t[0] else 1 if a <= t[1] else 2 if a <= t[2] else 3
        aw = p["attenuation_weights_pct"][bucket]
        d = e["days_since_onset"]
        iw = p["unknown_onset_weight_pct"] if d is None else p["infectiousness_weights_pct"][d + 14] if -14 <= d <= 14 else 0
        w = e["duration_secs"] * aw * iw // 10_000
        if w == 0:
            continue
        day = e["start"] // 86_400
        total, matched = days.get(day, (0, []))
        days[day] = (total + w, matched + [e["matched_on"]])
    level = {}
    for day, (total, _) in days.items():
        level[day] = "red" if total >= p["red_threshold_minutes"] * 60 else "yellow" if total >= p["yellow_threshold_minutes"] * 60 else None
    quarantines = []
    if positive_test:
        t = positive_test["test_day"]
        quarantines.append(("red", t, t + p["isolation_days"]))
    for colour, length in (("red", p["red_quarantine_days"]), ("yellow", p["yellow_quarantine_days"])):
        hit = sorted(d for d in days if level[d] == colour)
        if hit:
            notified = min(m for d in hit for m in days[d][1])
            quarantines.append((colour, notified, hit[-1] + length))
    active = []
    for colour, notified, end in quarantines:
        if p["daily_checkin"]:
            d = notified + 1
            while d < end and d < today:
                if d not in checkins:
                    end += 1
                d += 1
        if today < end:
            active.append((colour, end))
    if not active:
        return "green", None, sorted((d, t) for d, (t, _) in days.items())
    colour = "red" if any(c == "red" for c, _ in active) else "yellow"
    return colour, max(e for _, e in active), sorted((d, t) for d, (t, _) in days.items())


def main():
    vectors = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "vectors")
    load = lambda name: json.loads((vectors / name).read_text())
    passed = failed = 0

    def check(what, ok):
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
            print(f"FAIL {what}")

    for case in load("ephid.json")["cases"]:
        key = chacha_key(bytes.fromhex(case["daily_key"]), case["day"])
        check(f"chacha20 key day {case['day']}", key.hex() == case["chacha20_key"])
        for e in case["epochs"]:
            i = e["epoch_index"]
            check(f"epoch number {i}", case["day"] * 96 + i == e["epoch_number"])
            check(f"ephid {case['day']}/{i}", ephid(key, i).hex() == e["ephid"])
            plain = bytes([1, e["tx_power_dbm"] & 0xFF, 0, 0])
            check(f"metadata plain {i}", plain.hex() == e["metadata_plain"])
            check(f"metadata sealed {i}", xor(plain, metadata_mask(key, i)).hex() == e["metadata_encrypted"])

    adv = load("advertisement.json")
    for case in adv["valid"]:
        eph, sealed = bytes.fromhex(case["ephid"]), bytes.fromhex(case["metadata_encrypted"])
        check("advertisement bytes", advertisement(eph, sealed).hex() == case["advertisement"])
        check("service data", (eph + sealed).hex() == case["service_data"])
        for p in [case["advertisement"]] + case["also_decodes"]:
            check("advertisement decodes", decode_advertisement(bytes.fromhex(p)) == (eph, sealed))
    for case in adv["invalid"]:
        check(f"advertisement refused: {case['why']}", decode_advertisement(bytes.fromhex(case["payload"])) == case["error"])

    for case in load("epoch_hash.json")["cases"]:
        check("epoch hash", epoch_hash(bytes.fromhex(case["ephid"]), case["epoch"]).hex() == case["epoch_hash"])

    bl = load("bloom.json")
    check("bloom seed", BLOOM_SEED.hex() == bl["seed"])
    check("bloom size", bloom_bytes(bl["capacity"]) == bl["bitmap_bytes"])
    first = bytes.fromhex(bl["items"][0])
    check("bloom bits of first item", sorted(set(bloom_bits(first, bl["bitmap_bytes"] * 8))) == bl["bits_set_by_first_item"])
    bitmap = bytearray(bl["bitmap_bytes"])
    for it in bl["items"]:
        bloom_insert(bitmap, bytes.fromhex(it))
    check("bloom bitmap", bitmap.hex() == bl["bitmap"])
    check("bloom absent items", not any(bloom_contains(bitmap, bytes.fromhex(a)) for a in bl["absent"]))

    b = load("batch.json")
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(b["signing_key_seed"]))
    pub = sk.public_key()
    check("batch public key", pub.public_bytes_raw().hex() == b["public_key"])
    for mode, code, payload in (("compact", 1, compact_payload(b["compact"]["keys"])), ("unlinkable", 2, unlinkable_payload(b["unlinkable"]["items"]))):
        body = batch_body(b[mode], code, payload)
        signed = body + sk.sign(body)
        check(f"{mode} batch bytes", signed.hex() == b[mode]["bytes"])
        check(f"{mode} batch verifies", verify_batch(signed, b[mode]["region"], pub) == "ok")
    for case in b["invalid"]:
        check(f"batch refused: {case['why']}", verify_batch(bytes.fromhex(case["bytes"]), "CH", pub) == case["error"])

    p = load("policy.json")
    sk = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(p["signing_key_seed"]))
    body = policy_body(p["policy"])
    check("policy bytes", (body + sk.sign(body)).hex() == p["bytes"])

    st = load("status.json")
    for case in st["cases"]:
        want = case["expected"]
        colour, green_on, day_totals = evaluate(st["policy"], case["today"], case["positive_test"], case["exposures"], set(case["checkins"]))
        check(f"status: {case['name']}", (colour, green_on) == (want["colour"], want["green_on"]))
        check(f"status day totals: {case['name']}", [list(x) for x in day_totals] == want["day_weighted_secs"])

    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
