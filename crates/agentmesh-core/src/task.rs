//! Delegated tasks on the wire, with the lifecycle of A2A 1.0 tasks (submitted → working →
//! input-required / auth-required → completed, failed, canceled or rejected). Each step is an
//! ordinary `message` envelope whose `content_type` is [`TASK_CONTENT_TYPE`], whose `thread` is
//! the task id and whose body is a [`TaskBody`] (JSON). docs/PROTOCOL.md, "Tasks", describes the
//! exchange; the A2A endpoint maps these to A2A's `Task`, `Message`, `Artifact` and `Part`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Content type of task envelopes.
pub const TASK_CONTENT_TYPE: &str = "application/vnd.agentmesh.task+json";

/// Most artifacts one update may carry.
pub const MAX_ARTIFACTS: usize = 64;

/// Most parts one artifact may hold.
pub const MAX_PARTS: usize = 64;

/// Body of a task envelope: `{"task_id":"task_…","op":"create",…}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskBody {
    /// The task, `task_` + 32 lowercase hex, chosen by the delegator (see [`new_task_id`]).
    pub task_id: String,
    /// The step.
    #[serde(flatten)]
    pub op: TaskOp,
}

/// A step of a task, tagged by `op`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum TaskOp {
    /// The delegator asks the worker to do something.
    Create {
        /// What to do.
        text: String,
        /// Structured input (an A2A data part), when there is some.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    },
    /// The worker reports where the task stands.
    Update {
        /// Numbers the worker's updates from 1: an update older than one applied is ignored, so
        /// updates that overtake each other on the wire never move a task back.
        seq: u64,
        /// The state: `submitted`, `working`, `input_required`, `auth_required`, `completed`,
        /// `failed`, `canceled` or `rejected`.
        state: String,
        /// What the worker says with it (a question with `input_required`, an error with
        /// `failed`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Results produced so far (added to the task's artifacts).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        artifacts: Vec<Artifact>,
    },
    /// The delegator answers the worker (the input an `input_required` task waits for).
    Message {
        /// The answer.
        text: String,
    },
    /// The delegator asks the worker to stop.
    Cancel,
    /// The sender waits for its owner's answer before going on.
    Escalate {
        /// The sender's escalation id.
        escalation_id: String,
        /// What the owner is asked (at most 1,000 characters).
        reason: String,
    },
    /// The sender's owner answered an escalation.
    Resolved {
        /// The sender's escalation id.
        escalation_id: String,
        /// The owner's answer (at most 1,000 characters).
        answer: String,
    },
}

impl TaskOp {
    /// The `op` name: `create`, `update`, `message`, `cancel`.
    pub fn name(&self) -> &'static str {
        match self {
            TaskOp::Create { .. } => "create",
            TaskOp::Update { .. } => "update",
            TaskOp::Message { .. } => "message",
            TaskOp::Cancel => "cancel",
            TaskOp::Escalate { .. } => "escalate",
            TaskOp::Resolved { .. } => "resolved",
        }
    }

    /// Why the body is out of shape (too many artifacts or parts, an empty artifact), if it is.
    pub fn check(&self) -> Result<(), &'static str> {
        if let TaskOp::Escalate { reason: note, .. } | TaskOp::Resolved { answer: note, .. } = self
            && note.chars().count() > 1000
        {
            return Err("an escalation's reason or answer is limited to 1000 characters");
        }
        if let TaskOp::Update { artifacts, .. } = self {
            if artifacts.len() > MAX_ARTIFACTS {
                return Err("an update carries at most 64 artifacts");
            }
            if artifacts.iter().any(|a| a.parts.is_empty() || a.parts.len() > MAX_PARTS) {
                return Err("an artifact holds 1 to 64 parts");
            }
        }
        Ok(())
    }
}

/// A result of a task: named parts (A2A `Artifact`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Unique within the task.
    pub artifact_id: String,
    /// A name for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The content.
    pub parts: Vec<Part>,
}

/// Content of a message or artifact (A2A `Part`), tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Part {
    /// Text.
    Text {
        /// The text.
        text: String,
    },
    /// Structured data (any JSON).
    Data {
        /// The data.
        data: Value,
    },
}

/// A fresh task id: `task_` + 32 lowercase hex (128 random bits).
pub fn new_task_id() -> String {
    crate::ids::random_id("task")
}

/// Whether `s` is `task_` followed by 32 lowercase hex characters.
pub fn is_task_id(s: &str) -> bool {
    crate::ids::is_random_id(s, "task")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_flat_json_tagged_by_op() {
        let body = TaskBody {
            task_id: new_task_id(),
            op: TaskOp::Update {
                seq: 2,
                state: "completed".into(),
                text: None,
                artifacts: vec![Artifact {
                    artifact_id: "a1".into(),
                    name: Some("answer".into()),
                    parts: vec![Part::Text { text: "42".into() }, Part::Data { data: serde_json::json!({"n": 42}) }],
                }],
            },
        };
        let json = serde_json::to_value(&body).expect("json");
        assert_eq!(json["op"], "update");
        assert_eq!(json["artifacts"][0]["parts"][1]["kind"], "data");
        assert!(is_task_id(json["task_id"].as_str().expect("id")));
        assert_eq!(serde_json::from_value::<TaskBody>(json).expect("parse"), body);
        let cancel: TaskBody = serde_json::from_str(r#"{"task_id":"task_x","op":"cancel"}"#).expect("parse");
        assert_eq!(cancel.op, TaskOp::Cancel);
        let empty = TaskOp::Update {
            seq: 1,
            state: "working".into(),
            text: None,
            artifacts: vec![Artifact { artifact_id: "a".into(), name: None, parts: vec![] }],
        };
        assert!(empty.check().is_err());
        assert!(!is_task_id("task_123"));
    }
}
