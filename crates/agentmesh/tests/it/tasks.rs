//! Delegated tasks and escalations between real nodes: a task through every A2A state across
//! restarts of both sides with matching histories, cancel, reject, failure, idempotent
//! delegation; an escalation's round trip through the owner, and its reminders.

use agentmesh_api::control::{CallArgs, DelegateArgs, UpdateTaskArgs};
use agentmesh_api::{Direction, EscalationState, Event, Side, TaskDetail, TaskEntryKind, TaskState};
use agentmesh_client::StreamItem;
use agentmesh_core::task::{Artifact, Part};
use serde_json::json;

use crate::support::*;

/// The task `id` at `node` once `done` holds for it.
async fn wait_task(node: &LocalNode, id: &str, done: impl Fn(&TaskDetail) -> bool) -> TaskDetail {
    let found = wait_for(WAIT, || async {
        let t = node.client.task(id).await.ok()?;
        done(&t).then_some(t)
    })
    .await;
    match found {
        Some(t) => t,
        None => panic!("task {id} at {}: {:#?}", node.agent_id, node.client.task(id).await),
    }
}

async fn update(node: &LocalNode, id: &str, state: TaskState, text: Option<&str>, artifacts: Vec<Artifact>) {
    let args = UpdateTaskArgs { state, text: text.map(str::to_owned), artifacts };
    node.client.update_task(id, &args).await.unwrap_or_else(|e| panic!("update to {state}: {e}"));
}

