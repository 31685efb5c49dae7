//! Checks our implementation against the published test vectors in `docs/vectors/` (described in
//! `docs/PROTOCOL.md`, section "Test vectors"): canonical JSON and the bytes our signatures cover
//! here, HPKE bodies, file chunks, key rotations and peer records in the submodules. The vectors
//! come from `docs/vectors/generate.py`, which shares no code with ours.

mod file;
mod hpke;
mod record;
mod rotation;

use std::collections::BTreeMap;

use agentmesh_core::{AgentCard, DeliveryReceipt, Envelope, Identity, b64, canonical};
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::Value;
use sha2::{Digest, Sha256};

const CANONICAL: &str = include_str!("../../../../docs/vectors/canonical.json");
const SIGNING: &str = include_str!("../../../../docs/vectors/signing.json");

#[test]
fn canonical_json_vectors() {
    let cases: Vec<Value> = serde_json::from_str(CANONICAL).expect("canonical.json parses");
    assert!(cases.len() >= 20, "expected at least 20 canonical JSON vectors, found {}", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let name = str_at(case, "name", "canonical.json");
        let input = str_at(case, "input", name);
        let expected = str_at(case, "canonical", name);
        match serde_json::from_str::<Value>(input) {
            Ok(value) => {
                let got = canonical::to_string(&value);
                if got != expected {
                    failures.push(format!("{name}:\n  expected {expected}\n  got      {got}"));
                }
            }
            Err(e) => failures.push(format!("{name}: input does not parse: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} canonical JSON vector(s) differ:\n{}", failures.len(), failures.join("\n"));
}

fn str_at<'a>(value: &'a Value, key: &str, case: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{case}: `{key}` is not a string"))
}

fn secret(value: &Value, key: &str, case: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    hex::decode_to_slice(str_at(value, key, case), &mut out).unwrap_or_else(|e| panic!("{case}: {key}: {e}"));
    out
}

fn hex_at(value: &Value, key: &str, case: &str) -> Vec<u8> {
    hex::decode(str_at(value, key, case)).unwrap_or_else(|e| panic!("{case}: {key}: {e}"))
}

fn u64_at(value: &Value, key: &str, case: &str) -> u64 {
    value[key].as_u64().unwrap_or_else(|| panic!("{case}: `{key}` is not an unsigned integer"))
}

/// The identities a vector file (`fname`) lists, rebuilt from their secrets and checked against
/// the public values the file lists; each with the Ed25519 key as the file states it.
fn identities(file: &Value, fname: &str) -> BTreeMap<String, (Identity, VerifyingKey)> {
    let listed = file["identities"].as_object().unwrap_or_else(|| panic!("{fname}: identities"));
    assert!(!listed.is_empty(), "{fname} lists no identities");
    listed
        .iter()
        .map(|(name, entry)| {
            let identity = Identity::from_secret_bytes(
                &secret(entry, "ed25519_secret_hex", name),
                &secret(entry, "x25519_secret_hex", name),
            )
            .unwrap_or_else(|e| panic!("{name}: {e}"));
            let public = identity.public();
            assert_eq!(b64::encode(public.ed25519.as_bytes()), str_at(entry, "ed25519", name), "{name}: ed25519");
            assert_eq!(b64::encode(public.x25519), str_at(entry, "x25519", name), "{name}: x25519");
            assert_eq!(identity.agent_id().to_string(), str_at(entry, "agent_id", name), "{name}: agent_id");
            assert_eq!(identity.fingerprint().as_str(), str_at(entry, "fingerprint", name), "{name}: fingerprint");
            let stated = b64::decode_array::<32>(str_at(entry, "ed25519", name))
                .and_then(|k| VerifyingKey::from_bytes(&k).ok())
                .unwrap_or_else(|| panic!("{name}: ed25519 is not a public key"));
            (name.clone(), (identity, stated))
        })
        .collect()
}

/// Checks `sig` over `message` under the key the file states, and that one flipped bit breaks it.
fn assert_verifies(key: &VerifyingKey, message: &[u8], sig: &str, case: &str) {
    let sig = Signature::from_bytes(&b64::decode_array::<64>(sig).unwrap_or_else(|| panic!("{case}: sig")));
    key.verify_strict(message, &sig).unwrap_or_else(|e| panic!("{case}: signature does not verify: {e}"));
    let mut altered = message.to_vec();
    if let Some(last) = altered.last_mut() {
        *last ^= 1;
    }
    assert!(key.verify_strict(&altered, &sig).is_err(), "{case}: signature verifies over altered bytes");
}

fn cases<'a>(file: &'a Value, fname: &str, kind: &str) -> &'a [Value] {
    let cases = file[kind].as_array().unwrap_or_else(|| panic!("{fname}: `{kind}` is not an array"));
    assert!(!cases.is_empty(), "{fname} has no {kind}");
    cases
}

