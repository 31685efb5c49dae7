//! Bootstrap + gossip between real nodes on loopback.

use std::time::{Duration, Instant};

use agentmesh_api::Source;
use agentmesh_api::control::DiscoverQuery;

use crate::support::*;

async fn known(node: &LocalNode) -> Vec<String> {
    let q = DiscoverQuery { limit: Some(10_000), ..DiscoverQuery::default() };
    let reply = node.client.discover(&q).await.expect("discover");
    reply.agents.into_iter().map(|a| a.agent_id.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_nodes_with_one_bootstrap_all_learn_each_other() {
    const NODES: usize = 30;
    let dir = tempfile::tempdir().expect("tempdir");
    let bootstrap_home = dir.path().join("bootstrap");
    local::init(&exe(), &bootstrap_home, "bootstrap", &["directory"]).expect("init");
    // Every node shares 127.0.0.1 here: lift the per-IP limit that would otherwise (rightly)
    // throttle thirty agents announcing from one address.
    std::fs::write(bootstrap_home.join("config.toml"), "bootstrap_mode = true\nother_requests_per_minute = 0\n")
        .expect("config");
    let bootstrap = LocalNode::start(&exe(), &bootstrap_home, "127.0.0.1:0", &[]).await.expect("bootstrap");

    let mut nodes = vec![bootstrap];
    for i in 1..NODES {
        let home = dir.path().join(format!("agent{i}"));
        let capability = if i % 2 == 0 { "even" } else { "odd" };
        local::init(&exe(), &home, &format!("agent{i}"), &[capability]).expect("init");
        let config = format!(
            "bootstrap = [\"{}\"]\ngossip_interval_secs = 1\nother_requests_per_minute = 0\n",
            nodes[0].peer_url
        );
        std::fs::write(home.join("config.toml"), config).expect("config");
        nodes.push(LocalNode::start(&exe(), &home, "127.0.0.1:0", &[]).await.expect("start"));
    }
    let started = Instant::now();
    let ids: Vec<String> = nodes.iter().map(|n| n.agent_id.clone()).collect();
    let converged = wait_for(Duration::from_secs(60), || async {
        for node in &nodes {
            let k = known(node).await;
            if ids.iter().any(|id| *id != node.agent_id && !k.contains(id)) {
                return None;
            }
        }
        Some(())
    })
    .await;
    let elapsed = started.elapsed();
    assert!(converged.is_some(), "not every node learnt every other within 60 s");
    eprintln!("gossip: {NODES} nodes converged {} ms after the last one started", elapsed.as_millis());

    // What was learnt is searchable, labelled by source, and not trusted.
    let q = DiscoverQuery { capability: Some("even".into()), limit: Some(100), ..DiscoverQuery::default() };
    let reply = nodes[1].client.discover(&q).await.expect("discover");
    assert_eq!(reply.agents.len(), (2..NODES).step_by(2).count(), "{reply:?}");
    assert!(reply.agents.iter().all(|a| a.trust.is_none() && a.source != Source::Peers));
    assert!(nodes[1].client.peers(false).await.expect("peers").peers.is_empty());
    let cli = ok(&nodes[2].home, &["discover", "--query", "agent1", "--capability", "odd"]);
    assert!(cli["agents"].as_array().is_some_and(|a| a.iter().any(|x| x["name"] == "agent1")), "{cli}");
}
