//! `rotation.json`: rotation statements and a rotated agent's card rebuilt with our code, and
//! chains our verifier must accept or refuse.

use agentmesh_core::rotation::{RotationStatement, verify_chain};
use agentmesh_core::{AgentCard, AgentId, Identity, b64};
use ed25519_dalek::VerifyingKey;
use serde_json::Value;

use super::{assert_verifies, cases, identities, signer, str_at};

const ROTATION: &str = include_str!("../../../../../docs/vectors/rotation.json");

fn file() -> Value {
    serde_json::from_str(ROTATION).expect("rotation.json parses")
}

fn agent_id(value: &Value, name: &str) -> AgentId {
    str_at(value, "agent_id", name).parse().unwrap_or_else(|e| panic!("{name}: agent_id: {e}"))
}

#[test]
fn rotation_statement_vectors() {
    let file = file();
    let keys = identities(&file, "rotation.json");
    let agent = agent_id(&file, "rotation.json");
    for case in cases(&file, "rotation.json", "statements") {
        let name = str_at(case, "name", "statement");
        let statement: RotationStatement =
            serde_json::from_value(case["statement"].clone()).unwrap_or_else(|e| panic!("{name}: statement: {e}"));
        let party = |role: &str| {
            let who = str_at(case, role, name);
            keys.get(who).unwrap_or_else(|| panic!("{name}: unknown identity {who}"))
        };
        let ((old, old_key), (new, new_key)) = (party("old"), party("new"));

        let rebuilt = RotationStatement::sign(agent, statement.seq, old, new, statement.rotated_at);
        let signing_input = str_at(case, "signing_input", name);
        assert_eq!(String::from_utf8_lossy(&rebuilt.signing_bytes()), signing_input, "{name}: signing input");
        assert_eq!(rebuilt.old_sig, str_at(case, "old_sig", name), "{name}: old_sig");
        assert_eq!(rebuilt.new_sig, str_at(case, "new_sig", name), "{name}: new_sig");
        assert_eq!(rebuilt, statement, "{name}: rebuilt statement");
        assert_verifies(old_key, signing_input.as_bytes(), &statement.old_sig, name);
        assert_verifies(new_key, signing_input.as_bytes(), &statement.new_sig, name);
    }
}

#[test]
fn rotated_card_vectors() {
    let file = file();
    let keys = identities(&file, "rotation.json");
    for case in cases(&file, "rotation.json", "cards") {
        let name = str_at(case, "name", "card");
        let card: AgentCard =
            serde_json::from_value(case["card"].clone()).unwrap_or_else(|e| panic!("{name}: card: {e}"));
        let (current, key) = signer(&keys, case, name);
        // The current keys, carrying the agent id through the chain, as a rotated node holds them.
        let identity = Identity::from_secret_bytes(&current.ed25519_secret_bytes(), &current.x25519_secret_bytes())
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .with_history(card.agent_id, card.rotations.clone())
            .unwrap_or_else(|e| panic!("{name}: with_history: {e}"));
        let rebuilt = AgentCard::new(
            &identity,
            &card.name,
            card.endpoints.clone(),
            card.capabilities.clone(),
            card.protocols.clone(),
            card.created_at,
        );
        let signing_input = str_at(case, "signing_input", name);
        assert_eq!(String::from_utf8_lossy(&rebuilt.signing_bytes()), signing_input, "{name}: signing input");
        assert_eq!(rebuilt.sig, str_at(case, "sig", name), "{name}: sig");
        assert_eq!(rebuilt, card, "{name}: rebuilt card");
        assert_verifies(key, signing_input.as_bytes(), &card.sig, name);
        assert_eq!(card.verify().map(|k| k.ed25519), Ok(*key), "{name}: AgentCard::verify");
        assert_eq!(card.agent_id, agent_id(&file, "rotation.json"), "{name}: the genesis key's id");
        let history: Vec<String> = card.key_history().iter().map(b64::encode).collect();
        let expected: Vec<String> =
            card.rotations.iter().map(|r| r.old_ed25519.clone()).chain([card.ed25519.clone()]).collect();
        assert_eq!(history, expected, "{name}: key history");
    }
}

#[test]
fn rotation_chain_vectors() {
    let file = file();
    for case in cases(&file, "rotation.json", "chains") {
        let name = str_at(case, "name", "chain");
        let valid = case["valid"].as_bool().unwrap_or_else(|| panic!("{name}: valid"));
        let ed25519 = b64::decode_array::<32>(str_at(case, "ed25519", name))
            .and_then(|k| VerifyingKey::from_bytes(&k).ok())
            .unwrap_or_else(|| panic!("{name}: ed25519"));
        let x25519 = b64::decode_array::<32>(str_at(case, "x25519", name)).unwrap_or_else(|| panic!("{name}: x25519"));
        // A statement with a member outside the format does not even parse: a refusal too.
        let verdict = serde_json::from_value::<Vec<RotationStatement>>(case["rotations"].clone())
            .map_err(|e| e.to_string())
            .and_then(|chain| verify_chain(agent_id(case, name), &chain, &ed25519, &x25519).map_err(|e| e.to_string()));
        assert_eq!(verdict.is_ok(), valid, "{name}: expected valid={valid}, got {verdict:?}");
        if let Ok(keys) = verdict {
            assert_eq!(keys.last(), Some(&ed25519), "{name}: the chain ends at the current key");
            assert!(case["rotations"].as_array().is_some_and(|r| r.len() + 1 == keys.len()), "{name}: every key");
        }
    }
}
