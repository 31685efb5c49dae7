//! Calls between real nodes: a full call leaves the same transcript on both sides, a callee
//! killed mid-call picks the call up where it was, twenty calls run at once, a call can be
//! declined with a reason or ring out, and steps out of turn are refused with their codes.

use agentmesh_api::control::{AnswerArgs, CallArgs, CallsQuery};
use agentmesh_api::{Call, CallState, Direction, Event, LineKind, MessageStatus, Side, Transcript};
use agentmesh_client::StreamItem;

use crate::support::*;

/// Rings `to` from `from`.
async fn ring(from: &LocalNode, to: &LocalNode, topic: &str) -> Call {
    let args = CallArgs { to: to.agent_id.clone(), topic: topic.into(), ring_secs: None };
    from.client.call(&args).await.expect("call").call
}

/// The call `id` at `node` once `done` holds for its transcript.
async fn wait_call(node: &LocalNode, id: &str, done: impl Fn(&Transcript) -> bool) -> Transcript {
    let found = wait_for(WAIT, || async {
        let t = node.client.transcript(id).await.ok()?;
        done(&t).then_some(t)
    })
    .await;
    match found {
        Some(t) => t,
        None => panic!("call {id} at {}: {:#?}", node.agent_id, node.client.transcript(id).await),
    }
}

/// Answers `id` at `node` once it rings there.
async fn accept(node: &LocalNode, id: &str) -> Call {
    wait_call(node, id, |t| t.call.state == CallState::Ringing).await;
    node.client.answer(id, &AnswerArgs { accept: true, reason: None }).await.expect("answer").call
}

/// What both sides must agree on: each line's id, kind, text and time, and who said it as seen
/// from `caller`'s side.
fn agreed(t: &Transcript, flip: bool) -> Vec<(String, LineKind, Option<String>, i64, Side)> {
    t.lines
        .iter()
        .map(|l| {
            let speaker = match (l.speaker, flip) {
                (Side::Us, true) => Side::Peer,
                (Side::Peer, true) => Side::Us,
                (s, false) => s,
            };
            (l.line_id.clone(), l.kind, l.text.clone(), l.at, speaker)
        })
        .collect()
}

