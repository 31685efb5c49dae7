//! Two agents behind NATs, with no port forwarded, reach each other over iroh through our own
//! relay. The test builds its own internet in network namespaces: `inet` (the relay at
//! 10.200.1.1), two routers `ra`/`rb` that masquerade their LANs (192.168.1.0/24 and
//! 192.168.2.0/24) behind 10.200.1.2 and 10.200.2.2, and the agents `a` and `b` behind them.
//! Linux masquerading keeps a flow's source port (endpoint-independent mapping: holes can be
//! punched); `masquerade random` picks a new port per destination (a symmetric NAT: they cannot).
//! Needs root, iproute2 and nftables; under `CI=true` a missing one fails the test. No packet
//! leaves the namespaces.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::*;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0]).args(&args[1..]).stderr(Stdio::piped()).stdout(Stdio::null()).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`{}`: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("`{}`: {e}", args.join(" "))),
    }
}

/// How a router maps its LAN's flows.
#[derive(Clone, Copy)]
enum Nat {
    /// One public port per private socket, whatever the destination: holes can be punched.
    EndpointIndependent,
    /// A new public port per destination: no hole can be punched.
    Symmetric,
}

/// The namespaces, their links and the processes run in them; all removed on drop.
struct Internet {
    tag: String,
    children: Vec<Child>,
}

const NAMESPACES: [&str; 5] = ["inet", "ra", "rb", "a", "b"];

impl Internet {
    fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.tag)
    }

    fn build(nat: Nat) -> Internet {
        let root = nix::unistd::Uid::effective().is_root();
        assert!(
            root && run(&["ip", "-V"]).is_ok() && run(&["nft", "--version"]).is_ok(),
            "the NAT test needs root, iproute2 (`ip netns`) and nftables (`nft`); .ci/run installs them and runs it as root"
        );
        let tag = format!("nat{}", std::process::id() % 100_000);
        let net = Internet { tag: tag.clone(), children: Vec::new() };
        let ns = |n: &str| format!("{tag}{n}");
        let dev = |n: &str| format!("{tag}{n}");
        let mut steps: Vec<Vec<String>> = Vec::new();
        let cmd = |parts: &[&str]| parts.iter().map(|s| (*s).to_owned()).collect::<Vec<String>>();
        for n in NAMESPACES {
            steps.push(cmd(&["ip", "netns", "add", &ns(n)]));
            steps.push(cmd(&["ip", "-n", &ns(n), "link", "set", "lo", "up"]));
        }
        // (left namespace, left device, left address, right namespace, right device, right address)
        let links = [
            ("inet", "i1", "10.200.1.1/24", "ra", "w1", "10.200.1.2/24"),
            ("inet", "i2", "10.200.2.1/24", "rb", "w2", "10.200.2.2/24"),
            ("ra", "l1", "192.168.1.1/24", "a", "h1", "192.168.1.2/24"),
            ("rb", "l2", "192.168.2.1/24", "b", "h2", "192.168.2.2/24"),
        ];
        for (ln, ld, la, rn, rd, ra) in links {
            steps.push(cmd(&["ip", "link", "add", &dev(ld), "type", "veth", "peer", "name", &dev(rd)]));
            for (n, d, a) in [(ln, ld, la), (rn, rd, ra)] {
                steps.push(cmd(&["ip", "link", "set", &dev(d), "netns", &ns(n)]));
                steps.push(cmd(&["ip", "-n", &ns(n), "addr", "add", a, "dev", &dev(d)]));
                steps.push(cmd(&["ip", "-n", &ns(n), "link", "set", &dev(d), "up"]));
            }
        }
        for (n, via) in [("ra", "10.200.1.1"), ("rb", "10.200.2.1"), ("a", "192.168.1.1"), ("b", "192.168.2.1")] {
            steps.push(cmd(&["ip", "-n", &ns(n), "route", "add", "default", "via", via]));
        }
        for n in ["inet", "ra", "rb"] {
            steps.push(cmd(&["ip", "netns", "exec", &ns(n), "sysctl", "-qw", "net.ipv4.ip_forward=1"]));
        }
        let random = match nat {
            Nat::EndpointIndependent => None,
            Nat::Symmetric => Some("random"),
        };
        for (router, wan) in [("ra", "w1"), ("rb", "w2")] {
            let exec = ["ip", "netns", "exec", &ns(router), "nft"];
            let mut rule: Vec<String> = cmd(&exec);
            rule.extend(cmd(&["add", "rule", "ip", "nat", "post", "oifname", &dev(wan), "masquerade"]));
            rule.extend(random.map(str::to_owned));
            steps.push([cmd(&exec), cmd(&["add", "table", "ip", "nat"])].concat());
            steps.push(
                [
                    cmd(&exec),
                    cmd(&["add", "chain", "ip", "nat", "post", "{ type nat hook postrouting priority srcnat; }"]),
                ]
                .concat(),
            );
            steps.push(rule);
            // Like a home router's firewall: what arrives unasked on the WAN is dropped before
            // conntrack records it (else an early probe of a hole punch would hold the port the
            // router's own mapping needs, and the NAT would move that mapping elsewhere).
            steps.push([cmd(&exec), cmd(&["add", "table", "ip", "fw"])].concat());
            steps.push(
                [cmd(&exec), cmd(&["add", "chain", "ip", "fw", "pre", "{ type filter hook prerouting priority 0; }"])]
                    .concat(),
            );
            steps.push(
                [
                    cmd(&exec),
                    cmd(&["add", "rule", "ip", "fw", "pre", "iifname", &dev(wan), "ct", "state", "new", "drop"]),
                ]
                .concat(),
            );
        }
        for step in steps {
            let parts: Vec<&str> = step.iter().map(String::as_str).collect();
            if let Err(e) = run(&parts) {
                panic!("building the test internet: {e}");
            }
        }
        net
    }

    /// `agentmesh --home HOME ARGS…` in namespace `name`.
    fn agentmesh(&self, name: &str, home: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(name)]).arg(exe()).arg("--home").arg(home).args(args);
        cmd
    }

    /// A `--json` command in `name` that must succeed; its JSON document.
    fn json(&self, name: &str, home: &Path, args: &[&str]) -> Value {
        let out = self.agentmesh(name, home, &[&["--json"], args].concat()).output().expect("run agentmesh");
        assert!(out.status.success(), "agentmesh {args:?} in {name}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).expect("json")
    }

    /// Starts a long-running `agentmesh` in `name`, logging to `log`; returns its index.
    fn spawn(&mut self, name: &str, home: &Path, args: &[&str], log: &Path) -> usize {
        let log = std::fs::File::create(log).expect("log");
        let child = self
            .agentmesh(name, home, args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn agentmesh");
        self.children.push(child);
        self.children.len() - 1
    }

    fn kill(&mut self, index: usize) {
        let child = &mut self.children[index];
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for n in NAMESPACES {
            let _ = run(&["ip", "netns", "del", &self.ns(n)]);
        }
    }
}

fn wait<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < limit, "{what}: not within {} s", limit.as_secs());
        std::thread::sleep(Duration::from_millis(200));
    }
}

