//! The registry server as a real process on 127.0.0.1, with real nodes registering in it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use agentmesh_core::Identity;
use agentmesh_core::time::now_ms;
use agentmesh_registry::Registration;
use agentmesh_registry::client::RegistryClient;
use agentmesh_registry::model::sign_request;
use serde_json::{Value, json};

/// A registry process; killed on drop.
struct RegistryProcess {
    child: Child,
    url: String,
}

impl Drop for RegistryProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry(home: &Path, extra: &[&str]) -> RegistryProcess {
    let db = home.join("registry.db");
    let mut child = Command::new(exe())
        .arg("--home")
        .arg(home)
        .args(["--json", "registry", "serve", "--listen", "127.0.0.1:0", "--database"])
        .arg(&db)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start registry");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
    let ready: Value = serde_json::from_str(&line).expect("ready JSON");
    RegistryProcess { child, url: ready["url"].as_str().expect("url").to_owned() }
}

fn http() -> reqwest::Client {
    agentmesh_node::net::client(&agentmesh_node::net::ClientOptions { timeout_ms: Some(10_000), ..Default::default() })
        .expect("client")
}

fn registration(hostname: &str, caps: &[&str]) -> Registration {
    Registration {
        hostname: hostname.into(),
        display_name: hostname.into(),
        description: "test agent".into(),
        capabilities: caps.iter().map(|c| (*c).to_owned()).collect(),
        p2p_endpoint: "http://127.0.0.1:9".into(),
        visibility: Default::default(),
        card: None,
    }
}

async fn search(url: &str, text: Option<&str>, caps: &[&str]) -> Value {
    let caps: Vec<String> = caps.iter().map(|c| (*c).to_owned()).collect();
    RegistryClient::new(http(), url, None).search(text, &caps, 20, 0).await.expect("search")
}

