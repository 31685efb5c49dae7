#!/usr/bin/env python3
"""Known-answer vectors for agentmesh/1, written from docs/PROTOCOL.md alone.

This is the independent side of the vectors in this directory: it shares no code with the Rust
implementation, only the protocol description. It uses `cryptography` for Ed25519, X25519,
ChaCha20-Poly1305 and HKDF, carries its own RFC 9180 key schedule (so the vectors can list the
intermediate HPKE values and a case no library will seal) and cross-checks every HPKE case with
`pyhpke`, a second HPKE implementation.

    python3 generate.py           write hpke.json, file.json, rotation.json and record.json
    python3 generate.py --check   re-derive every deterministic value of all six files
                                  (canonical.json and signing.json included), check every
                                  signature and refusal, and fail on any difference

Python 3.11; the pinned packages are in requirements.txt (check.sh installs them into a venv).
Every secret here is a public test value: never use one for a real agent.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyhpke
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = Path(__file__).resolve().parent
GENERATED = ("hpke.json", "file.json", "rotation.json", "record.json")

# Labels, from docs/PROTOCOL.md.
CARD_DOMAIN = b"agentmesh/v1 card\n"
ENVELOPE_DOMAIN = b"agentmesh/v1 envelope\n"
RECEIPT_DOMAIN = b"agentmesh/v1 receipt\n"
ROTATION_DOMAIN = b"agentmesh/v1 rotation\n"
RECORD_DOMAIN = b"agentmesh/v1 peer-record\n"
AAD_DOMAIN = b"agentmesh/v1 aad\n"
HPKE_INFO = b"agentmesh/v1 envelope body"
CHUNK_KEY_INFO = b"agentmesh/v1 file chunk key"
TOKEN_INFO = b"agentmesh/v1 file token"
CHUNK_AAD_DOMAIN = b"agentmesh/v1 file chunk\n"

MAX_RECORD_TTL_MS = 86_400_000
MAX_ROTATIONS = 16
T0 = 1774173600000  # 2026-03-22T10:00:00Z, the time signing.json uses

# --------------------------------------------------------------------------------------------
# Encodings


def b64e(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64d(text: str) -> bytes:
    """Standard base64 with padding, strictly (RFC 4648 §4)."""
    data = base64.b64decode(text, validate=True)
    if b64e(data) != text:
        raise ValueError(f"not canonical base64: {text!r}")
    return data


def unhex(text: str) -> bytes:
    if text != text.lower():
        raise ValueError(f"hex must be lowercase: {text!r}")
    return bytes.fromhex(text)


def lp(data: bytes) -> bytes:
    """The 4-byte big-endian length of `data`, then `data`."""
    return len(data).to_bytes(4, "big") + data


def opt(data: bytes | None) -> bytes:
    """A 0 byte when absent, else a 1 byte and lp(data)."""
    return b"\x00" if data is None else b"\x01" + lp(data)


def canonical(value: Any) -> str:
    """Canonical JSON, exactly as PROTOCOL.md states it."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def without(obj: dict, *names: str) -> dict:
    return {k: v for k, v in obj.items() if k not in names}


# --------------------------------------------------------------------------------------------
# Identities


class Identity:
    """An agent's two key pairs, from their 32-byte secrets."""

    def __init__(self, ed25519_secret: bytes, x25519_secret: bytes):
        self.ed_secret = ed25519_secret
        self.x_secret = x25519_secret
        self.signing = Ed25519PrivateKey.from_private_bytes(ed25519_secret)
        self.ed25519 = raw_public(self.signing.public_key())
        self.x25519 = raw_public(X25519PrivateKey.from_private_bytes(x25519_secret).public_key())
        digest = hashlib.sha256(self.ed25519).hexdigest()
        self.agent_id = digest[:16]
        self.fingerprint = "sha256:" + digest

    def sign(self, message: bytes) -> str:
        return b64e(self.signing.sign(message))

    def entry(self) -> dict:
        return {
            "ed25519_secret_hex": self.ed_secret.hex(),
            "x25519_secret_hex": self.x_secret.hex(),
            "ed25519": b64e(self.ed25519),
            "x25519": b64e(self.x25519),
            "agent_id": self.agent_id,
            "fingerprint": self.fingerprint,
        }


def raw_public(key: Any) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def verify_sig(public_b64: str, message: bytes, sig_b64: str) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(b64d(public_b64)).verify(b64d(sig_b64), message)
        return True
    except (InvalidSignature, ValueError, binascii.Error):
        return False


# alice and bob are signing.json's; alice_2 and alice_3 are the keys alice rotates into.
SEEDS = {
    "alice": (0x01, 0x02),
    "bob": (0x03, 0x04),
    "alice_2": (0x05, 0x06),
    "alice_3": (0x07, 0x08),
}
IDS = {name: Identity(bytes([e]) * 32, bytes([x]) * 32) for name, (e, x) in SEEDS.items()}


def identities(*names: str) -> dict:
    return {name: IDS[name].entry() for name in names}


# --------------------------------------------------------------------------------------------
# HPKE, RFC 9180: base mode, DHKEM(X25519, HKDF-SHA256) (0x0020), HKDF-SHA256 (0x0001),
# ChaCha20-Poly1305 (0x0003), single shot (one Seal per context, so the nonce is base_nonce).

KEM_ID, KDF_ID, AEAD_ID = 0x0020, 0x0001, 0x0003
KEM_SUITE = b"KEM" + KEM_ID.to_bytes(2, "big")
HPKE_SUITE = b"HPKE" + KEM_ID.to_bytes(2, "big") + KDF_ID.to_bytes(2, "big") + AEAD_ID.to_bytes(2, "big")


def hkdf_extract(salt: bytes, ikm: bytes) -> bytes:
    mac = hmac.HMAC(salt, hashes.SHA256())
    mac.update(ikm)
    return mac.finalize()