struct Agents {
    net: Internet,
    dir: tempfile::TempDir,
    relay: usize,
    a: PathBuf,
    b: PathBuf,
    b_id: String,
    started: Instant,
}

/// The internet, our relay in `inet`, and an agent behind each router, trusting each other
/// after a contact request sent to `b`'s iroh endpoint alone.
fn agents(nat: Nat) -> Agents {
    let mut net = Internet::build(nat);
    let dir = tempfile::tempdir().expect("tempdir");
    let relay_home = dir.path().join("relay");
    std::fs::create_dir_all(&relay_home).expect("relay home");
    let relay = net.spawn(
        "inet",
        &relay_home,
        &[
            "relay",
            "serve",
            "--https",
            "10.200.1.1:443",
            "--http",
            "10.200.1.1:80",
            "--quic",
            "10.200.1.1:7842",
            "--hostname",
            "10.200.1.1",
        ],
        &dir.path().join("relay.log"),
    );
    let cert = relay_home.join("relay").join("cert.pem");
    wait("the relay's certificate", Duration::from_secs(20), || cert.exists().then_some(()));
    let config = format!(
        "tls_ca_file = {:?}\nretry_base_ms = 100\nretry_max_ms = 1000\n[iroh]\nlisten = \"0.0.0.0:0\"\nrelays = [\"https://10.200.1.1\"]\n",
        cert.display().to_string()
    );
    let started = Instant::now();
    let mut homes = Vec::new();
    for name in ["a", "b"] {
        let home = dir.path().join(name);
        local::init(&exe(), &home, name, &["chat"]).expect("init");
        std::fs::write(home.join("config.toml"), &config).expect("config");
        net.spawn(name, &home, &["up", "--listen", "127.0.0.1:0"], &dir.path().join(format!("{name}.log")));
        let runtime = home.join("node.json");
        wait(&format!("agent {name} starts"), Duration::from_secs(30), || runtime.exists().then_some(()));
        homes.push(home);
    }
    let (a, b) = (homes[0].clone(), homes[1].clone());
    // The card passed out of band: b's iroh endpoint (its relay, its private address).
    let card = net.json("b", &b, &["card"]);
    let b_id = card["agent_id"].as_str().expect("id").to_owned();
    let endpoint = card["endpoints"]
        .as_array()
        .and_then(|e| e.iter().filter_map(Value::as_str).find(|e| e.starts_with("iroh:")).map(str::to_owned))
        .expect("b's card lists an iroh endpoint");
    assert!(endpoint.contains("relay=https%3A%2F%2F10.200.1.1"), "{endpoint}");
    let asked = wait("a's contact request reaches b through the relay", Duration::from_secs(60), || {
        let out =
            net.agentmesh("a", &a, &["--json", "request-contact", &endpoint, "--purpose", "nat"]).output().ok()?;
        out.status.success().then(|| serde_json::from_slice::<Value>(&out.stdout).ok()).flatten()
    });
    let request_id = asked["request"]["request_id"].as_str().expect("request id").to_owned();
    wait("b sees the request", Duration::from_secs(30), || {
        let list = net.json("b", &b, &["requests"]);
        list["requests"].as_array()?.iter().any(|r| r["request_id"] == request_id.as_str()).then_some(())
    });
    net.json("b", &b, &["approve-request", &request_id]);
    wait("a trusts b", Duration::from_secs(30), || {
        let peers = net.json("a", &a, &["peers"]);
        peers["peers"]
            .as_array()?
            .iter()
            .any(|p| p["agent_id"] == b_id.as_str() && p["trust"] == "trusted")
            .then_some(())
    });
    Agents { net, dir, relay, a, b, b_id, started }
}

