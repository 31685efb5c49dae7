//! mDNS on a LAN made of two network namespaces joined by a veth pair, created by this test.
//! Needs root and iproute2 (`ip`); elsewhere it is skipped with a message. CI runs it as root.
//! No packet leaves the two namespaces.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::*;
use serde_json::Value;

/// Two namespaces `<tag>a`/`<tag>b` with `10.231.<n>.1` and `.2` on a veth pair; removed on drop.
struct Lan {
    a: String,
    b: String,
    subnet: u8,
    node: Option<Child>,
}

fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

impl Lan {
    fn create() -> Lan {
        let root = nix::unistd::Uid::effective().is_root();
        assert!(root && ip(&["-V"]), "the mDNS test needs root and iproute2 (`ip netns`); .ci/run runs it as root");
        let tag = format!("am{}", std::process::id() % 100_000);
        let subnet = (std::process::id() % 200) as u8 + 20;
        let lan = Lan { a: format!("{tag}a"), b: format!("{tag}b"), subnet, node: None };
        let (va, vb) = (format!("{tag}va"), format!("{tag}vb"));
        let (addr_a, addr_b) = (format!("10.231.{subnet}.1/24"), format!("10.231.{subnet}.2/24"));
        let steps: Vec<Vec<&str>> = vec![
            vec!["netns", "add", &lan.a],
            vec!["netns", "add", &lan.b],
            vec!["link", "add", &va, "type", "veth", "peer", "name", &vb],
            vec!["link", "set", &va, "netns", &lan.a],
            vec!["link", "set", &vb, "netns", &lan.b],
            vec!["-n", &lan.a, "addr", "add", &addr_a, "dev", &va],
            vec!["-n", &lan.b, "addr", "add", &addr_b, "dev", &vb],
            vec!["-n", &lan.a, "link", "set", "lo", "up"],
            vec!["-n", &lan.b, "link", "set", "lo", "up"],
            vec!["-n", &lan.a, "link", "set", &va, "up"],
            vec!["-n", &lan.b, "link", "set", &vb, "up"],
        ];
        for step in steps {
            assert!(ip(&step), "`ip {}` failed (no network namespaces here?)", step.join(" "));
        }
        lan
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        if let Some(mut child) = self.node.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        ip(&["netns", "del", &self.a]);
        ip(&["netns", "del", &self.b]);
    }
}

fn in_ns(ns: &str, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(exe()).arg("--home").arg(home).args(args);
    cmd
}

#[test]
#[ignore = "needs root and iproute2 network namespaces; .ci/run runs it"]
fn a_node_is_found_on_the_lan_by_mdns() {
    let mut lan = Lan::create();
    let dir = tempfile::tempdir().expect("tempdir");
    let (home_a, home_b) = (dir.path().join("a"), dir.path().join("b"));
    local::init(&exe(), &home_a, "lan-alice", &["lan"]).expect("init");
    local::init(&exe(), &home_b, "lan-bob", &[]).expect("init");

    let listen = format!("10.231.{}.1:8787", lan.subnet);
    let log = std::fs::File::create(dir.path().join("a.log")).expect("log");
    let child = in_ns(&lan.a, &home_a, &["up", "--listen", &listen])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start node in namespace a");
    lan.node = Some(child);
    let runtime = home_a.join("node.json");
    for _ in 0..100 {
        if runtime.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let info: Value = serde_json::from_slice(&std::fs::read(&runtime).expect("node a started")).expect("node.json");

    // From the other namespace: browse, fetch the card over the veth, verify, record.
    let out = in_ns(&lan.b, &home_b, &["--json", "discover", "--lan", "--timeout", "4"]).output().expect("discover");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let found = report["found"].as_array().expect("found");
    let alice = found.iter().find(|f| f["agent_id"] == info["agent_id"]).unwrap_or_else(|| {
        let log = std::fs::read_to_string(dir.path().join("a.log")).unwrap_or_default();
        panic!("alice not found on the LAN: {report}\nnode log: {log}")
    });
    assert_eq!(alice["endpoint"], format!("http://{listen}"));
    assert_eq!(alice["signature_valid"], true);
    assert_eq!(alice["recorded"], "new");
    let peers = agentmesh_store::Store::open(&home_b.join("agentmesh.db")).expect("db").peers(false).expect("peers");
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].trust, agentmesh_api::TrustState::Discovered);

    // --no-mdns: not advertised.
    if let Some(mut child) = lan.node.take() {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM);
        let _ = child.wait();
    }
    let quiet = in_ns(&lan.a, &home_a, &["up", "--listen", &listen, "--no-mdns"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("restart node");
    let quiet_pid = quiet.id();
    lan.node = Some(quiet);
    // The quiet node runs (its node.json names it) and answers over the veth: only its mDNS is off.
    let started = (0..100).any(|_| {
        let running = std::fs::read(&runtime)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["pid"].as_u64() == Some(u64::from(quiet_pid)));
        if !running {
            std::thread::sleep(Duration::from_millis(100));
        }
        running
    });
    assert!(started, "the --no-mdns node did not start");
    let url = format!("http://{listen}");
    let scanned = in_ns(&lan.b, &home_b, &["--json", "scan", &url]).output().expect("scan");
    assert!(
        scanned.status.success(),
        "the quiet node is up and reachable: {}",
        String::from_utf8_lossy(&scanned.stderr)
    );
    let out = in_ns(&lan.b, &home_b, &["--json", "discover", "--lan", "--timeout", "2"]).output().expect("discover");
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["found"].as_array().map(Vec::len), Some(0), "{report}");
}