def hkdf_expand(prk: bytes, info: bytes, length: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), length, info).derive(prk)


def labeled_extract(suite: bytes, salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return hkdf_extract(salt, b"HPKE-v1" + suite + label + ikm)


def labeled_expand(suite: bytes, prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    return hkdf_expand(prk, length.to_bytes(2, "big") + b"HPKE-v1" + suite + label + info, length)


def kem_shared_secret(dh: bytes, enc: bytes, pk_r: bytes) -> bytes:
    eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", dh)
    return labeled_expand(KEM_SUITE, eae_prk, b"shared_secret", enc + pk_r, 32)


def key_schedule(shared_secret: bytes, info: bytes) -> tuple[bytes, bytes]:
    """Base mode: no PSK. Returns (key, base_nonce)."""
    psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"")
    info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info)
    context = b"\x00" + psk_id_hash + info_hash
    secret = labeled_extract(HPKE_SUITE, shared_secret, b"secret", b"")
    key = labeled_expand(HPKE_SUITE, secret, b"key", context, 32)
    base_nonce = labeled_expand(HPKE_SUITE, secret, b"base_nonce", context, 12)
    return key, base_nonce


def x25519(secret: bytes, public: bytes) -> bytes:
    """X25519; `cryptography` refuses an all-zero result, as RFC 9180 §7.1.4 requires."""
    return X25519PrivateKey.from_private_bytes(secret).exchange(X25519PublicKey.from_public_bytes(public))


def hpke_seal(pk_r: bytes, info: bytes, aad: bytes, plaintext: bytes, sk_e: bytes, dh: bytes | None = None) -> dict:
    """Seals with a fixed ephemeral secret; `dh` overrides the DH output (for a refusal case)."""
    enc = raw_public(X25519PrivateKey.from_private_bytes(sk_e).public_key())
    if dh is None:
        dh = x25519(sk_e, pk_r)
    shared_secret = kem_shared_secret(dh, enc, pk_r)
    key, base_nonce = key_schedule(shared_secret, info)
    body = ChaCha20Poly1305(key).encrypt(base_nonce, plaintext, aad)
    return {"enc": enc, "shared_secret": shared_secret, "key": key, "base_nonce": base_nonce, "body": body}


def hpke_open(sk_r: bytes, enc: bytes, info: bytes, aad: bytes, body: bytes) -> bytes:
    """Raises ValueError (all-zero DH, bad point) or InvalidTag when the body does not open."""
    pk_r = raw_public(X25519PrivateKey.from_private_bytes(sk_r).public_key())
    shared_secret = kem_shared_secret(x25519(sk_r, enc), enc, pk_r)
    key, base_nonce = key_schedule(shared_secret, info)
    return ChaCha20Poly1305(key).decrypt(base_nonce, body, aad)


PYHPKE = pyhpke.CipherSuite.new(
    pyhpke.KEMId.DHKEM_X25519_HKDF_SHA256, pyhpke.KDFId.HKDF_SHA256, pyhpke.AEADId.CHACHA20_POLY1305
)


def pyhpke_seal(pk_r: bytes, info: bytes, aad: bytes, plaintext: bytes, sk_e: bytes | None) -> tuple[bytes, bytes]:
    eks = None
    if sk_e is not None:
        sk = PYHPKE.kem.deserialize_private_key(sk_e)
        pk = PYHPKE.kem.deserialize_public_key(raw_public(X25519PrivateKey.from_private_bytes(sk_e).public_key()))
        eks = pyhpke.KEMKeyPair(sk, pk)
    enc, sender = PYHPKE.create_sender_context(PYHPKE.kem.deserialize_public_key(pk_r), info, eks=eks)
    return enc, sender.seal(plaintext, aad)


def pyhpke_open(sk_r: bytes, enc: bytes, info: bytes, aad: bytes, body: bytes) -> bytes:
    recipient = PYHPKE.create_recipient_context(enc, PYHPKE.kem.deserialize_private_key(sk_r), info)
    return recipient.open(body, aad)


def opens(open_fn: Callable[..., bytes], *args: bytes) -> bytes | None:
    try:
        return open_fn(*args)
    except Exception:  # noqa: BLE001 - any refusal counts: a bad point, a zero DH, a bad tag
        return None


def envelope_aad(header: dict) -> bytes:
    """The associated data: the label, then lp(from) lp(to) lp(id) lp(type) as UTF-8 text."""
    parts = (header["from"], header["to"], header["id"], header["type"])
    return AAD_DOMAIN + b"".join(lp(p.encode()) for p in parts)


# --------------------------------------------------------------------------------------------
# File chunks: HKDF-SHA256 (RFC 5869) and ChaCha20-Poly1305 (RFC 8439).


def transfer_derive(key: bytes, transfer_id: str, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, transfer_id.encode("ascii"), info).derive(key)


def chunk_nonce(index: int) -> bytes:
    return bytes(4) + index.to_bytes(8, "big")


def chunk_aad(transfer_id: str, index: int, last: bool) -> bytes:
    return CHUNK_AAD_DOMAIN + lp(transfer_id.encode("ascii")) + index.to_bytes(8, "big") + bytes([int(last)])


def chunk_open(key: bytes, transfer_id: str, index: int, last: bool, sealed: bytes) -> bytes:
    chunk_key = transfer_derive(key, transfer_id, CHUNK_KEY_INFO)
    return ChaCha20Poly1305(chunk_key).decrypt(chunk_nonce(index), sealed, chunk_aad(transfer_id, index, last))


# --------------------------------------------------------------------------------------------
# Signed objects


def card_signing_input(card: dict) -> bytes:
    return CARD_DOMAIN + canonical(without(card, "sig")).encode("ascii")