impl Agents {
    /// Sends `text` from a to b and waits until b has it.
    fn converse(&self, text: &str) {
        self.net.json("a", &self.a, &["send-message", "--to", &self.b_id, "--text", text]);
        wait(&format!("b receives {text:?}"), Duration::from_secs(60), || {
            let list = self.net.json("b", &self.b, &["list-messages"]);
            list["messages"].as_array()?.iter().any(|m| m["text"] == text).then_some(())
        });
    }

    /// a's path to b, as `check` shows it.
    fn path(&self) -> Value {
        let out = self.net.agentmesh("a", &self.a, &["--json", "check", &self.b_id]).output().expect("check");
        serde_json::from_slice::<Value>(&out.stdout).map(|v| v["peer"]["path"].clone()).unwrap_or(Value::Null)
    }

    /// The tail of each log; the whole logs are kept under the target's tmp dir (`nat-logs/`).
    fn logs(&self) -> String {
        let keep = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("nat-logs").join(&self.net.tag);
        let _ = std::fs::create_dir_all(&keep);
        ["relay", "a", "b"]
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(self.dir.path().join(format!("{n}.log"))).unwrap_or_default();
                let _ = std::fs::write(keep.join(format!("{n}.log")), &log);
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!("--- {n}\n{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[test]
#[ignore = "needs root, iproute2 and nftables; .ci/run runs it"]
fn behind_endpoint_independent_nats_the_agents_punch_a_hole_and_go_direct() {
    let mut agents = agents(Nat::EndpointIndependent);
    agents.converse("first, maybe relayed");
    eprintln!("EIM NATs: from `up` to the first delivered message: {:.2} s", agents.started.elapsed().as_secs_f64());
    let direct = Instant::now();
    let path = {
        let mut last = Value::Null;
        let found = (0..150).any(|_| {
            last = agents.path();
            let ok = last["kind"] == "direct";
            if !ok {
                std::thread::sleep(Duration::from_millis(200));
            }
            ok
        });
        assert!(found, "the path never went direct: {last}\n{}", agents.logs());
        last
    };
    eprintln!("EIM NATs: direct after {:.2} s more: {path}", direct.elapsed().as_secs_f64());
    assert_eq!(path["carrier"], "iroh");
    assert!(path["via"].as_str().is_some_and(|v| v.starts_with("10.200.2.2:")), "b's public address: {path}");

    // The relay goes away: the direct path carries on.
    let relay = agents.relay;
    agents.net.kill(relay);
    agents.converse("after the relay died");
    agents.converse("and again");
    assert_eq!(agents.path()["kind"], "direct");
}

#[test]
#[ignore = "needs root, iproute2 and nftables; .ci/run runs it"]
fn behind_symmetric_nats_the_agents_stay_relayed_and_keep_talking() {
    let agents = agents(Nat::Symmetric);
    agents.converse("through the relay");
    eprintln!(
        "symmetric NATs: from `up` to the first delivered message: {:.2} s",
        agents.started.elapsed().as_secs_f64()
    );
    // Time for a hole punch to be tried and fail; the relay keeps carrying.
    std::thread::sleep(Duration::from_secs(5));
    for n in 0..5 {
        agents.converse(&format!("relayed {n}"));
    }
    let path = agents.path();
    assert_eq!(
        (path["carrier"].as_str(), path["kind"].as_str()),
        (Some("iroh"), Some("relayed")),
        "{path}\n{}",
        agents.logs()
    );
    assert_eq!(path["via"].as_str().map(|v| v.trim_end_matches('/')), Some("https://10.200.1.1"), "{path}");
}