/// Both sides list the same history (ids, kinds, states, texts, times), speakers mirrored, and
/// every entry of each side carries the peer's receipt.
async fn assert_same_history(delegator: &LocalNode, worker: &LocalNode, id: &str, entries: usize) {
    let settled = |t: &TaskDetail| {
        t.history.len() == entries && t.history.iter().all(|e| e.speaker == Side::Peer || e.delivered_at.is_some())
    };
    let a = wait_task(delegator, id, settled).await;
    let b = wait_task(worker, id, settled).await;
    let view = |t: &TaskDetail, flip: bool| -> Vec<_> {
        t.history
            .iter()
            .map(|e| {
                let mine = (e.speaker == Side::Us) != flip;
                (e.entry_id.clone(), e.kind, e.state, e.text.clone(), e.at, mine, e.artifacts.clone())
            })
            .collect()
    };
    assert_eq!(view(&a, false), view(&b, true), "both sides keep the same history");
    assert_eq!(
        (a.task.state, a.task.direction, b.task.direction),
        (b.task.state, Direction::Outgoing, Direction::Incoming)
    );
    assert_eq!(a.task.artifacts, b.task.artifacts);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_goes_through_every_state_across_restarts_of_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut a, mut b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let mut bob_events = b.client.events(None).await.expect("events");

    // Delegated through the CLI; bob's agent learns of it by an event.
    let created = ok(&a.home, &["delegate", &b.agent_id, "--text", "summarise the report", "--data", r#"{"pages":3}"#]);
    let id = created["task_id"].as_str().expect("id").to_owned();
    assert_eq!(created["state"], "submitted");
    let told = loop {
        let item =
            tokio::time::timeout(WAIT, bob_events.next()).await.expect("an event").expect("open").expect("frame");
        if let StreamItem::Event(e) = item
            && let Event::Task { task, entry: Some(entry) } = e.event
        {
            break (task, entry);
        }
    };
    assert_eq!(
        (told.0.task_id.as_str(), told.0.direction, told.0.state),
        (id.as_str(), Direction::Incoming, TaskState::Submitted)
    );
    assert_eq!((told.1.kind, told.1.text.as_deref()), (TaskEntryKind::Create, Some("summarise the report")));
    assert_eq!(told.0.data, Some(json!({"pages": 3})));

    update(&b, &id, TaskState::Working, None, vec![]).await;
    update(&b, &id, TaskState::AuthRequired, Some("may I read the appendix?"), vec![]).await;
    wait_task(&a, &id, |t| t.task.state == TaskState::AuthRequired).await;
    ok(&a.home, &["reply-task", &id, "--text", "yes"]);
    // An answer moves the task on by itself.
    wait_task(&b, &id, |t| t.task.state == TaskState::Working).await;
    wait_task(&a, &id, |t| t.task.state == TaskState::Working).await;

    // The delegator is killed; the worker asks a question meanwhile.
    a.kill();
    update(&b, &id, TaskState::InputRequired, Some("which format?"), vec![]).await;
    a.restart().await.expect("restart alice");
    let asked = wait_task(&a, &id, |t| t.task.state == TaskState::InputRequired).await;
    assert_eq!(asked.task.status_text.as_deref(), Some("which format?"));
    ok(&a.home, &["reply-task", &id, "--text", "markdown"]);

    // The worker restarts before it delivers the result.
    wait_task(&b, &id, |t| t.task.state == TaskState::Working).await;
    assert!(b.stop().await);
    b.restart().await.expect("restart bob");
    let result = Artifact {
        artifact_id: "summary".into(),
        name: Some("summary".into()),
        parts: vec![Part::Text { text: "# Summary\nshort".into() }, Part::Data { data: json!({"words": 2}) }],
    };
    update(&b, &id, TaskState::Completed, None, vec![result.clone()]).await;
    let done = wait_task(&a, &id, |t| t.task.state == TaskState::Completed).await;
    assert_eq!(done.task.artifacts, vec![result]);
    // create, working, auth_required, message, working, input_required, message, working, completed
    assert_same_history(&a, &b, &id, 9).await;
    let refused = fails(&b.home, &["update-task", &id, "--state", "working"]);
    assert_eq!(refused["error"]["code"], "task_state", "a final task stays final: {refused}");
    let shown = ok(&a.home, &["task", &id]);
    assert_eq!(shown["history"].as_array().map(Vec::len), Some(9));
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_can_be_canceled_rejected_failed_and_delegated_idempotently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let delegate = |text: &str, id: Option<String>| DelegateArgs {
        to: b.agent_id.clone(),
        text: text.into(),
        data: None,
        task_id: id,
    };

    // Cancel: the worker's node grants it and says so.
    let id = a.client.delegate(&delegate("long job", None)).await.expect("delegate").task.task_id;
    wait_task(&b, &id, |t| t.task.state == TaskState::Submitted).await;
    update(&b, &id, TaskState::Working, None, vec![]).await;
    wait_task(&a, &id, |t| t.task.state == TaskState::Working).await;
    let asked = ok(&a.home, &["cancel-task", &id]);
    assert!(asked["cancel_requested_at"].is_i64(), "{asked}");
    wait_task(&b, &id, |t| t.task.state == TaskState::Canceled).await;
    wait_task(&a, &id, |t| t.task.state == TaskState::Canceled).await;
    assert_same_history(&a, &b, &id, 4).await;
    assert_eq!(fails(&a.home, &["cancel-task", &id])["error"]["code"], "task_state");

    // Rejected and failed, with the worker's words.
    let id = a.client.delegate(&delegate("something odd", None)).await.expect("delegate").task.task_id;
    wait_task(&b, &id, |_| true).await;
    ok(&b.home, &["update-task", &id, "--state", "rejected", "--text", "not my job"]);
    let t = wait_task(&a, &id, |t| t.task.state == TaskState::Rejected).await;
    assert_eq!(t.task.status_text.as_deref(), Some("not my job"));
    let id = a.client.delegate(&delegate("will fail", None)).await.expect("delegate").task.task_id;
    wait_task(&b, &id, |_| true).await;
    ok(&b.home, &["update-task", &id, "--state", "failed", "--text", "disk full"]);
    wait_task(&a, &id, |t| t.task.state == TaskState::Failed).await;

    // The same delegation again (a retry) gets the same task; another under its id is refused.
    let fixed = agentmesh_core::task::new_task_id();
    let first = ok(&a.home, &["delegate", &b.agent_id, "--text", "once", "--id", &fixed]);
    let again = ok(&a.home, &["delegate", &b.agent_id, "--text", "once", "--id", &fixed]);
    assert_eq!(
        (first["task_id"].as_str(), again["created_at"].as_i64()),
        (Some(fixed.as_str()), first["created_at"].as_i64())
    );
    let other = fails(&a.home, &["delegate", &b.agent_id, "--text", "twice", "--id", &fixed]);
    assert_eq!(other["error"]["code"], "duplicate_task", "{other}");
    assert_same_history(&a, &b, &fixed, 1).await;

    // Steps that are not ours.
    for (home, args, code) in [
        (&a.home, vec!["update-task", fixed.as_str(), "--state", "completed"], "task_state"),
        (&b.home, vec!["cancel-task", fixed.as_str()], "task_state"),
        (&b.home, vec!["reply-task", fixed.as_str(), "--text", "x"], "task_state"),
        (&a.home, vec!["task", "task_00000000000000000000000000000000"], "unknown_task"),
        (&b.home, vec!["update-task", fixed.as_str(), "--state", "nonsense"], "invalid_argument"),
    ] {
        assert_eq!(fails(home, &args)["error"]["code"], code, "{args:?}");
    }
    let listed = ok(&b.home, &["tasks", "--incoming", "--open"]);
    assert_eq!(listed["tasks"].as_array().map(Vec::len), Some(1), "{listed}");

    // A task with a file: offered alongside, listed in the task's data, fetched once accepted.
    let path = dir.path().join("report.bin");
    let bytes: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&path, &bytes).expect("file");
    let with = ok(&a.home, &["delegate", &b.agent_id, "--text", "review it", "--file", path.to_str().expect("path")]);
    let id = with["task_id"].as_str().expect("id").to_owned();
    let file = &with["data"]["files"][0];
    assert_eq!(
        (file["name"].as_str(), file["size"].as_u64()),
        (Some("report.bin"), Some(bytes.len() as u64)),
        "{with}"
    );
    let transfer = file["transfer_id"].as_str().expect("transfer id").to_owned();
    let at_bob = wait_task(&b, &id, |_| true).await;
    assert_eq!(at_bob.task.data.as_ref().map(|d| d["files"][0]["transfer_id"].clone()), Some(json!(transfer)));
    let accepted = wait_for(WAIT, || async { b.client.accept_file(&transfer).await.ok() }).await;
    assert!(accepted.is_some(), "bob accepts the file");
    let saved = wait_for(WAIT, || async {
        let t = b
            .client
            .files(&Default::default())
            .await
            .ok()?
            .transfers
            .into_iter()
            .find(|t| t.transfer_id == transfer)?;
        (t.state == agentmesh_api::TransferState::Done).then_some(t.path?)
    })
    .await
    .expect("the file arrives");
    assert_eq!(std::fs::read(&saved).expect("saved file"), bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_escalation_waits_for_the_owner_whose_answer_reaches_the_conversation_and_the_peer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node_with(dir.path(), "alice", "escalation_remind_secs = 1\n", &[]).await;
    let b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    let call = a.client.call(&CallArgs { to: b.agent_id.clone(), topic: "price".into(), ring_secs: None }).await;
    let call_id = call.expect("call").call.call_id;
    wait_for(WAIT, || async { b.client.transcript(&call_id).await.ok() }).await.expect("rings");
    ok(&b.home, &["answer", &call_id, "accept"]);
    wait_for(WAIT, || async {
        let t = a.client.transcript(&call_id).await.ok()?;
        (t.call.state == agentmesh_api::CallState::Active).then_some(())
    })
    .await
    .expect("answered");
    let mut events = a.client.events(None).await.expect("events");

    // Alice's agent asks her owner; the call waits, bob is told.
    let raised = ok(&a.home, &["escalate", &call_id, "--reason", "can we go below 100?", "--options", "yes,no"]);
    let esc = raised["escalation_id"].as_str().expect("id").to_owned();
    assert_eq!(raised["options"], json!(["yes", "no"]));
    assert_eq!(
        a.client.transcript(&call_id).await.expect("call").call.waiting_for_owner.as_deref(),
        Some(esc.as_str())
    );
    let told = wait_for(WAIT, || async {
        let t = b.client.transcript(&call_id).await.ok()?;
        t.lines.into_iter().find(|l| l.kind == agentmesh_api::LineKind::Escalate)
    })
    .await;
    let told = match told {
        Some(t) => t,
        None => panic!("bob is told: {:#?}", a.client.transcript(&call_id).await),
    };
    assert_eq!((told.speaker, told.text.as_deref()), (Side::Peer, Some("can we go below 100?")));

    // The owner is told, and reminded while it waits.
    let (mut first, mut reminded) = (false, false);
    while !(first && reminded) {
        let item = tokio::time::timeout(WAIT, events.next()).await.expect("an event").expect("open").expect("frame");
        if let StreamItem::Event(e) = item
            && let Event::Escalation { escalation, reminder } = e.event
        {
            assert_eq!(escalation.escalation_id, esc);
            if reminder {
                reminded = true;
            } else {
                first = true;
            }
        }
    }
    let open = ok(&a.home, &["escalations", "--open"]);
    assert!(open["escalations"][0]["reminders"].as_i64() >= Some(1), "{open}");

    // The owner answers: into the call, to the agent, to the peer.
    let resolved = ok(&a.home, &["resolve-escalation", &esc, "--answer", "yes, down to 90"]);
    assert_eq!((resolved["state"].as_str(), resolved["answer"].as_str()), (Some("resolved"), Some("yes, down to 90")));
    assert_eq!(a.client.transcript(&call_id).await.expect("call").call.waiting_for_owner, None);
    let answered = wait_for(WAIT, || async {
        let t = b.client.transcript(&call_id).await.ok()?;
        t.lines.into_iter().find(|l| l.kind == agentmesh_api::LineKind::Resolved)
    })
    .await
    .expect("bob hears the answer");
    assert_eq!(answered.text.as_deref(), Some("yes, down to 90"));
    let again = fails(&a.home, &["resolve-escalation", &esc, "--answer", "no"]);
    assert_eq!(again["error"]["code"], "already_decided", "{again}");
    assert_eq!(
        a.client.escalations(&Default::default()).await.expect("list").escalations[0].state,
        EscalationState::Resolved
    );

    // On a task too, from the worker's side.
    let args = DelegateArgs { to: b.agent_id.clone(), text: "book it".into(), ..Default::default() };
    let task_id = a.client.delegate(&args).await.expect("delegate").task.task_id;
    wait_task(&b, &task_id, |_| true).await;
    let esc =
        ok(&b.home, &["escalate", &task_id, "--reason", "spend 90?"])["escalation_id"].as_str().expect("id").to_owned();
    wait_task(&b, &task_id, |t| t.task.waiting_for_owner.as_deref() == Some(esc.as_str())).await;
    ok(&b.home, &["resolve-escalation", &esc, "--answer", "ok"]);
    let seen = wait_task(&a, &task_id, |t| t.history.iter().any(|e| e.kind == TaskEntryKind::Resolved)).await;
    assert!(seen.history.iter().any(|e| e.kind == TaskEntryKind::Escalate && e.text.as_deref() == Some("spend 90?")));
    assert_eq!(
        fails(&a.home, &["escalate", "call_00000000000000000000000000000000", "--reason", "x"])["error"]["code"],
        "not_found"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn regression_an_agent_cannot_bury_its_owner_in_escalations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node_with(dir.path(), "alice", "max_open_escalations = 6\n", &[]).await;
    let b = node(dir.path(), "bob").await;
    trust(&a, &b).await;
    let mut calls = Vec::new();
    for topic in ["one", "two"] {
        let call = a.client.call(&CallArgs { to: b.agent_id.clone(), topic: topic.into(), ring_secs: None }).await;
        calls.push(call.expect("call").call.call_id);
    }
    // Four open questions about one call; the fifth waits for an answer.
    let mut first = None;
    for n in 0..4 {
        let raised = ok(&a.home, &["escalate", &calls[0], "--reason", &format!("question {n}")]);
        first.get_or_insert(raised["escalation_id"].as_str().expect("id").to_owned());
    }
    assert_eq!(fails_with(&a.home, &["escalate", &calls[0], "--reason", "one more"]), "too_many_escalations");
    // Six in all: the other call has two places left.
    ok(&a.home, &["escalate", &calls[1], "--reason", "other 1"]);
    ok(&a.home, &["escalate", &calls[1], "--reason", "other 2"]);
    assert_eq!(fails_with(&a.home, &["escalate", &calls[1], "--reason", "other 3"]), "too_many_escalations");
    let open = a.client.escalations(&Default::default()).await.expect("list").escalations;
    assert_eq!(open.len(), 6, "nothing was stored for the refused ones");
    // Answered, a question frees its place.
    ok(&a.home, &["resolve-escalation", first.as_deref().expect("first"), "--answer", "yes"]);
    ok(&a.home, &["escalate", &calls[0], "--reason", "one more"]);
}