def make_card(signer: Identity, agent_id: str, fields: dict, rotations: list | None = None) -> dict:
    card = {
        "v": 1,
        "agent_id": agent_id,
        "ed25519": b64e(signer.ed25519),
        "x25519": b64e(signer.x25519),
        "fingerprint": signer.fingerprint,
        **fields,
    }
    if rotations:
        card["rotations"] = rotations
    card["sig"] = signer.sign(card_signing_input(card))
    return dict(sorted(card.items()))


def rotation_signing_input(statement: dict) -> bytes:
    return ROTATION_DOMAIN + canonical(without(statement, "old_sig", "new_sig")).encode("ascii")


def make_statement(agent_id: str, seq: int, old: Identity, new: Identity, rotated_at: int, **extra: Any) -> dict:
    statement = {
        "v": 1,
        "agent_id": agent_id,
        "seq": seq,
        "old_ed25519": b64e(old.ed25519),
        "new_ed25519": b64e(new.ed25519),
        "new_x25519": b64e(new.x25519),
        "rotated_at": rotated_at,
        **extra,
    }
    message = rotation_signing_input(statement)
    statement["old_sig"] = old.sign(message)
    statement["new_sig"] = new.sign(message)
    return dict(sorted(statement.items()))


STATEMENT_MEMBERS = {
    "v",
    "agent_id",
    "seq",
    "old_ed25519",
    "new_ed25519",
    "new_x25519",
    "rotated_at",
    "old_sig",
    "new_sig",
}


def chain_verdict(agent_id: str, chain: list, ed25519: str, x25519_key: str) -> str | None:
    """Why the chain is refused for a card with these id and keys, or None when it is valid
    (PROTOCOL.md, "Key rotation")."""
    if len(chain) > MAX_ROTATIONS:
        return "too long"
    if not chain:
        return None if hashlib.sha256(b64d(ed25519)).hexdigest()[:16] == agent_id else "wrong genesis"
    if hashlib.sha256(b64d(chain[0]["old_ed25519"])).hexdigest()[:16] != agent_id:
        return "wrong genesis"
    keys = [chain[0]["old_ed25519"]]
    last_time = 0
    for i, s in enumerate(chain, start=1):
        if set(s) != STATEMENT_MEMBERS:
            return f"statement {i}: unknown or missing members"
        if s["v"] != 1 or s["seq"] != i or s["agent_id"] != agent_id or s["old_ed25519"] != keys[-1]:
            return f"statement {i} does not follow"
        if s["rotated_at"] < last_time:
            return f"statement {i} goes back in time"
        if s["new_ed25519"] in keys:
            return f"statement {i} repeats a key"
        message = rotation_signing_input(s)
        if not verify_sig(s["old_ed25519"], message, s["old_sig"]):
            return f"statement {i}: old_sig"
        if not verify_sig(s["new_ed25519"], message, s["new_sig"]):
            return f"statement {i}: new_sig"
        last_time = s["rotated_at"]
        keys.append(s["new_ed25519"])
    if chain[-1]["new_ed25519"] != ed25519 or chain[-1]["new_x25519"] != x25519_key:
        return "does not end at the card's keys"
    return None


def record_signing_input(record: dict) -> bytes:
    return RECORD_DOMAIN + canonical(without(record, "sig")).encode("ascii")


def envelope_signing_bytes(e: dict) -> bytes:
    card_digest = hashlib.sha256(canonical(e["card"]).encode("ascii")).digest() if "card" in e else None
    out = ENVELOPE_DOMAIN
    for name in ("v", "id", "type", "from", "to", "created_at", "sent_at", "expires_at"):
        out += lp(str(e[name]).encode())
    out += opt(e["reply_to"].encode() if "reply_to" in e else None)
    out += opt(e["thread"].encode() if "thread" in e else None)
    for name in ("content_type", "enc", "body"):
        out += lp(e[name].encode())
    return out + opt(card_digest)


def receipt_signing_bytes(r: dict) -> bytes:
    return RECEIPT_DOMAIN + b"".join(lp(str(r[n]).encode()) for n in ("v", "message_id", "from", "to", "status", "at"))


# --------------------------------------------------------------------------------------------
# The cases. Inputs only: every other value is derived by the functions below.

BOB_SENDS = {"from": IDS["bob"].agent_id, "to": IDS["alice"].agent_id}
ALICE_SENDS = {"from": IDS["alice"].agent_id, "to": IDS["bob"].agent_id}

HPKE_CASES = [
    {
        "name": "message_text",
        "recipient": "bob",
        "envelope": {**ALICE_SENDS, "id": "01961a2b-3c4d-7e5f-8a9b-0c1d2e3f4a5b", "type": "message"},
        "plaintext_hex": "hello bob \u2615 the plan for Q3 is in the shared folder".encode().hex(),
        "ephemeral_secret_hex": "11" * 32,
    },
    {
        "name": "empty_body",
        "recipient": "bob",
        "envelope": {**ALICE_SENDS, "id": "01961a2b-3c4d-7e5f-8a9b-0c1d2e3f4a5c", "type": "message"},
        "plaintext_hex": "",
        "ephemeral_secret_hex": "12" * 32,
    },
    {
        "name": "contact_request_json",
        "recipient": "alice",
        "envelope": {**BOB_SENDS, "id": "req_0123456789abcdef0123456789abcdef", "type": "contact_request"},
        "plaintext_hex": canonical(
            {"request_id": "req_0123456789abcdef0123456789abcdef", "purpose": "coordinate the Q3 plan"}
        )
        .encode()
        .hex(),
        "ephemeral_secret_hex": "13" * 32,
    },
    {
        "name": "key_rotation_empty_object",
        "recipient": "bob",
        "envelope": {**ALICE_SENDS, "id": "01961a2b-3c4d-7e5f-8a9b-0c1d2e3f4a5d", "type": "key_rotation"},
        "plaintext_hex": b"{}".hex(),
        "ephemeral_secret_hex": "14" * 32,
    },
    {
        "name": "binary_body_longest_id",
        "recipient": "alice",
        "envelope": {**BOB_SENDS, "id": ("Ab0-_" * 26)[:128], "type": "message"},
        "plaintext_hex": bytes(range(256)).hex(),
        "ephemeral_secret_hex": bytes(range(0xA0, 0xC0)).hex(),
    },
]

