//! Calls on the wire: each step of a call (invite, answer, a line said, the end) is an ordinary
//! `message` envelope — signed, sealed, acknowledged with a receipt like any other — whose
//! `content_type` is [`CALL_CONTENT_TYPE`], whose `thread` is the call id, and whose body is a
//! [`CallBody`] (JSON). docs/PROTOCOL.md, "Calls", describes the exchange.

use serde::{Deserialize, Serialize};

/// Content type of call envelopes.
pub const CALL_CONTENT_TYPE: &str = "application/vnd.agentmesh.call+json";

/// Longest topic or reason, in characters.
pub const MAX_CALL_NOTE_CHARS: usize = 1000;

/// Largest file sent inline in a call (`file` step), bytes before base64. Larger files go as
/// transfers (`agentmesh_core::file`).
pub const MAX_INLINE_FILE_BYTES: usize = 64 * 1024;

/// Body of a call envelope: `{"call_id":"call_…","op":"invite",…}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallBody {
    /// The call, `call_` + 32 lowercase hex, chosen by the caller (see [`new_call_id`]).
    pub call_id: String,
    /// The step.
    #[serde(flatten)]
    pub op: CallOp,
}

/// A step of a call, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum CallOp {
    /// The caller rings the callee.
    Invite {
        /// What the call is about (at most [`MAX_CALL_NOTE_CHARS`] characters).
        #[serde(default)]
        topic: String,
        /// Until when the caller waits for an answer, ms since the Unix epoch (the caller's
        /// clock); after it the call is missed on both sides.
        ring_until: u64,
    },
    /// The callee takes the call.
    Accept,
    /// The callee declines the call.
    Reject {
        /// Why (at most [`MAX_CALL_NOTE_CHARS`] characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A line of the conversation, either side.
    Say {
        /// What is said (UTF-8; bounded by the message size limits).
        text: String,
    },
    /// A small file, inline (p2p-comm's `sendfile <name> <base64>`), either side, once answered.
    File {
        /// The file's name as the sender has it (the receiver saves it under a sanitised one).
        name: String,
        /// Its bytes, base64 (at most [`MAX_INLINE_FILE_BYTES`] decoded).
        data: String,
    },
    /// Either side hangs up (the caller before an answer: the call is withdrawn).
    End {
        /// Why (at most [`MAX_CALL_NOTE_CHARS`] characters).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// The sender waits for its owner's answer before going on.
    Escalate {
        /// The sender's escalation id.
        escalation_id: String,
        /// What the owner is asked (at most [`MAX_CALL_NOTE_CHARS`] characters).
        reason: String,
    },
    /// The sender's owner answered an escalation.
    Resolved {
        /// The sender's escalation id.
        escalation_id: String,
        /// The owner's answer (at most [`MAX_CALL_NOTE_CHARS`] characters).
        answer: String,
    },
}

impl CallOp {
    /// The `op` name: `invite`, `accept`, `reject`, `say`, `end`.
    pub fn name(&self) -> &'static str {
        match self {
            CallOp::Invite { .. } => "invite",
            CallOp::Accept => "accept",
            CallOp::Reject { .. } => "reject",
            CallOp::Say { .. } => "say",
            CallOp::File { .. } => "file",
            CallOp::End { .. } => "end",
            CallOp::Escalate { .. } => "escalate",
            CallOp::Resolved { .. } => "resolved",
        }
    }

    /// The free text it carries: the topic, the reason, the line said, or a file's name.
    pub fn text(&self) -> Option<&str> {
        match self {
            CallOp::Invite { topic, .. } => Some(topic),
            CallOp::Say { text } => Some(text),
            CallOp::File { name, .. } => Some(name),
            CallOp::Reject { reason } | CallOp::End { reason } => reason.as_deref(),
            CallOp::Escalate { reason, .. } => Some(reason),
            CallOp::Resolved { answer, .. } => Some(answer),
            CallOp::Accept => None,
        }
    }

    /// Why the body is out of shape (topic or reason too long), if it is.
    pub fn check(&self) -> Result<(), &'static str> {
        let note = match self {
            CallOp::Invite { topic, .. } => Some(topic.as_str()),
            CallOp::Reject { reason } | CallOp::End { reason } => reason.as_deref(),
            CallOp::Escalate { reason: note, .. } | CallOp::Resolved { answer: note, .. } => Some(note.as_str()),
            _ => None,
        };
        if note.is_some_and(|n| n.chars().count() > MAX_CALL_NOTE_CHARS) {
            return Err("a call topic or reason is limited to 1000 characters");
        }
        if let CallOp::Invite { ring_until, .. } = self
            && *ring_until > crate::envelope::MAX_TIME_MS
        {
            return Err("ring_until is past the year 9999");
        }
        if let CallOp::File { name, data } = self {
            if name.is_empty() || name.len() > crate::file::MAX_OFFER_NAME_BYTES {
                return Err("a file name is 1 to 1024 bytes");
            }
            // Bounded before decoding; exact after.
            if data.len() > MAX_INLINE_FILE_BYTES.div_ceil(3) * 4 {
                return Err("an inline file is at most 64 KiB");
            }
            match crate::b64::decode(data) {
                None => return Err("data must be base64"),
                Some(bytes) if bytes.len() > MAX_INLINE_FILE_BYTES => return Err("an inline file is at most 64 KiB"),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// A fresh call id: `call_` + 32 lowercase hex (128 random bits).
pub fn new_call_id() -> String {
    crate::ids::random_id("call")
}

/// Whether `s` is `call_` followed by 32 lowercase hex characters.
pub fn is_call_id(s: &str) -> bool {
    crate::ids::is_random_id(s, "call")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_flat_json_tagged_by_op() {
        let body = CallBody { call_id: new_call_id(), op: CallOp::Say { text: "hi".into() } };
        let json = serde_json::to_value(&body).expect("ok");
        assert_eq!(json["op"], "say");
        assert_eq!(json["text"], "hi");
        assert!(is_call_id(json["call_id"].as_str().expect("ok")));
        assert_eq!(serde_json::from_value::<CallBody>(json).expect("ok"), body);
        let accept: CallBody = serde_json::from_str(r#"{"call_id":"call_x","op":"accept"}"#).expect("ok");
        assert_eq!(accept.op, CallOp::Accept);
        assert!(serde_json::from_str::<CallBody>(r#"{"call_id":"call_x","op":"dance"}"#).is_err());
    }

    #[test]
    fn ids_and_notes_are_checked() {
        assert!(is_call_id(&new_call_id()));
        assert!(!is_call_id("call_ABC"));
        assert!(!is_call_id(&format!("call_{}", "0".repeat(33))));
        assert!(CallOp::Reject { reason: Some("x".repeat(1001)) }.check().is_err());
        assert!(CallOp::Invite { topic: "t".into(), ring_until: u64::MAX }.check().is_err());
        assert!(CallOp::End { reason: None }.check().is_ok());
        let file = |name: &str, data: String| CallOp::File { name: name.into(), data };
        assert!(file("a.txt", crate::b64::encode(b"hi")).check().is_ok());
        assert!(file("", crate::b64::encode(b"hi")).check().is_err());
        assert!(file("a", "!!".into()).check().is_err());
        assert!(file("a", crate::b64::encode(vec![0u8; MAX_INLINE_FILE_BYTES + 1])).check().is_err());
        assert!(file("a", crate::b64::encode(vec![0u8; MAX_INLINE_FILE_BYTES])).check().is_ok());
    }
}
