//! `file.json`: the per-transfer key, fetch token and sealed chunks of file transfers, rebuilt
//! with our `TransferKey` and `ChunkCipher`, and chunks we must refuse.
//!
//! The chunk key, nonces and associated data are private to `ChunkCipher`; the sealed bytes pin
//! all three (ChaCha20-Poly1305 is deterministic given key, nonce and associated data), and the
//! Python checker ties the file's `chunk_key_hex`, `nonce_hex` and `aad_hex` to the same bytes.

use std::collections::BTreeMap;

use agentmesh_core::file::{ChunkError, TAG_BYTES, TransferKey, chunk_count, chunk_len, is_transfer_id};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{cases, hex_at, str_at, u64_at};

const FILE: &str = include_str!("../../../../../docs/vectors/file.json");

fn transfer_key(transfer: &Value, name: &str) -> TransferKey {
    let bytes: [u8; 32] =
        hex_at(transfer, "key_hex", name).try_into().unwrap_or_else(|_| panic!("{name}: key_hex is not 32 bytes"));
    TransferKey::from_bytes(bytes)
}

fn bool_at(value: &Value, key: &str, case: &str) -> bool {
    value[key].as_bool().unwrap_or_else(|| panic!("{case}: `{key}` is not a boolean"))
}

#[test]
fn file_chunk_vectors() {
    let file: Value = serde_json::from_str(FILE).expect("file.json parses");
    for transfer in cases(&file, "file.json", "transfers") {
        let name = str_at(transfer, "name", "transfer");
        let id = str_at(transfer, "transfer_id", name);
        assert!(is_transfer_id(id), "{name}: {id} is a transfer id");
        let key = transfer_key(transfer, name);
        assert_eq!(key.to_base64(), str_at(transfer, "key", name), "{name}: key as the offer carries it");
        let from_offer = TransferKey::from_base64(str_at(transfer, "key", name))
            .unwrap_or_else(|| panic!("{name}: key is not 32 bytes of base64"));
        assert_eq!(from_offer.to_bytes(), key.to_bytes(), "{name}: key read back from the offer");
        assert_eq!(key.token(id), str_at(transfer, "token", name), "{name}: token");

        let cipher = key.chunks(id);
        let chunks = cases(transfer, name, "chunks");
        for chunk in chunks {
            let index = u64_at(chunk, "index", name);
            let last = bool_at(chunk, "last", name);
            let at = format!("{name} chunk {index} last={last}");
            let plaintext = hex_at(chunk, "plaintext_hex", &at);
            let mut buf = plaintext.clone();
            cipher.seal(index, last, &mut buf);
            assert_eq!(hex::encode(&buf), str_at(chunk, "sealed_hex", &at), "{at}: sealed bytes");
            assert_eq!(buf.len(), plaintext.len() + TAG_BYTES, "{at}: one tag");
            let mut sealed = hex_at(chunk, "sealed_hex", &at);
            assert_eq!(cipher.open(index, last, &mut sealed), Ok(()), "{at}: opens");
            assert_eq!(sealed, plaintext, "{at}: opened plaintext");
        }

        // A whole file: how it is cut into chunks, and its digest.
        if let Some(whole) = transfer.get("file") {
            let size = u64_at(whole, "size", name);
            let chunk_size = u32::try_from(u64_at(whole, "chunk_size", name)).expect("chunk_size fits u32");
            assert_eq!(chunk_count(size, chunk_size), chunks.len() as u64, "{name}: chunk count");
            let mut digest = Sha256::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let plaintext = hex_at(chunk, "plaintext_hex", name);
                assert_eq!(u64_at(chunk, "index", name), i as u64, "{name}: chunks in order");
                assert_eq!(chunk_len(size, chunk_size, i as u64), plaintext.len(), "{name}: chunk {i} length");
                assert_eq!(bool_at(chunk, "last", name), i + 1 == chunks.len(), "{name}: chunk {i} last flag");
                digest.update(&plaintext);
            }
            assert_eq!(hex::encode(digest.finalize()), str_at(whole, "sha256", name), "{name}: sha256");
        }
    }
}

#[test]
fn file_chunks_that_must_not_open() {
    let file: Value = serde_json::from_str(FILE).expect("file.json parses");
    let transfers: BTreeMap<&str, &Value> =
        cases(&file, "file.json", "transfers").iter().map(|t| (str_at(t, "name", "transfer"), t)).collect();
    for case in cases(&file, "file.json", "refused") {
        let name = str_at(case, "name", "refused chunk");
        let under = str_at(case, "transfer", name);
        let transfer = transfers.get(under).unwrap_or_else(|| panic!("{name}: unknown transfer {under}"));
        let cipher = transfer_key(transfer, under).chunks(str_at(transfer, "transfer_id", under));
        let index = u64_at(case, "index", name);
        let mut sealed = hex_at(case, "sealed_hex", name);
        assert_eq!(
            cipher.open(index, bool_at(case, "last", name), &mut sealed),
            Err(ChunkError(index)),
            "{name}: {}",
            str_at(case, "why", name)
        );
    }
}