# Each is the first case (`message_text`, for bob) with one thing changed.
HPKE_REFUSED = [
    ("body_bit_flipped", "a bit of the ciphertext is flipped", {"flip_body": 0}),
    ("tag_bit_flipped", "a bit of the tag is flipped", {"flip_body": -1}),
    ("body_truncated", "the body is 15 bytes, shorter than a tag", {"truncate": 15}),
    (
        "aad_other_type",
        "the envelope's type is `receipt`, not the `message` sealed for",
        {"envelope": {"type": "receipt"}},
    ),
    (
        "aad_other_id",
        "the envelope's id differs from the one sealed for",
        {"envelope": {"id": "01961a2b-3c4d-7e5f-8a9b-0c1d2e3f4a5e"}},
    ),
    (
        "aad_from_to_swapped",
        "from and to are swapped",
        {"envelope": {"from": ALICE_SENDS["to"], "to": ALICE_SENDS["from"]}},
    ),
    ("other_recipient_key", "opened with alice's X25519 key; the body was sealed to bob's", {"recipient": "alice"}),
    ("other_info", "sealed with info `agentmesh/v1 envelope`", {"info": b"agentmesh/v1 envelope"}),
    (
        "enc_small_order_point",
        (
            "enc is the all-zero X25519 point, so the DH output is all zero (RFC 9180 §7.1.4): the body "
            "was sealed with the key schedule of a zero DH, which anyone can compute"
        ),
        {"zero_dh": True},
    ),
]

FILE_TEXT = b"".join(f"line {i:05d} of the agentmesh file-transfer vector\n".encode() for i in range(200))[:8292]

FILE_TRANSFERS = [
    {
        "name": "chunk_edge_cases",
        "key_hex": bytes(range(32)).hex(),
        "transfer_id": "file_0123456789abcdef0123456789abcdef",
        "chunks": [
            {"index": 0, "last": False, "plaintext_hex": b"first chunk".hex()},
            {"index": 0, "last": True, "plaintext_hex": b"first chunk".hex()},
            {"index": 1, "last": False, "plaintext_hex": ""},
            {"index": 255, "last": False, "plaintext_hex": b"index 255".hex()},
            {"index": 4294967296, "last": True, "plaintext_hex": b"index 2^32: eight index bytes, not four".hex()},
        ],
    },
    {
        "name": "whole_file",
        "key_hex": "42" * 32,
        "transfer_id": "file_" + hashlib.sha256(b"agentmesh vectors transfer").hexdigest()[:32],
        "file": {"size": len(FILE_TEXT), "chunk_size": 4096, "sha256": hashlib.sha256(FILE_TEXT).hexdigest()},
        "chunks": [
            {"index": i, "last": i == 2, "plaintext_hex": FILE_TEXT[i * 4096 : (i + 1) * 4096].hex()} for i in range(3)
        ],
    },
]

# (name, why, transfer opened under, index, last, from (transfer, chunk position), tamper)
FILE_REFUSED = [
    (
        "wrong_index",
        "chunk 0 of chunk_edge_cases opened as chunk 1",
        "chunk_edge_cases",
        1,
        False,
        ("chunk_edge_cases", 0),
        None,
    ),
    (
        "last_flag_cleared",
        "the last chunk of whole_file opened as not last (a file cut short)",
        "whole_file",
        2,
        False,
        ("whole_file", 2),
        None,
    ),
    (
        "last_flag_set",
        "chunk 0 of chunk_edge_cases (not last) opened as the last chunk",
        "chunk_edge_cases",
        0,
        True,
        ("chunk_edge_cases", 0),
        None,
    ),
    (
        "other_transfer",
        "chunk 0 of chunk_edge_cases opened under whole_file's key and id",
        "whole_file",
        0,
        False,
        ("chunk_edge_cases", 0),
        None,
    ),
    (
        "bit_flipped",
        "chunk 0 of chunk_edge_cases with a bit of its ciphertext flipped",
        "chunk_edge_cases",
        0,
        False,
        ("chunk_edge_cases", 0),
        "flip",
    ),
    (
        "tag_bit_flipped",
        "the last chunk of whole_file with a bit of its tag flipped",
        "whole_file",
        2,
        True,
        ("whole_file", 2),
        "flip_tag",
    ),
    ("too_short", "15 bytes, shorter than a tag", "chunk_edge_cases", 1, False, ("chunk_edge_cases", 2), "truncate"),
]

CARD_FIELDS = {
    "name": "alice",
    "endpoints": ["http://127.0.0.1:8787"],
    "capabilities": ["planning"],
    "protocols": ["agentmesh/1", "openclaw-agent-mesh/v1"],
    "created_at": T0,
}

# (old, new, seq, rotated_at)
STATEMENTS = [("alice", "alice_2", 1, T0 + 86_400_000), ("alice_2", "alice_3", 2, T0 + 2 * 86_400_000)]

# --------------------------------------------------------------------------------------------
# Derivations: inputs -> every derived value. Generation writes them; --check compares them.


def derive_hpke_case(case: dict, pk_r: bytes, info: bytes = HPKE_INFO) -> dict:
    aad = envelope_aad(case["envelope"])
    plaintext = unhex(case["plaintext_hex"])
    sealed = hpke_seal(pk_r, info, aad, plaintext, unhex(case["ephemeral_secret_hex"]))
    return {
        "aad_hex": aad.hex(),
        "enc": b64e(sealed["enc"]),
        "shared_secret_hex": sealed["shared_secret"].hex(),
        "key_hex": sealed["key"].hex(),
        "base_nonce_hex": sealed["base_nonce"].hex(),
        "body": b64e(sealed["body"]),
    }