fn signer<'a>(
    keys: &'a BTreeMap<String, (Identity, VerifyingKey)>,
    case: &Value,
    name: &str,
) -> &'a (Identity, VerifyingKey) {
    let signer = str_at(case, "signer", name);
    keys.get(signer).unwrap_or_else(|| panic!("{name}: unknown signer {signer}"))
}

#[test]
fn card_signing_vectors() {
    let file: Value = serde_json::from_str(SIGNING).expect("signing.json parses");
    let keys = identities(&file, "signing.json");
    for case in cases(&file, "signing.json", "cards") {
        let name = str_at(case, "name", "card");
        let (identity, key) = signer(&keys, case, name);
        let card: AgentCard =
            serde_json::from_value(case["card"].clone()).unwrap_or_else(|e| panic!("{name}: card: {e}"));

        // Rebuild the card from its fields and the signer's secret.
        let mut rebuilt = AgentCard::new(
            identity,
            &card.name,
            card.endpoints.clone(),
            card.capabilities.clone(),
            card.protocols.clone(),
            card.created_at,
        );
        if !card.extra.is_empty() {
            rebuilt.extra = card.extra.clone();
            rebuilt.sig = b64::encode(identity.sign(&rebuilt.signing_bytes()));
        }
        assert_eq!(rebuilt, card, "{name}: rebuilt card");

        let signing_input = str_at(case, "signing_input", name);
        assert_eq!(String::from_utf8_lossy(&card.signing_bytes()), signing_input, "{name}: signing input");
        let object = case["card"].as_object().unwrap_or_else(|| panic!("{name}: card is not an object"));
        let without_sig = format!("agentmesh/v1 card\n{}", canonical::to_string_without(object, "sig"));
        assert_eq!(without_sig, signing_input, "{name}: signing input from the raw JSON object");
        assert_eq!(card.sig, str_at(case, "sig", name), "{name}: sig");
        assert_verifies(key, signing_input.as_bytes(), &card.sig, name);
        assert_eq!(card.verify().map(|k| k.ed25519), Ok(*key), "{name}: AgentCard::verify");

        let card_canonical = str_at(case, "card_canonical", name);
        assert_eq!(String::from_utf8_lossy(&card.canonical_bytes()), card_canonical, "{name}: card_canonical");
        assert_eq!(
            hex::encode(Sha256::digest(card_canonical.as_bytes())),
            str_at(case, "card_sha256_hex", name),
            "{name}: card_sha256_hex"
        );
    }
}

#[test]
fn envelope_signing_vectors() {
    let file: Value = serde_json::from_str(SIGNING).expect("signing.json parses");
    let keys = identities(&file, "signing.json");
    for case in cases(&file, "signing.json", "envelopes") {
        let name = str_at(case, "name", "envelope");
        let (identity, key) = signer(&keys, case, name);
        let envelope: Envelope =
            serde_json::from_value(case["envelope"].clone()).unwrap_or_else(|e| panic!("{name}: envelope: {e}"));
        envelope.check_shape().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(envelope.from, identity.agent_id(), "{name}: from is the signer");

        // Re-sign the same fields (`enc` and `body` are fixed, not sealed) with the signer's secret.
        let mut unsigned = envelope.clone();
        unsigned.sig = String::new();
        let resigned = unsigned.sign(identity, envelope.sent_at);
        assert_eq!(hex::encode(resigned.signing_bytes()), str_at(case, "signing_bytes_hex", name), "{name}: bytes");
        assert_eq!(resigned.sig, str_at(case, "sig", name), "{name}: sig");
        assert_eq!(resigned, envelope, "{name}: re-signed envelope");

        assert_verifies(key, &envelope.signing_bytes(), &envelope.sig, name);
        envelope.verify(key).unwrap_or_else(|e| panic!("{name}: Envelope::verify: {e}"));
    }
}

#[test]
fn receipt_signing_vectors() {
    let file: Value = serde_json::from_str(SIGNING).expect("signing.json parses");
    let keys = identities(&file, "signing.json");
    for case in cases(&file, "signing.json", "receipts") {
        let name = str_at(case, "name", "receipt");
        let (identity, key) = signer(&keys, case, name);
        let receipt: DeliveryReceipt =
            serde_json::from_value(case["receipt"].clone()).unwrap_or_else(|e| panic!("{name}: receipt: {e}"));

        let rebuilt = DeliveryReceipt::sign(identity, &receipt.message_id, receipt.to, receipt.at);
        assert_eq!(hex::encode(rebuilt.signing_bytes()), str_at(case, "signing_bytes_hex", name), "{name}: bytes");
        assert_eq!(rebuilt.sig, str_at(case, "sig", name), "{name}: sig");
        assert_eq!(rebuilt, receipt, "{name}: rebuilt receipt");

        assert_verifies(key, &receipt.signing_bytes(), &receipt.sig, name);
        receipt.verify(key).unwrap_or_else(|e| panic!("{name}: DeliveryReceipt::verify: {e}"));
    }
}
