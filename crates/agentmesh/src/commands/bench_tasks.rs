//! `agentmesh bench --tasks N`: task round trips between two real nodes on loopback.
//!
//! One at a time, the delegator delegates a task (control API → outbox → HTTP → the worker's
//! pipeline → its event stream); a consumer of the worker's event stream completes it with a text
//! artifact as soon as the task reaches it; the round ends when the `completed` update reaches a
//! consumer of the delegator's stream. Each round is two complete deliveries, each stored on both
//! sides before it is acknowledged. 127.0.0.1 only.

use std::time::{Duration, Instant};

use agentmesh_api::control::{DelegateArgs, UpdateTaskArgs};
use agentmesh_api::{Direction, Event, TaskState};
use agentmesh_client::{EventStream, StreamItem};
use agentmesh_core::task::{Artifact, Part};
use anyhow::{Result, anyhow, bail};
use serde_json::json;

use super::Ctx;
use super::bench::{pair, trust};
use crate::output;

/// The next task event on `stream` that `pick` accepts.
async fn next_task(stream: &mut EventStream, pick: impl Fn(&agentmesh_api::Task) -> bool) -> Result<String> {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .map_err(|_| anyhow!("no task event within 30 s"))?
            .ok_or_else(|| anyhow!("the event stream ended"))??;
        if let StreamItem::Event(logged) = item
            && let Event::Task { task, .. } = &logged.event
            && pick(task)
        {
            return Ok(task.task_id.clone());
        }
    }
}

pub(crate) async fn run(ctx: &Ctx, rounds: usize) -> Result<()> {
    if rounds == 0 {
        bail!("--tasks needs at least 1 round");
    }
    let (_dir, mut delegator, mut worker) = pair("agentmesh-bench-tasks-").await?;
    trust(&delegator, &worker).await?;
    let (mut at_delegator, mut at_worker) = (delegator.client.events(None).await?, worker.client.events(None).await?);

    // The worker's agent: completes each task as soon as it arrives.
    let responder = {
        let client = worker.client.clone();
        tokio::spawn(async move {
            loop {
                let id = next_task(&mut at_worker, |t| {
                    t.direction == Direction::Incoming && t.state == TaskState::Submitted
                })
                .await?;
                let result = Artifact {
                    artifact_id: "result".into(),
                    name: None,
                    parts: vec![Part::Text { text: "done".into() }],
                };
                let args = UpdateTaskArgs { state: TaskState::Completed, text: None, artifacts: vec![result] };
                client.update_task(&id, &args).await?;
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        })
    };

    let warmup = (rounds / 10).clamp(10, 200);
    let mut times = Vec::with_capacity(rounds);
    let mut started = Instant::now();
    for n in 0..warmup + rounds {
        if n == warmup {
            started = Instant::now();
        }
        let t0 = Instant::now();
        let args = DelegateArgs { to: worker.agent_id.clone(), text: format!("task {n}"), ..DelegateArgs::default() };
        let id = delegator.client.delegate(&args).await?.task.task_id;
        let done = next_task(&mut at_delegator, |t| t.task_id == id && t.state == TaskState::Completed).await?;
        if n >= warmup {
            times.push(t0.elapsed());
        }
        debug_assert_eq!(done, id);
    }
    let elapsed = started.elapsed();
    responder.abort();
    let completed = delegator
        .client
        .tasks(&agentmesh_api::control::TasksQuery {
            state: Some(TaskState::Completed),
            limit: Some(1000),
            ..Default::default()
        })
        .await?
        .tasks
        .len();
    let (d_ok, w_ok) = (delegator.stop().await, worker.stop().await);

    times.sort_unstable();
    let pct = |p: f64| {
        times.get(((times.len() as f64 * p).ceil() as usize).saturating_sub(1)).copied().unwrap_or(Duration::ZERO)
    };
    let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
    let report = json!({
        "rounds": rounds,
        "tasks_per_s": (rounds as f64 / elapsed.as_secs_f64()).round(),
        "delegate_to_completed_ms": {"p50": ms(pct(0.50)), "p90": ms(pct(0.90)), "p99": ms(pct(0.99)), "max": ms(pct(1.0))},
        "clean_shutdown": d_ok && w_ok,
    });
    if completed < (warmup + rounds).min(1000) {
        bail!("the delegator lists {completed} completed tasks, expected {}", (warmup + rounds).min(1000));
    }
    if ctx.json {
        output::json_doc(&report);
    } else {
        output::line(&format!("{rounds} task round trips (delegate → completed with an artifact), one at a time"));
        output::line(&format!("  rate  {} tasks/s", report["tasks_per_s"]));
        let r = &report["delegate_to_completed_ms"];
        output::line(&format!(
            "  time  p50 {} ms, p90 {} ms, p99 {} ms, max {} ms",
            r["p50"], r["p90"], r["p99"], r["max"]
        ));
    }
    Ok(())
}
