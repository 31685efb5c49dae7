//! `record.json`: signed peer records rebuilt with our code and checked at their edges.

use agentmesh_core::{PeerRecord, RecordError};
use serde_json::Value;

use super::{assert_verifies, cases, identities, signer, str_at};

const RECORD: &str = include_str!("../../../../../docs/vectors/record.json");

#[test]
fn peer_record_vectors() {
    let file: Value = serde_json::from_str(RECORD).expect("record.json parses");
    let keys = identities(&file, "record.json");
    for case in cases(&file, "record.json", "records") {
        let name = str_at(case, "name", "record");
        let (identity, key) = signer(&keys, case, name);
        let record: PeerRecord =
            serde_json::from_value(case["record"].clone()).unwrap_or_else(|e| panic!("{name}: record: {e}"));

        let ttl = record.expires_at - record.issued_at;
        let rebuilt = PeerRecord::sign(identity, record.card.clone(), record.issued_at, ttl);
        let signing_input = str_at(case, "signing_input", name);
        assert_eq!(String::from_utf8_lossy(&rebuilt.signing_bytes()), signing_input, "{name}: signing input");
        assert_eq!(rebuilt.sig, str_at(case, "sig", name), "{name}: sig");
        assert_eq!(rebuilt, record, "{name}: rebuilt record");
        assert_verifies(key, signing_input.as_bytes(), &record.sig, name);

        // Valid from issued_at (no clock skew allowed here) until just before expires_at.
        let verified = |now: u64| record.verify(now, 0).map(|k| k.ed25519);
        assert_eq!(verified(record.issued_at), Ok(*key), "{name}: valid when issued");
        assert_eq!(verified(record.expires_at - 1), Ok(*key), "{name}: valid until it expires");
        assert_eq!(verified(record.expires_at), Err(RecordError::Expired), "{name}: expired at expires_at");
        assert!(verified(record.issued_at - 1).is_err(), "{name}: not before issued_at without skew");
    }
}
