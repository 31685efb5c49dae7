//! `hpke.json`: envelope bodies sealed by the Python checker, which we must open, tampered ones we
//! must refuse, and our own sealing opened with the file's `info` and associated data.

use agentmesh_core::envelope::{Draft, TEXT_PLAIN};
use agentmesh_core::keys::Kem;
use agentmesh_core::{AgentId, Envelope, EnvelopeKind, b64};
use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Tag};
use hpke::kdf::HkdfSha256;
use hpke::{Deserializable, OpModeR};
use serde_json::Value;

use super::{cases, hex_at, identities, str_at};

const HPKE: &str = include_str!("../../../../../docs/vectors/hpke.json");

fn file() -> Value {
    serde_json::from_str(HPKE).expect("hpke.json parses")
}

/// The header members the associated data binds.
struct Header {
    id: String,
    kind: EnvelopeKind,
    from: AgentId,
    to: AgentId,
}

fn header(case: &Value, name: &str) -> Header {
    let header = &case["envelope"];
    let agent = |key: &str| str_at(header, key, name).parse().unwrap_or_else(|e| panic!("{name}: {key}: {e}"));
    let kind = str_at(header, "type", name);
    Header {
        id: str_at(header, "id", name).to_owned(),
        kind: EnvelopeKind::from_name(kind).unwrap_or_else(|| panic!("{name}: unknown type {kind}")),
        from: agent("from"),
        to: agent("to"),
    }
}

/// An envelope carrying the case's header, `enc` and `body`; the members that the signature
/// alone covers (times, content type, `sig`) do not take part in opening.
fn envelope(case: &Value, name: &str) -> Envelope {
    let Header { id, kind, from, to } = header(case, name);
    Envelope {
        v: 1,
        id,
        kind,
        from,
        to,
        created_at: 1_774_173_600_000,
        sent_at: 1_774_173_600_000,
        expires_at: 1_774_177_200_000,
        reply_to: None,
        thread: None,
        content_type: TEXT_PLAIN.to_owned(),
        enc: str_at(case, "enc", name).to_owned(),
        body: str_at(case, "body", name).to_owned(),
        card: None,
        sig: String::new(),
    }
}

/// Opens `body` with plain ChaCha20-Poly1305 under `key` and `nonce` (what the file lists as the
/// HPKE key schedule's output).
fn aead_open(key: &[u8], nonce: &[u8], aad: &[u8], body: &[u8]) -> Option<Vec<u8>> {
    let key: [u8; 32] = key.try_into().ok()?;
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    let split = body.len().checked_sub(16)?;
    let tag = Tag::try_from(&body[split..]).ok()?;
    let mut buf = body[..split].to_vec();
    ChaCha20Poly1305::new(&key.into())
        .decrypt_inout_detached(&nonce.into(), aad, buf.as_mut_slice().into(), &tag)
        .ok()?;
    Some(buf)
}

#[test]
fn hpke_suite_is_ours() {
    let file = file();
    // RFC 9180 §7: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305, base mode.
    assert_eq!(file["suite"], serde_json::json!({"mode": 0, "kem_id": 32, "kdf_id": 1, "aead_id": 3}));
    assert_eq!(<Kem as hpke::Kem>::KEM_ID, 0x0020);
    assert_eq!(str_at(&file, "info", "hpke.json"), "agentmesh/v1 envelope body");
}

#[test]
fn hpke_bodies_sealed_elsewhere_open() {
    let file = file();
    let keys = identities(&file, "hpke.json");
    for case in cases(&file, "hpke.json", "cases") {
        let name = str_at(case, "name", "hpke case");
        let recipient = str_at(case, "recipient", name);
        let (identity, _) = keys.get(recipient).unwrap_or_else(|| panic!("{name}: unknown recipient {recipient}"));
        let envelope = envelope(case, name);
        assert_eq!(envelope.to, identity.agent_id(), "{name}: addressed to the recipient");
        let plaintext = str_at(case, "plaintext_hex", name);
        assert_eq!(envelope.open(identity).map(hex::encode).as_deref(), Ok(plaintext), "{name}: Envelope::open");

        // The key schedule's output the file lists opens the body as RFC 9180 single shot does
        // (sequence number 0, so the nonce is base_nonce).
        let opened = aead_open(
            &hex_at(case, "key_hex", name),
            &hex_at(case, "base_nonce_hex", name),
            &hex_at(case, "aad_hex", name),
            &b64::decode(&envelope.body).unwrap_or_else(|| panic!("{name}: body is not base64")),
        );
        assert_eq!(
            opened.map(hex::encode).as_deref(),
            Some(plaintext),
            "{name}: key_hex and base_nonce_hex open the body"
        );
    }
}

#[test]
fn hpke_tampered_bodies_are_refused() {
    let file = file();
    let keys = identities(&file, "hpke.json");
    for case in cases(&file, "hpke.json", "refused") {
        let name = str_at(case, "name", "hpke refused case");
        let recipient = str_at(case, "recipient", name);
        let (identity, _) = keys.get(recipient).unwrap_or_else(|| panic!("{name}: unknown recipient {recipient}"));
        let opened = envelope(case, name).open(identity);
        assert!(opened.is_err(), "{name}: opened ({}), but must be refused: {opened:?}", str_at(case, "why", name));
    }
}

/// Our sealing, with its fresh ephemeral key, under the file's `info` and associated data: the
/// hpke crate opens what `Draft::seal` made with exactly the bytes the file lists.
#[test]
fn our_sealing_uses_the_vectors_info_and_aad() {
    let file = file();
    let keys = identities(&file, "hpke.json");
    let info = str_at(&file, "info", "hpke.json").as_bytes();
    for case in cases(&file, "hpke.json", "cases") {
        let name = str_at(case, "name", "hpke case");
        let (identity, _) = &keys[str_at(case, "recipient", name)];
        let Header { id, kind, from, to } = header(case, name);
        let plaintext = hex_at(case, "plaintext_hex", name);
        let mut draft = Draft::new(kind, from, to, 1_774_173_600_000, 3_600_000, TEXT_PLAIN, plaintext.clone());
        draft.id = id;
        let sealed = draft.seal(&identity.public().x25519).unwrap_or_else(|e| panic!("{name}: seal: {e}"));

        let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&identity.x25519_secret_bytes()[..])
            .unwrap_or_else(|e| panic!("{name}: x25519 secret: {e}"));
        let enc = b64::decode(&sealed.enc)
            .and_then(|enc| <Kem as hpke::Kem>::EncappedKey::from_bytes(&enc).ok())
            .unwrap_or_else(|| panic!("{name}: our enc is not an encapsulated key"));
        let body = b64::decode(&sealed.body).unwrap_or_else(|| panic!("{name}: our body is not base64"));
        let open = |aad: &[u8]| {
            hpke::single_shot_open::<hpke::aead::ChaCha20Poly1305, HkdfSha256, Kem>(
                &OpModeR::Base,
                &sk,
                &enc,
                info,
                &body,
                aad,
            )
        };
        let aad = hex_at(case, "aad_hex", name);
        assert_eq!(
            open(&aad).ok().map(hex::encode),
            Some(hex::encode(&plaintext)),
            "{name}: our body opens under the file's info and aad_hex"
        );
        assert!(open(&aad[..aad.len() - 1]).is_err(), "{name}: and only under those");
    }
}