def hpke_refused(base: dict) -> list:
    out = []
    pk_r = IDS[base["recipient"]].x25519
    sealed = derive_hpke_case(base, pk_r)
    for name, why, change in HPKE_REFUSED:
        envelope = {**base["envelope"], **change.get("envelope", {})}
        enc, body = b64d(sealed["enc"]), bytearray(b64d(sealed["body"]))
        if "flip_body" in change:
            body[change["flip_body"]] ^= 0x01
        if "truncate" in change:
            body = body[: change["truncate"]]
        if "info" in change:
            d = derive_hpke_case(base, pk_r, info=change["info"])
            enc, body = b64d(d["enc"]), b64d(d["body"])
        if change.get("zero_dh"):
            shared_secret = kem_shared_secret(bytes(32), bytes(32), pk_r)
            key, nonce = key_schedule(shared_secret, HPKE_INFO)
            enc, body = (
                bytes(32),
                ChaCha20Poly1305(key).encrypt(nonce, unhex(base["plaintext_hex"]), envelope_aad(envelope)),
            )
        out.append(
            {
                "name": name,
                "why": why,
                "recipient": change.get("recipient", base["recipient"]),
                "envelope": envelope,
                "enc": b64e(enc),
                "body": b64e(bytes(body)),
            }
        )
    return out


def derive_transfer(t: dict) -> dict:
    key, tid = unhex(t["key_hex"]), t["transfer_id"]
    chunk_key = transfer_derive(key, tid, CHUNK_KEY_INFO)
    return {
        "key": b64e(key),
        "chunk_key_hex": chunk_key.hex(),
        "token": transfer_derive(key, tid, TOKEN_INFO).hex(),
    }


def derive_chunk(t: dict, c: dict) -> dict:
    chunk_key = transfer_derive(unhex(t["key_hex"]), t["transfer_id"], CHUNK_KEY_INFO)
    nonce, aad = chunk_nonce(c["index"]), chunk_aad(t["transfer_id"], c["index"], c["last"])
    sealed = ChaCha20Poly1305(chunk_key).encrypt(nonce, unhex(c["plaintext_hex"]), aad)
    return {"nonce_hex": nonce.hex(), "aad_hex": aad.hex(), "sealed_hex": sealed.hex()}


def file_refused(transfers: list) -> list:
    by_name = {t["name"]: t for t in transfers}
    out = []
    for name, why, under, index, last, (src, pos), tamper in FILE_REFUSED:
        sealed = bytearray(unhex(by_name[src]["chunks"][pos]["sealed_hex"]))
        if tamper == "flip":
            sealed[0] ^= 0x01
        if tamper == "flip_tag":
            sealed[-1] ^= 0x80
        if tamper == "truncate":
            sealed = sealed[:15]
        out.append(
            {
                "name": name,
                "why": why,
                "transfer": under,
                "index": index,
                "last": last,
                "sealed_hex": bytes(sealed).hex(),
            }
        )
    return out


# --------------------------------------------------------------------------------------------
# Generation


def generate_hpke() -> dict:
    cases = [{**c, **derive_hpke_case(c, IDS[c["recipient"]].x25519)} for c in HPKE_CASES]
    return {
        "about": "agentmesh/1 HPKE vectors for envelope bodies; see docs/PROTOCOL.md, section 'Test vectors'. "
        "Secrets are public test values: never use them for a real agent.",
        "suite": {"mode": 0, "kem_id": KEM_ID, "kdf_id": KDF_ID, "aead_id": AEAD_ID},
        "info": HPKE_INFO.decode(),
        "identities": identities("alice", "bob"),
        "cases": cases,
        "refused": hpke_refused(HPKE_CASES[0]),
    }


def generate_file() -> dict:
    transfers = []
    for t in FILE_TRANSFERS:
        derived = derive_transfer(t)
        out = {"name": t["name"], "key_hex": t["key_hex"], "key": derived["key"], "transfer_id": t["transfer_id"]}
        out.update(chunk_key_hex=derived["chunk_key_hex"], token=derived["token"])
        if "file" in t:
            out["file"] = t["file"]
        out["chunks"] = [{**c, **derive_chunk(t, c)} for c in t["chunks"]]
        transfers.append(out)
    return {
        "about": "agentmesh/1 file-chunk vectors; see docs/PROTOCOL.md, section 'Test vectors'. "
        "Keys are public test values: never use them for a real transfer.",
        "chunk_key_info": CHUNK_KEY_INFO.decode(),
        "token_info": TOKEN_INFO.decode(),
        "transfers": transfers,
        "refused": file_refused(transfers),
    }