/// The two transcripts of a call list the same lines in the same order, and every line of each
/// side carries the peer's receipt.
async fn assert_same_transcripts(caller: &LocalNode, callee: &LocalNode, id: &str, lines: usize) {
    let all_delivered = |t: &Transcript| {
        t.lines.len() == lines
            && t.lines.iter().filter(|l| l.speaker == Side::Us).all(|l| l.status == Some(MessageStatus::Delivered))
    };
    let a = wait_call(caller, id, all_delivered).await;
    let b = wait_call(callee, id, all_delivered).await;
    assert_eq!(agreed(&a, false), agreed(&b, true), "both sides keep the same transcript");
    assert_eq!((a.call.state, b.call.state), (b.call.state, a.call.state));
    assert_eq!((a.call.direction, b.call.direction), (Direction::Outgoing, Direction::Incoming));
    for line in a.lines.iter().chain(&b.lines) {
        assert!(line.delivered_at.is_some(), "a receipt time for every line: {line:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_call_leaves_the_same_transcript_on_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let mut bob_events = b.client.events(None).await.expect("events");

    // Through the CLI, as an agent would.
    let placed = ok(&a.home, &["call", &b.agent_id, "--topic", "quarterly numbers"]);
    let id = placed["call_id"].as_str().expect("call id").to_owned();
    assert_eq!(placed["state"], "ringing");

    // Bob's agent is told by an event, with the topic.
    let rang = loop {
        let item =
            tokio::time::timeout(WAIT, bob_events.next()).await.expect("an event").expect("open").expect("frame");
        if let StreamItem::Event(e) = item
            && let Event::Call { call, line: Some(line) } = e.event
        {
            break (call, line);
        }
    };
    assert_eq!(
        (rang.0.call_id.as_str(), rang.0.state, rang.0.direction),
        (id.as_str(), CallState::Ringing, Direction::Incoming)
    );
    assert_eq!((rang.1.kind, rang.1.text.as_deref()), (LineKind::Invite, Some("quarterly numbers")));

    let answered = ok(&b.home, &["answer", &id, "accept"]);
    assert_eq!(answered["state"], "active");
    wait_call(&a, &id, |t| t.call.state == CallState::Active).await;

    // Lines both ways, from arguments and from stdin; the callee's first line may overtake its
    // acceptance on the wire, and must not be lost for it.
    for n in 0..3 {
        ok(&a.home, &["say", &id, &format!("alice {n}")]);
        let out = cli_with_stdin(&b.home, &["say", &id, "--json"], Some(&format!("bob {n}\nline two\n")));
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    wait_call(&a, &id, |t| t.call.lines == 6).await;
    let ended = ok(&a.home, &["end", &id, "--reason", "done, thanks"]);
    assert_eq!((ended["state"].as_str(), ended["ended_by"].as_str()), (Some("ended"), Some("us")));
    let bob_side = wait_call(&b, &id, |t| t.call.state == CallState::Ended).await;
    assert_eq!((bob_side.call.ended_by, bob_side.call.reason.as_deref()), (Some(Side::Peer), Some("done, thanks")));

    // invite, accept, 6 lines, end.
    assert_same_transcripts(&a, &b, &id, 9).await;
    let t = a.client.transcript(&id).await.expect("transcript");
    let said: Vec<&str> =
        t.lines.iter().filter(|l| l.kind == LineKind::Say).filter_map(|l| l.text.as_deref()).collect();
    assert!(said.contains(&"bob 2\nline two") && said.contains(&"alice 0"), "{said:?}");

    // The transcript in Markdown, and the call in the lists; the steps are not messages.
    let md = std::process::Command::new(exe()).arg("--home").arg(&a.home).args(["transcript", &id]).output();
    let md = String::from_utf8(md.expect("transcript").stdout).expect("utf-8");
    assert!(md.contains("quarterly numbers") && md.contains("alice 2") && md.contains("bob 1"), "{md}");
    assert!(md.contains("(delivered)"), "our lines show their receipts: {md}");
    let json = ok(&b.home, &["transcript", &id, "--format", "json"]);
    assert_eq!(json["lines"].as_array().map(Vec::len), Some(9));
    let listed = ok(&b.home, &["calls"]);
    assert_eq!(listed["calls"][0]["call_id"], id.as_str());
    assert_eq!(listed["calls"][0]["lines"], 6);
    for home in [&a.home, &b.home] {
        assert_eq!(ok(home, &["list-messages"])["messages"], serde_json::json!([]), "call steps are not messages");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callee_killed_mid_call_picks_it_up_where_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, mut b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let id = ring(&a, &b, "crash test").await.call_id;
    accept(&b, &id).await;
    wait_call(&a, &id, |t| t.call.state == CallState::Active).await;
    a.client.say(&id, "before").await.expect("say");
    wait_call(&b, &id, |t| t.call.lines == 1).await;

    // SIGKILL: no shutdown at all. Alice goes on talking; her lines wait in her outbox.
    b.kill();
    for text in ["while down 1", "while down 2"] {
        a.client.say(&id, text).await.expect("say while the peer is down");
    }
    b.restart().await.expect("restart");
    let back = wait_call(&b, &id, |t| t.call.lines == 3).await;
    assert_eq!(back.call.state, CallState::Active, "the call survived the crash");
    b.client.say(&id, "back again").await.expect("say after the restart");
    wait_call(&a, &id, |t| t.call.lines == 4).await;
    a.client.end_call(&id, None).await.expect("end");
    wait_call(&b, &id, |t| t.call.state == CallState::Ended).await;
    assert_same_transcripts(&a, &b, &id, 7).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_calls_at_once_keep_their_lines_apart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let topics: Vec<String> = (0..20).map(|n| format!("topic {n}")).collect();
    let calls = futures_util::future::join_all(topics.iter().map(|t| ring(&a, &b, t))).await;
    let ids: Vec<String> = calls.into_iter().map(|c| c.call_id).collect();
    futures_util::future::join_all(ids.iter().map(|id| accept(&b, id))).await;
    let talk = ids.iter().enumerate().map(|(n, id)| {
        let (a, b) = (&a, &b);
        async move {
            wait_call(a, id, |t| t.call.state == CallState::Active).await;
            for k in 0..2 {
                a.client.say(id, &format!("{n}: alice {k}")).await.expect("say");
                b.client.say(id, &format!("{n}: bob {k}")).await.expect("say");
            }
        }
    });
    futures_util::future::join_all(talk).await;
    let open = a.client.calls(&CallsQuery { open: true, ..CallsQuery::default() }).await.expect("calls");
    assert_eq!(open.calls.len(), 20);
    for id in &ids {
        a.client.end_call(id, None).await.expect("end");
    }
    for (n, id) in ids.iter().enumerate() {
        assert_same_transcripts(&a, &b, id, 7).await;
        let t = b.client.transcript(id).await.expect("transcript");
        assert_eq!(t.call.topic, format!("topic {n}"));
        let prefix = format!("{n}: ");
        assert!(
            t.lines
                .iter()
                .filter(|l| l.kind == LineKind::Say)
                .all(|l| l.text.as_deref().is_some_and(|x| x.starts_with(&prefix))),
            "each call holds its own lines only"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_can_be_declined_ring_out_and_refuse_steps_out_of_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    let c = node(dir.path(), "carol").await;

    // Not a contact yet: no call.
    let refused = fails(&a.home, &["call", &b.agent_id]);
    assert_eq!(refused["error"]["code"], "not_found", "{refused}");
    trust(&a, &b).await;

    // Declined, with the reason told to the caller.
    let id = ring(&a, &b, "sales").await.call_id;
    wait_call(&b, &id, |t| t.call.state == CallState::Ringing).await;
    let declined = ok(&b.home, &["answer", &id, "reject", "--reason", "not interested"]);
    assert_eq!(declined["state"], "rejected");
    let seen = wait_call(&a, &id, |t| t.call.state == CallState::Rejected).await;
    assert_eq!((seen.call.reason.as_deref(), seen.call.ended_by), (Some("not interested"), Some(Side::Peer)));
    let after = fails(&a.home, &["say", &id, "please?"]);
    assert_eq!(after["error"]["code"], "call_state", "{after}");
    assert!(after["error"]["message"].as_str().is_some_and(|m| m.contains("not interested")), "{after}");

    // Rings out: missed on both sides, and too late to answer.
    let args = CallArgs { to: b.agent_id.clone(), topic: "quick".into(), ring_secs: Some(1) };
    let id = a.client.call(&args).await.expect("call").call.call_id;
    wait_call(&a, &id, |t| t.call.state == CallState::Missed).await;
    wait_call(&b, &id, |t| t.call.state == CallState::Missed).await;
    let late = fails(&b.home, &["answer", &id, "accept"]);
    assert_eq!(late["error"]["code"], "call_state", "{late}");

    // Steps that are not ours to take.
    let id = ring(&a, &b, "turns").await.call_id;
    wait_call(&b, &id, |t| t.call.state == CallState::Ringing).await;
    for (home, args, code) in [
        (&a.home, vec!["answer", id.as_str(), "accept"], "call_state"),
        (&a.home, vec!["say", id.as_str(), "hello?"], "call_state"),
        (&b.home, vec!["say", id.as_str(), "hello?"], "call_state"),
        (&b.home, vec!["end", id.as_str()], "call_state"),
        (&a.home, vec!["say", "call_00000000000000000000000000000000", "x"], "unknown_call"),
        (&b.home, vec!["say", id.as_str(), ""], "empty_message"),
    ] {
        let e = fails(home, &args);
        assert_eq!(e["error"]["code"], code, "{args:?}: {e}");
    }
    // The caller may withdraw a ringing call; the callee sees it ended.
    ok(&a.home, &["end", &id, "--reason", "never mind"]);
    let gone = wait_call(&b, &id, |t| t.call.state == CallState::Ended).await;
    assert_eq!(gone.call.reason.as_deref(), Some("never mind"));

    // A third agent cannot see or touch the call: it is not its.
    trust(&c, &b).await;
    let e = c.client.transcript(&id).await.expect_err("not carol's call");
    assert!(e.to_string().contains("no call"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn call_wait_returns_once_answered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, b) = (node(dir.path(), "alice").await, node(dir.path(), "bob").await);
    trust(&a, &b).await;
    let (mut child, lines) = spawn_lines(&a.home, &["call", &b.agent_id, "--topic", "waiting", "--wait", "--json"]);
    let id = wait_for(WAIT, || async {
        let calls = b.client.calls(&CallsQuery::default()).await.ok()?;
        calls.calls.first().map(|c| c.call_id.clone())
    })
    .await
    .expect("the call rings at bob");
    b.client.answer(&id, &AnswerArgs { accept: true, reason: None }).await.expect("answer");
    let status = tokio::task::spawn_blocking(move || child.wait()).await.expect("join").expect("wait");
    assert!(status.success());
    // The reader thread ends at EOF: every line printed, then a closed channel.
    let out: String = lines.iter().collect::<Vec<_>>().join("\n");
    let call: Call = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((call.call_id, call.state), (id, CallState::Active));
}