fn ids(found: &Value) -> Vec<String> {
    found["agents"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_register_heartbeat_are_searchable_and_deregister() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry(&dir.path().join("registry"), &["--heartbeat-secs", "1"]);
    let mut nodes = Vec::new();
    for (name, caps) in [("alice", ["planning", "research"]), ("bob", ["travel", "research"])] {
        let home = dir.path().join(name);
        local::init(&exe(), &home, name, &caps).expect("init");
        let config = format!(
            "registry = \"{}\"\nregistry_heartbeat_secs = 1\nregistry_description = \"{name} does things\"\n",
            reg.url
        );
        std::fs::write(home.join("config.toml"), config).expect("config");
        nodes.push(LocalNode::start(&exe(), &home, "127.0.0.1:0", &[]).await.expect("start"));
    }
    let (alice_id, bob_id) = (nodes[0].agent_id.clone(), nodes[1].agent_id.clone());
    let both = local::wait_for(WAIT, || async {
        let found = search(&reg.url, None, &["research"]).await;
        (ids(&found).len() == 2).then_some(found)
    })
    .await
    .expect("both nodes register");
    assert_eq!(both["total"], 2);

    // Text and capability search, from the CLI too; results feed request-contact.
    assert_eq!(ids(&search(&reg.url, Some("alice"), &[]).await), vec![alice_id.clone()]);
    assert_eq!(ids(&search(&reg.url, None, &["travel", "research"]).await), vec![bob_id.clone()]);
    // The CLI lists registry results under the names `discover` uses.
    let cli = ok(&nodes[0].home, &["search", "--capability", "travel", "--registry", &reg.url]);
    let endpoint = cli["agents"][0]["endpoint"].as_str().expect("endpoint").to_owned();
    assert_eq!(endpoint, nodes[1].peer_url);
    assert_eq!(
        (cli["agents"][0]["agent_id"].as_str(), cli["agents"][0]["source"].as_str()),
        (Some(bob_id.as_str()), Some("registry"))
    );
    assert_eq!(cli["total"], 1);
    let asked = ok(&nodes[0].home, &["request-contact", &endpoint]);
    assert_eq!(asked["peer"]["agent_id"], bob_id.as_str());

    // Heartbeats keep them online past three intervals.
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    assert_eq!(ids(&search(&reg.url, None, &["research"]).await).len(), 2, "heartbeats keep agents online");

    // Clean shutdown deregisters; a killed node goes offline after three missed heartbeats.
    assert!(nodes[0].stop().await);
    let record = http().get(format!("{}/api/v1/agents/{alice_id}", reg.url)).send().await.expect("get");
    assert_eq!(record.status().as_u16(), 404, "deregistered on clean shutdown");
    nodes[1].kill();
    let gone = local::wait_for(Duration::from_secs(10), || async {
        ids(&search(&reg.url, None, &["research"]).await).is_empty().then_some(())
    })
    .await;
    assert!(gone.is_some(), "a silent agent goes offline after three missed heartbeats");
    let hostname = format!("bob-{bob_id}");
    let by_host = http().get(format!("{}/api/v1/agents/by-hostname/{hostname}", reg.url)).send().await.expect("get");
    assert_eq!(by_host.status().as_u16(), 404, "offline agents are not returned by hostname");
    let by_id: Value = http()
        .get(format!("{}/api/v1/agents/{bob_id}", reg.url))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(by_id["status"], "offline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_must_be_signed_by_the_owner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let reg = registry(dir.path(), &[]);
    let alice = Identity::generate();
    let client = RegistryClient::new(http(), &reg.url, None);
    let created = client.register(&alice, &registration("alice-host", &["planning"])).await.expect("register");
    assert_eq!(created["id"], alice.agent_id().to_string());
    assert_eq!(created["status"], "online");

    // Unsigned (the old registry's weakness) and forged writes: 401, nothing stored.
    let body = serde_json::to_vec(&registration("mallory-host", &[])).expect("json");
    let post = |headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let mut r = http().post(format!("{}/api/v1/agents/", reg.url)).header("content-type", "application/json");
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.body(body).send()
    };
    let r = post(vec![], body.clone()).await.expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.json::<Value>().await.expect("json")["detail"].as_str().is_some_and(|d| d.contains("signed")));
    let mallory = Identity::generate();
    let mut forged = sign_request(&mallory, "POST", "/api/v1/agents/", now_ms(), &body).to_vec();
    forged[0].1 = agentmesh_core::b64::encode(alice.public().ed25519.as_bytes()); // claims alice's key
    assert_eq!(post(forged, body.clone()).await.expect("post").status().as_u16(), 401);

    // A hostname belongs to the first key that claims it.
    let squat = client.register(&mallory, &registration("alice-host", &[])).await.expect_err("taken");
    assert_eq!(squat.status, 409, "{squat}");
    // Only the owner heartbeats, updates or deletes.
    let alice_id = alice.agent_id().to_string();
    let wrong = client.heartbeat(&mallory, &alice_id).await.expect_err("not the owner");
    assert_eq!(wrong.status, 403);
    let wrong = client.deregister(&mallory, &alice_id).await.expect_err("not the owner");
    assert_eq!(wrong.status, 403);

    // A replayed signed request is refused.
    let heartbeat_path = format!("/api/v1/agents/{alice_id}/heartbeat");
    let signed = sign_request(&alice, "POST", &heartbeat_path, now_ms(), b"");
    let send = || {
        let mut r = http().post(format!("{}{heartbeat_path}", reg.url));
        for (k, v) in &signed {
            r = r.header(*k, v.clone());
        }
        r.send()
    };
    assert_eq!(send().await.expect("first").status().as_u16(), 200);
    assert_eq!(send().await.expect("replay").status().as_u16(), 409);

    // Private agents are never listed; bad search parameters are refused with a detail.
    let bob = Identity::generate();
    let mut private = registration("bob-host", &["planning"]);
    private.visibility = agentmesh_registry::Visibility::Private;
    client.register(&bob, &private).await.expect("register private");
    assert_eq!(ids(&search(&reg.url, None, &["planning"]).await), vec![alice_id.clone()]);
    let bad = http().get(format!("{}/api/v1/agents/search?limit=500", reg.url)).send().await.expect("get");
    assert_eq!(bad.status().as_u16(), 422);
    assert!(bad.json::<Value>().await.expect("json")["detail"].is_string());

    assert_eq!(client.deregister(&alice, &alice_id).await.expect("delete")["deleted"], true);
    assert!(ids(&search(&reg.url, None, &["planning"]).await).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_and_rate_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("api.key");
    std::fs::write(&key_file, "s3cret-registry-key\n").expect("key");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    let reg = registry(dir.path(), &["--api-key-file", key_file.to_str().expect("path"), "--per-ip-per-minute", "60"]);
    let url = format!("{}/api/v1/agents/search", reg.url);
    let denied = http().get(&url).send().await.expect("get");
    assert_eq!(denied.status().as_u16(), 401);
    let keyed = RegistryClient::new(http(), &reg.url, Some("s3cret-registry-key".into()));
    keyed.search(None, &[], 5, 0).await.expect("with the key");
    // The CLI says what is wrong (regression: the error had no code of its own), and uses the
    // key file of config.toml.
    let home = dir.path().join("searcher");
    ok(&home, &["init", "--name", "searcher"]);
    assert_eq!(fails_with(&home, &["search", "--registry", &reg.url]), "registry_unauthorized");
    let key_path = key_file.to_str().expect("path");
    std::fs::write(home.join("config.toml"), format!("registry_api_key_file = \"{key_path}\"\n")).expect("config");
    ok(&home, &["search", "--registry", &reg.url]);

    // 60 per minute per IP: the burst, then 429 with the real wait, which is enough.
    let mut refused = None;
    for _ in 0..70 {
        let r = http().get(&url).header("x-registry-key", "s3cret-registry-key").send().await.expect("get");
        if r.status().as_u16() == 429 {
            refused = Some(r);
            break;
        }
    }
    let refused = refused.expect("rate limited within 70 requests");
    let header: u64 = refused.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["retry_after"], json!(header));
    assert_eq!(header, 1, "one request per second after the burst");
    tokio::time::sleep(Duration::from_secs(header)).await;
    keyed.search(None, &[], 5, 0).await.expect("allowed after the announced wait");
}