def generate_rotation() -> dict:
    agent_id = IDS["alice"].agent_id
    statements = {}
    for old, new, seq, at in STATEMENTS:
        statements[seq] = make_statement(agent_id, seq, IDS[old], IDS[new], at)
    s1, s2 = statements[1], statements[2]
    cases = []
    for old, new, seq, _ in STATEMENTS:
        s = statements[seq]
        cases.append(
            {
                "name": f"{old}_to_{new}",
                "old": old,
                "new": new,
                "statement": s,
                "signing_input": rotation_signing_input(s).decode("ascii"),
                "old_sig": s["old_sig"],
                "new_sig": s["new_sig"],
            }
        )
    card = make_card(IDS["alice_3"], agent_id, {**CARD_FIELDS, "created_at": T0 + 2 * 86_400_000}, [s1, s2])
    cards = [
        {
            "name": "alice_after_two_rotations",
            "signer": "alice_3",
            "card": card,
            "signing_input": card_signing_input(card).decode("ascii"),
            "sig": card["sig"],
        }
    ]
    a, a2, a3 = IDS["alice"], IDS["alice_2"], IDS["alice_3"]
    back_in_time = make_statement(agent_id, 2, a2, a3, s1["rotated_at"] - 1)
    back_to_genesis = make_statement(agent_id, 2, a2, a, T0 + 2 * 86_400_000)
    new_key_only = dict(s2, old_sig=a3.sign(rotation_signing_input(s2)))
    tampered = dict(s2, rotated_at=s2["rotated_at"] + 1)
    unknown_member = make_statement(
        agent_id, 2, a2, a3, s2["rotated_at"], x_note="signed, but not a member of the format"
    )
    other_id = make_statement(IDS["bob"].agent_id, 1, a, a2, s1["rotated_at"])
    head = {n: (b64e(IDS[n].ed25519), b64e(IDS[n].x25519)) for n in ("alice", "alice_2", "alice_3", "bob")}
    chain_specs = [
        ("two_rotations", "alice_3", [s1, s2], agent_id),
        ("one_rotation", "alice_2", [s1], agent_id),
        ("never_rotated", "alice", [], agent_id),
        ("missing_first", "alice_3", [s2], agent_id),
        ("reordered", "alice_3", [s2, s1], agent_id),
        ("ends_elsewhere", "alice_3", [s1], agent_id),
        ("statement_names_another_id", "alice_2", [other_id], agent_id),
        ("rotated_at_goes_back", "alice_3", [s1, back_in_time], agent_id),
        ("back_to_genesis_key", "alice", [s1, back_to_genesis], agent_id),
        ("old_sig_by_new_key", "alice_3", [s1, new_key_only], agent_id),
        ("signed_member_altered", "alice_3", [s1, tampered], agent_id),
        ("unknown_member", "alice_3", [s1, unknown_member], agent_id),
    ]
    chains = []
    for name, current, chain, aid in chain_specs:
        ed, x = head[current]
        verdict = chain_verdict(aid, chain, ed, x)
        chains.append(
            {"name": name, "agent_id": aid, "ed25519": ed, "x25519": x, "rotations": chain, "valid": verdict is None}
        )
    return {
        "about": "agentmesh/1 key-rotation vectors; see docs/PROTOCOL.md, section 'Test vectors'. "
        "Secrets are public test values: never use them for a real agent.",
        "identities": identities("alice", "alice_2", "alice_3", "bob"),
        "agent_id": agent_id,
        "statements": cases,
        "cards": cards,
        "chains": chains,
    }


def generate_record(signing: dict, rotation: dict) -> dict:
    cards = {c["name"]: c["card"] for c in signing["cards"]}
    rotated = rotation["cards"][0]["card"]
    specs = [
        ("alice_one_hour", "alice", cards["alice_card"], T0, T0 + 3_600_000),
        (
            "bob_unknown_members_one_day",
            "bob",
            cards["bob_card_unknown_members_non_ascii"],
            T0 + 1,
            T0 + 1 + MAX_RECORD_TTL_MS,
        ),
        ("alice_rotated", "alice_3", rotated, T0 + 2 * 86_400_000, T0 + 2 * 86_400_000 + 1_800_000),
    ]
    records = []
    for name, signer, card, issued_at, expires_at in specs:
        record = {"v": 1, "card": card, "issued_at": issued_at, "expires_at": expires_at}
        record["sig"] = IDS[signer].sign(record_signing_input(record))
        record = dict(sorted(record.items()))
        records.append(
            {
                "name": name,
                "signer": signer,
                "record": record,
                "signing_input": record_signing_input(record).decode("ascii"),
                "sig": record["sig"],
            }
        )
    return {
        "about": "agentmesh/1 peer-record vectors; see docs/PROTOCOL.md, section 'Test vectors'. "
        "Secrets are public test values: never use them for a real agent.",
        "identities": identities("alice", "bob", "alice_3"),
        "records": records,
    }


def generate_all(directory: Path) -> dict[str, dict]:
    signing = json.loads((directory / "signing.json").read_text("ascii"))
    rotation = generate_rotation()
    return {
        "hpke.json": generate_hpke(),
        "file.json": generate_file(),
        "rotation.json": rotation,
        "record.json": generate_record(signing, rotation),
    }


def dump(doc: Any) -> str:
    return json.dumps(doc, indent=2, ensure_ascii=True) + "\n"


# --------------------------------------------------------------------------------------------
# Checking: from the files' inputs, never from the tables above.


class Checker:
    def __init__(self) -> None:
        self.failures: list[str] = []
        self.checked = 0

    def eq(self, where: str, got: Any, want: Any) -> None:
        self.checked += 1
        if got != want:
            self.failures.append(f"{where}:\n    file has {want!r}\n    derived  {got!r}")

    def ok(self, where: str, condition: bool, what: str) -> None:
        self.checked += 1
        if not condition:
            self.failures.append(f"{where}: {what}")


def file_identities(ck: Checker, fname: str, doc: dict) -> dict[str, Identity]:
    out = {}
    for name, entry in doc["identities"].items():
        ident = Identity(unhex(entry["ed25519_secret_hex"]), unhex(entry["x25519_secret_hex"]))
        ck.eq(f"{fname} identities.{name}", ident.entry(), entry)
        out[name] = ident
    return out


def check_card(ck: Checker, where: str, card: dict, signer: Identity | None = None) -> None:
    """A card's own derivations: fingerprint and key, id (directly or through its chain), sig."""
    ck.eq(f"{where} fingerprint", "sha256:" + hashlib.sha256(b64d(card["ed25519"])).hexdigest(), card["fingerprint"])
    verdict = chain_verdict(card["agent_id"], card.get("rotations", []), card["ed25519"], card["x25519"])
    ck.ok(where, verdict is None, f"agent_id or rotation chain refused: {verdict}")
    ck.ok(where, verify_sig(card["ed25519"], card_signing_input(card), card["sig"]), "card sig does not verify")
    if signer is not None:
        ck.eq(f"{where} ed25519", b64e(signer.ed25519), card["ed25519"])
        ck.eq(f"{where} x25519", b64e(signer.x25519), card["x25519"])
        ck.eq(f"{where} sig", signer.sign(card_signing_input(card)), card["sig"])


