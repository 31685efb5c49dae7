//! Property tests (proptest): canonical JSON round trips, and that signatures and the HPKE
//! associated data bind every byte they are meant to.

use std::sync::LazyLock;

use agentmesh_core::envelope::{Draft, TEXT_PLAIN};
use agentmesh_core::{AgentCard, Envelope, EnvelopeKind, Identity, canonical};
use proptest::prelude::*;
use serde_json::{Map, Value};

static ALICE: LazyLock<Identity> = LazyLock::new(Identity::generate);
static BOB: LazyLock<Identity> = LazyLock::new(Identity::generate);

/// Arbitrary JSON: any Unicode in strings and keys, integers across the i64/u64 range, finite
/// floats, nesting.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn envelope(body: &[u8], thread: Option<String>) -> Envelope {
    let now = agentmesh_core::time::now_ms();
    let mut draft =
        Draft::new(EnvelopeKind::Message, ALICE.agent_id(), BOB.agent_id(), now, 60_000, TEXT_PLAIN, body.to_vec());
    draft.thread = thread;
    draft.seal(&BOB.public().x25519).expect("seal").sign(&ALICE, now)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn canonical_json_round_trips(value in json()) {
        let text = canonical::to_string(&value);
        prop_assert!(text.is_ascii());
        let back: Value = serde_json::from_str(&text).expect("canonical JSON parses");
        prop_assert_eq!(canonical::to_string(&back), text.clone(), "idempotent");
        // Keys come out sorted, so any two equal objects canonicalize to the same bytes.
        let reparsed: Value = serde_json::from_str(&serde_json::to_string(&value).expect("json")).expect("parse");
        prop_assert_eq!(canonical::to_string(&reparsed), text);
    }

    #[test]
    fn any_changed_byte_of_a_signed_envelope_fails(
        body in prop::collection::vec(any::<u8>(), 1..300),
        thread in prop::option::of("[a-z]{1,12}"),
        position in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let original = envelope(&body, thread);
        let mut bytes = serde_json::to_vec(&original).expect("json");
        let at = position.index(bytes.len());
        bytes[at] ^= mask;
        let accepted = serde_json::from_slice::<Envelope>(&bytes)
            .ok()
            .filter(|e| e.check_shape().is_ok())
            .filter(|e| e.verify(&ALICE.public().ed25519).is_ok())
            .and_then(|e| e.open(&BOB).ok());
        prop_assert!(accepted.is_none(), "byte {} ^ {:#04x} still verified and opened", at, mask);
    }

    #[test]
    fn any_change_to_the_associated_data_fails_decryption(
        body in prop::collection::vec(any::<u8>(), 0..100),
        field in 0usize..4,
        salt in "[a-z0-9]{1,16}",
    ) {
        let mut env = envelope(&body, None);
        prop_assert_eq!(env.open(&BOB).expect("opens"), body);
        match field {
            0 => env.from = Identity::generate().agent_id(),
            1 => env.to = Identity::generate().agent_id(),
            2 => env.id = format!("{}-{salt}", env.id),
            _ => env.kind = EnvelopeKind::Receipt,
        }
        prop_assert!(env.open(&BOB).is_err(), "changed AAD field {} still decrypts", field);
    }

    #[test]
    fn any_changed_byte_of_a_card_fails(position in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let card = AgentCard::new(&ALICE, "alice", vec!["http://127.0.0.1:8787".into()], vec!["chat".into()], vec![], 1);
        let mut bytes = serde_json::to_vec(&card).expect("json");
        let at = position.index(bytes.len());
        bytes[at] ^= mask;
        let verified = serde_json::from_slice::<AgentCard>(&bytes).ok().and_then(|c| c.verify().ok().map(|_| c));
        // A flip may only survive where it changes nothing signed (it cannot: every member is).
        prop_assert!(verified.is_none(), "byte {} ^ {:#04x} still verified", at, mask);
    }
}