def check_canonical(ck: Checker, doc: list) -> None:
    for i, case in enumerate(doc):
        ck.eq(f"canonical.json [{i}] {case['name']}", canonical(json.loads(case["input"])), case["canonical"])


def check_signing(ck: Checker, doc: dict) -> None:
    ids = file_identities(ck, "signing.json", doc)
    for c in doc["cards"]:
        where = f"signing.json cards {c['name']}"
        check_card(ck, where, c["card"], ids[c["signer"]])
        ck.eq(f"{where} signing_input", card_signing_input(c["card"]).decode("ascii"), c["signing_input"])
        ck.eq(f"{where} sig", c["card"]["sig"], c["sig"])
        ck.eq(f"{where} card_canonical", canonical(c["card"]), c["card_canonical"])
        ck.eq(
            f"{where} card_sha256_hex",
            hashlib.sha256(c["card_canonical"].encode("ascii")).hexdigest(),
            c["card_sha256_hex"],
        )
    for c in doc["envelopes"]:
        where, e = f"signing.json envelopes {c['name']}", c["envelope"]
        signer = ids[c["signer"]]
        ck.eq(f"{where} from", signer.agent_id, e["from"])
        message = envelope_signing_bytes(e)
        ck.eq(f"{where} signing_bytes_hex", message.hex(), c["signing_bytes_hex"])
        ck.eq(f"{where} sig", signer.sign(message), c["sig"])
        ck.eq(f"{where} envelope.sig", c["sig"], e["sig"])
        if "card" in e:
            check_card(ck, f"{where} card", e["card"], signer)
    for c in doc["receipts"]:
        where, r = f"signing.json receipts {c['name']}", c["receipt"]
        signer = ids[c["signer"]]
        ck.eq(f"{where} from", signer.agent_id, r["from"])
        message = receipt_signing_bytes(r)
        ck.eq(f"{where} signing_bytes_hex", message.hex(), c["signing_bytes_hex"])
        ck.eq(f"{where} sig", signer.sign(message), c["sig"])
        ck.eq(f"{where} receipt.sig", c["sig"], r["sig"])


def check_hpke(ck: Checker, doc: dict) -> None:
    ids = file_identities(ck, "hpke.json", doc)
    ck.eq("hpke.json suite", {"mode": 0, "kem_id": KEM_ID, "kdf_id": KDF_ID, "aead_id": AEAD_ID}, doc["suite"])
    ck.eq("hpke.json info", HPKE_INFO.decode(), doc["info"])
    info = doc["info"].encode("ascii")
    for c in doc["cases"]:
        where = f"hpke.json cases {c['name']}"
        recipient = ids[c["recipient"]]
        ck.eq(f"{where} envelope.to", recipient.agent_id, c["envelope"]["to"])
        for k, v in derive_hpke_case(c, recipient.x25519, info).items():
            ck.eq(f"{where} {k}", v, c[k])
        aad = envelope_aad(c["envelope"])
        plaintext = unhex(c["plaintext_hex"])
        sk_e = unhex(c["ephemeral_secret_hex"])
        enc, body = b64d(c["enc"]), b64d(c["body"])
        ck.eq(f"{where} opened", opens(hpke_open, recipient.x_secret, enc, info, aad, body), plaintext)
        # A second implementation: pyhpke seals the same bytes with the same ephemeral key,
        # opens the file's body, and its own sealing under a random ephemeral key opens here.
        ck.eq(f"{where} pyhpke seal", pyhpke_seal(recipient.x25519, info, aad, plaintext, sk_e), (enc, body))
        ck.eq(f"{where} pyhpke opened", opens(pyhpke_open, recipient.x_secret, enc, info, aad, body), plaintext)
        fresh_enc, fresh_body = pyhpke_seal(recipient.x25519, info, aad, plaintext, None)
        ck.eq(
            f"{where} pyhpke random ephemeral",
            opens(hpke_open, recipient.x_secret, fresh_enc, info, aad, fresh_body),
            plaintext,
        )
    ck.ok("hpke.json", len(doc["refused"]) > 0, "no refused cases")
    for c in doc["refused"]:
        where = f"hpke.json refused {c['name']}"
        sk_r = ids[c["recipient"]].x_secret
        args = (sk_r, b64d(c["enc"]), info, envelope_aad(c["envelope"]), b64d(c["body"]))
        ck.ok(where, opens(hpke_open, *args) is None, "opens, but must be refused")
        ck.ok(where, opens(pyhpke_open, *args) is None, "pyhpke opens it, but it must be refused")


def check_file(ck: Checker, doc: dict) -> None:
    ck.eq("file.json chunk_key_info", CHUNK_KEY_INFO.decode(), doc["chunk_key_info"])
    ck.eq("file.json token_info", TOKEN_INFO.decode(), doc["token_info"])
    transfers = {}
    for t in doc["transfers"]:
        where = f"file.json transfers {t['name']}"
        transfers[t["name"]] = t
        for k, v in derive_transfer(t).items():
            ck.eq(f"{where} {k}", v, t[k])
        ck.ok(
            where,
            len(t["transfer_id"]) == 37 and t["transfer_id"].startswith("file_"),
            "transfer_id is not file_ + 32 hex",
        )
        for c in t["chunks"]:
            cw = f"{where} chunk {c['index']} last={c['last']}"
            for k, v in derive_chunk(t, c).items():
                ck.eq(f"{cw} {k}", v, c[k])
            opened = opens(
                chunk_open, unhex(t["key_hex"]), t["transfer_id"], c["index"], c["last"], unhex(c["sealed_hex"])
            )
            ck.eq(f"{cw} opened", opened, unhex(c["plaintext_hex"]))
        if "file" in t:
            f = t["file"]
            count = -(-f["size"] // f["chunk_size"])
            ck.eq(f"{where} chunk indexes", [c["index"] for c in t["chunks"]], list(range(count)))
            ck.eq(f"{where} last flags", [c["last"] for c in t["chunks"]], [i == count - 1 for i in range(count)])
            whole = b"".join(unhex(c["plaintext_hex"]) for c in t["chunks"])
            ck.eq(f"{where} size", len(whole), f["size"])
            ck.eq(f"{where} sha256", hashlib.sha256(whole).hexdigest(), f["sha256"])
            for c in t["chunks"]:
                ck.eq(
                    f"{where} chunk {c['index']} length",
                    len(unhex(c["sealed_hex"])),
                    min(f["chunk_size"], f["size"] - c["index"] * f["chunk_size"]) + 16,
                )
    ck.ok("file.json", len(doc["refused"]) > 0, "no refused cases")
    for c in doc["refused"]:
        t = transfers[c["transfer"]]
        opened = opens(chunk_open, unhex(t["key_hex"]), t["transfer_id"], c["index"], c["last"], unhex(c["sealed_hex"]))
        ck.ok(f"file.json refused {c['name']}", opened is None, "opens, but must be refused")


def check_rotation(ck: Checker, doc: dict) -> None:
    ids = file_identities(ck, "rotation.json", doc)
    agent_id = doc["agent_id"]
    for c in doc["statements"]:
        where, s = f"rotation.json statements {c['name']}", c["statement"]
        old, new = ids[c["old"]], ids[c["new"]]
        rebuilt = make_statement(s["agent_id"], s["seq"], old, new, s["rotated_at"])
        ck.eq(f"{where} statement", rebuilt, s)
        ck.eq(f"{where} agent_id", s["agent_id"], agent_id)
        message = rotation_signing_input(s)
        ck.eq(f"{where} signing_input", message.decode("ascii"), c["signing_input"])
        ck.eq(f"{where} old_sig", old.sign(message), c["old_sig"])
        ck.eq(f"{where} new_sig", new.sign(message), c["new_sig"])
        ck.ok(where, verify_sig(s["old_ed25519"], message, c["old_sig"]), "old_sig does not verify")
        ck.ok(where, verify_sig(s["new_ed25519"], message, c["new_sig"]), "new_sig does not verify")
    for c in doc["cards"]:
        where, card = f"rotation.json cards {c['name']}", c["card"]
        check_card(ck, where, card, ids[c["signer"]])
        ck.eq(f"{where} agent_id", card["agent_id"], agent_id)
        ck.eq(f"{where} signing_input", card_signing_input(card).decode("ascii"), c["signing_input"])
        ck.eq(f"{where} sig", card["sig"], c["sig"])
    valid = [c["valid"] for c in doc["chains"]]
    ck.ok("rotation.json chains", True in valid and False in valid, "chains need valid and refused cases")
    for c in doc["chains"]:
        verdict = chain_verdict(c["agent_id"], c["rotations"], c["ed25519"], c["x25519"])
        ck.eq(f"rotation.json chains {c['name']} valid ({verdict})", verdict is None, c["valid"])


def check_record(ck: Checker, doc: dict) -> None:
    ids = file_identities(ck, "record.json", doc)
    for c in doc["records"]:
        where, r = f"record.json records {c['name']}", c["record"]
        signer = ids[c["signer"]]
        ck.eq(f"{where} members", sorted(r), ["card", "expires_at", "issued_at", "sig", "v"])
        check_card(ck, f"{where} card", r["card"], signer)
        ck.ok(where, 0 < r["expires_at"] - r["issued_at"] <= MAX_RECORD_TTL_MS, "window is not 1 ms to 1 day")
        message = record_signing_input(r)
        ck.eq(f"{where} signing_input", message.decode("ascii"), c["signing_input"])
        ck.eq(f"{where} sig", signer.sign(message), c["sig"])
        ck.eq(f"{where} record.sig", c["sig"], r["sig"])
        ck.ok(where, verify_sig(r["card"]["ed25519"], message, r["sig"]), "sig does not verify under the card's key")


def check_all(directory: Path) -> int:
    ck = Checker()
    docs = {}
    for name in ("canonical.json", "signing.json", *GENERATED):
        text = (directory / name).read_text("ascii")
        docs[name] = json.loads(text)
        ck.eq(f"{name} layout (json.dumps, indent 2, ASCII, final newline)", dump(docs[name]), text)
    check_canonical(ck, docs["canonical.json"])
    check_signing(ck, docs["signing.json"])
    check_hpke(ck, docs["hpke.json"])
    check_file(ck, docs["file.json"])
    check_rotation(ck, docs["rotation.json"])
    check_record(ck, docs["record.json"])
    # The generated files are exactly what this script writes (so they cannot drift from it).
    for name, doc in generate_all(directory).items():
        ck.ok(name, dump(doc) == dump(docs[name]), "differs from what generate.py writes: run it and review the diff")
    if ck.failures:
        print(f"FAIL: {len(ck.failures)} of {ck.checked} vector checks in {directory}:", file=sys.stderr)
        for failure in ck.failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"ok: {ck.checked} vector checks passed in {directory} ({', '.join(docs)})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="check the files instead of writing them")
    parser.add_argument("--dir", type=Path, default=HERE, help="the vectors directory (default: this script's)")
    args = parser.parse_args()
    if args.check:
        return check_all(args.dir)
    for name, doc in generate_all(args.dir).items():
        (args.dir / name).write_text(dump(doc), "ascii")
        print(f"wrote {args.dir / name}")
    return check_all(args.dir)


if __name__ == "__main__":
    sys.exit(main())
