//! A real S3-compatible server for the tests: the `moto` server (Python) on 127.0.0.1 and
//! a free port, started and stopped by the test process itself, and a small HTTP proxy
//! that can sit in front of it to make the store fail in the ways a real one does (go
//! away, answer slowly, hand back other bytes or another ETag).
//!
//! The server is found as the module `moto.server` of `$TMPA_TEST_PYTHON`, else of the
//! workspace's `target/py-venv` (which tests/check.sh builds and installs moto into), else
//! of `python3`. When none has it, [`S3Server::start`] fails the test (a missing
//! prerequisite, [`crate::prerequisite`]), or with `TMPA_ALLOW_SKIP` set returns
//! `None` after printing why, so that a developer without moto sees the S3 tests skipped,
//! never silently passed.
//!
//! The server watches its standard input and exits when it closes, so a test process
//! that dies (or ends without dropping a shared server) takes its server with it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Credentials moto accepts (it checks none).
const KEY: &str = "testing";
/// How long the server may take to answer its first request.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The moto server, started for a test process; killed on drop.
pub struct S3Server {
    child: Mutex<Option<(Child, ChildStdin)>>,
    port: u16,
}

/// The Python interpreter that has moto, if any.
fn python_with_moto() -> Result<PathBuf, String> {
    let mut candidates = Vec::new();
    if let Some(p) = std::env::var_os("TMPA_TEST_PYTHON") {
        candidates.push(PathBuf::from(p));
    }
    let venv = crate::target_dir()
        .parent()
        .map(|t| t.join("py-venv/bin/python"));
    candidates.extend(venv);
    candidates.push(PathBuf::from("python3"));
    let mut tried = Vec::new();
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import moto.server"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(py);
        }
        tried.push(py.display().to_string());
    }
    Err(format!(
        "no Python with moto[server] ({}); tests/check.sh installs moto[s3], flask and flask-cors into target/py-venv",
        tried.join(", ")
    ))
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

const SERVE: &str = r"
import os, sys, threading
def watch():
    sys.stdin.read()
    os._exit(0)
threading.Thread(target=watch, daemon=True).start()
from moto.server import main
main(['-H', '127.0.0.1', '-p', sys.argv[1]])
";

impl S3Server {
    /// Starts a moto server on a free port of 127.0.0.1 and waits until it answers.
    ///
    /// # Panics
    /// When it cannot be started and `TMPA_ALLOW_SKIP` is unset, or when it was found
    /// but does not come up.
    pub fn start() -> Option<S3Server> {
        let found = python_with_moto();
        let why = found.as_ref().err().cloned().unwrap_or_default();
        let py = crate::prerequisite(
            found.ok(),
            &format!("S3 tests need a local S3 server (moto): {why}"),
        )?;
        let port = free_port();
        let mut child = Command::new(&py)
            .args(["-c", SERVE, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {} -m moto.server: {e}", py.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let server = S3Server {
            child: Mutex::new(Some((child, stdin))),
            port,
        };
        let start = Instant::now();
        loop {
            if http(port, "GET", "/", &[]).is_ok_and(|(status, _, _)| status < 500) {
                return Some(server);
            }
            if let Some((c, _)) = server.child.lock().expect("lock").as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!("the moto server on port {port} exited at start: {status}");
            }
            assert!(
                start.elapsed() < START_TIMEOUT,
                "the moto server on port {port} did not answer within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates a bucket.
    ///
    /// # Panics
    /// When the server refuses.
    pub fn create_bucket(&self, name: &str) {
        let (status, _, body) = http(self.port, "PUT", &format!("/{name}"), &[])
            .unwrap_or_else(|e| panic!("create bucket {name}: {e}"));
        assert_eq!(
            status,
            200,
            "create bucket {name}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    /// Puts an object directly (as another writer would).
    ///
    /// # Panics
    /// When the server refuses.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) {
        let (status, _, resp) = http(self.port, "PUT", &format!("/{bucket}/{key}"), body)
            .unwrap_or_else(|e| panic!("put {bucket}/{key}: {e}"));
        assert_eq!(
            status,
            200,
            "put {bucket}/{key}: {}",
            String::from_utf8_lossy(&resp)
        );
    }

    /// An object's bytes, `None` when it does not exist.
    ///
    /// # Panics
    /// When the server fails.
    pub fn get_object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let (status, _, body) = http(self.port, "GET", &format!("/{bucket}/{key}"), &[])
            .unwrap_or_else(|e| panic!("get {bucket}/{key}: {e}"));
        match status {
            200 => Some(body),
            404 => None,
            s => panic!("get {bucket}/{key}: status {s}"),
        }
    }

    /// The keys under `prefix` in `bucket` (one page: up to 1000).
    ///
    /// # Panics
    /// When the server fails.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let (status, _, body) = http(
            self.port,
            "GET",
            &format!("/{bucket}?list-type=2&prefix={prefix}"),
            &[],
        )
        .unwrap_or_else(|e| panic!("list {bucket}: {e}"));
        assert_eq!(status, 200, "list {bucket}");
        let text = String::from_utf8_lossy(&body);
        let mut keys: Vec<String> = text
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// Stops the server (the store "goes away").
    pub fn stop(&self) {
        if let Some((mut c, stdin)) = self.child.lock().expect("lock").take() {
            drop(stdin);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sets the store's standard environment on `cmd` for `endpoint_port` (the server's
    /// own port, or a proxy's in front of it).
    pub fn env(cmd: &mut Command, endpoint_port: u16) -> &mut Command {
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("AWS_ACCESS_KEY_ID", KEY)
            .env("AWS_SECRET_ACCESS_KEY", KEY)
            .env("AWS_REGION", "us-east-1")
            .env(
                "AWS_ENDPOINT_URL",
                format!("http://127.0.0.1:{endpoint_port}"),
            )
            .env("AWS_ALLOW_HTTP", "true")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One HTTP/1.1 request on a new connection: (status, head, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        // moto checks no signature, but treats a request without one as anonymous.
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential={KEY}/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let resp = read_message(&mut BufReader::new(s), method == "HEAD", true)?
        .ok_or_else(|| std::io::Error::other("no response"))?;
    let status = resp
        .head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("bad status line"))?;
    Ok((status, resp.head, resp.body))
}

/// An HTTP message: its head (request or status line and headers, without the blank
/// line) and its body (de-chunked).
struct Message {
    head: String,
    body: Vec<u8>,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    /// The head with `name` removed (and `set`, when given, added).
    fn with_header(&self, name: &str, set: Option<&str>) -> String {
        let mut lines: Vec<String> = self
            .head
            .lines()
            .filter(|l| {
                l.split_once(':')
                    .is_none_or(|(k, _)| !k.trim().eq_ignore_ascii_case(name))
            })
            .map(str::to_owned)
            .collect();
        if let Some(v) = set {
            lines.push(format!("{name}: {v}"));
        }
        lines.join("\r\n")
    }
}

/// Reads one message; `None` at a clean end of stream. `no_body` for the response to a
/// HEAD; `to_eof` when a response without a length ends with the connection.
fn read_message(
    r: &mut impl BufRead,
    no_body: bool,
    to_eof: bool,
) -> std::io::Result<Option<Message>> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err(std::io::Error::other("truncated head"))
            };
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut m = Message {
        head: head.trim_end().replace("\r\n", "\n").replace('\n', "\r\n"),
        body: Vec::new(),
    };
    let status_no_body = m
        .head
        .split_whitespace()
        .nth(1)
        .is_some_and(|c| c == "204" || c == "304");
    if no_body || status_no_body {
        return Ok(Some(m));
    }
    if m.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        loop {
            let mut size = String::new();
            r.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk)?;
            if n == 0 {
                break;
            }
            m.body.extend_from_slice(&chunk[..n]);
        }
    } else if let Some(len) = m
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        m.body = vec![0; len];
        r.read_exact(&mut m.body)?;
    } else if to_eof {
        r.read_to_end(&mut m.body)?;
    }
    Ok(Some(m))
}

/// What the proxy does to the traffic.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Nothing: passes everything through (and counts requests).
    None,
    /// Flips a byte in the body of every archive object a GET returns (`*.json.gz`,
    /// sessions; `*.tar.gz`, notifications).
    CorruptGet,
    /// Hands back another ETag with every object a GET returns.
    WrongEtagOnGet,
    /// After this many requests, calls the stop hook (the test stops the server) and
    /// answers no more: every later connection is closed at once.
    DieAfter(usize),
    /// Waits this long before forwarding each request.
    Delay(Duration),
    /// Another writer: before forwarding the PUT of an archive object, puts other
    /// bytes at the same key directly, so the client's put meets an object that was not
    /// there at its HEAD.
    RaceOnPut,
    /// A server without conditional puts: answers every PUT that carries `If-None-Match`
    /// with 501 Not Implemented (as some S3-compatible stores do), without forwarding it.
    RefuseIfNoneMatch,
    /// Calls the hook before forwarding the first GET of an archive object (the test
    /// changes the session then, so that the client takes its object back); with
    /// `replace`, another writer in the instant between the client's check and its
    /// delete: before forwarding the DELETE of an archive object, puts other bytes
    /// ([`RACING_BYTES`]) at the same key directly. An unconditional DELETE then removes
    /// the other writer's object; a conditional one (`If-Match` on the ETag the client
    /// wrote) is refused by the store.
    TakeBackRace {
        /// Whether another writer replaces the object just before the DELETE.
        replace: bool,
    },
}

/// What [`Fault::RaceOnPut`]'s other writer puts.
pub const RACING_BYTES: &[u8] = b"written by another host";

/// An HTTP proxy on 127.0.0.1 in front of a server, with a [`Fault`].
pub struct FaultProxy {
    port: u16,
    requests: Arc<AtomicUsize>,
    /// Each request's method and target, in the order received.
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    /// Starts a proxy to `upstream` (a port of 127.0.0.1). `on_die` runs once when a
    /// [`Fault::DieAfter`] proxy dies, or at a [`Fault::TakeBackRace`] proxy's first GET
    /// of an archive object.
    pub fn start(
        upstream: u16,
        fault: Fault,
        on_die: impl FnOnce() + Send + 'static,
    ) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let requests = Arc::new(AtomicUsize::new(0));
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let on_die: Hook = Arc::new(Mutex::new(Some(Box::new(on_die))));
        let (req, lg, st) = (requests.clone(), log.clone(), stop.clone());
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        std::thread::spawn(move || {
            // Polls, so that a stopped proxy closes its port: later connections are
            // refused, as by a server that went away.
            while !st.load(Ordering::SeqCst) {
                let conn = match listener.accept() {
                    Ok((c, _)) => c,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Err(_) => continue,
                };
                let _ = conn.set_nonblocking(false);
                let (req, lg, st, fault, on_die) = (
                    req.clone(),
                    lg.clone(),
                    st.clone(),
                    fault.clone(),
                    on_die.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &fault, (&req, &lg), &st, &on_die);
                });
            }
        });
        FaultProxy {
            port,
            requests,
            log,
            stop,
        }
    }

    /// Each request so far as `{METHOD} {target}`, in the order received.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    /// The requests so far that may change the store: all but `GET` and `HEAD`.
    pub fn writes(&self) -> Vec<String> {
        self.log()
            .into_iter()
            .filter(|l| !(l.starts_with("GET ") || l.starts_with("HEAD ")))
            .collect()
    }

    /// The proxy's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Requests forwarded (or refused) so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

type Hook = Arc<Mutex<Option<Box<dyn FnOnce() + Send>>>>;

fn serve(
    client: TcpStream,
    upstream: u16,
    fault: &Fault,
    (requests, log): (&AtomicUsize, &Mutex<Vec<String>>),
    stop: &AtomicBool,
    on_die: &Hook,
) -> std::io::Result<()> {
    let mut out = client.try_clone()?;
    let mut r = BufReader::new(client);
    while let Some(req) = read_message(&mut r, false, false)? {
        let n = requests.fetch_add(1, Ordering::SeqCst) + 1;
        log.lock().expect("lock").push(
            req.head
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" "),
        );
        if stop.load(Ordering::SeqCst) {
            return out.shutdown(Shutdown::Both);
        }
        if let Fault::DieAfter(limit) = fault
            && n > *limit
        {
            stop.store(true, Ordering::SeqCst);
            if let Some(hook) = on_die.lock().expect("lock").take() {
                hook();
            }
            return out.shutdown(Shutdown::Both);
        }
        if let Fault::Delay(d) = fault {
            std::thread::sleep(*d);
        }
        let method = req.head.split_whitespace().next().unwrap_or("").to_owned();
        let target = req.head.split_whitespace().nth(1).unwrap_or("").to_owned();
        let object = target
            .split('?')
            .next()
            .is_some_and(|p| p.ends_with(".json.gz") || p.ends_with(".tar.gz"));
        if matches!(fault, Fault::RefuseIfNoneMatch)
            && method == "PUT"
            && req.header("if-none-match").is_some()
        {
            let body = b"<Error><Code>NotImplemented</Code></Error>";
            write!(
                out,
                "HTTP/1.1 501 Not Implemented\r\ncontent-type: application/xml\r\ncontent-length: {}\r\nconnection: keep-alive\r\n\r\n",
                body.len()
            )?;
            out.write_all(body)?;
            out.flush()?;
            continue;
        }
        if matches!(fault, Fault::RaceOnPut) && method == "PUT" && object {
            let path = target.split('?').next().unwrap_or_default();
            http(upstream, "PUT", path, RACING_BYTES)?;
        }
        if let Fault::TakeBackRace { replace } = fault {
            if method == "GET"
                && object
                && let Some(hook) = on_die.lock().expect("lock").take()
            {
                hook();
            }
            if *replace && method == "DELETE" && object {
                let path = target.split('?').next().unwrap_or_default();
                http(upstream, "PUT", path, RACING_BYTES)?;
            }
        }
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        let head = Message {
            head: req.with_header("connection", Some("close")),
            body: Vec::new(),
        }
        .with_header("content-length", Some(&req.body.len().to_string()));
        let head = Message {
            head,
            body: Vec::new(),
        }
        .with_header("transfer-encoding", None);
        up.write_all(head.as_bytes())?;
        up.write_all(b"\r\n\r\n")?;
        up.write_all(&req.body)?;
        let mut resp = read_message(&mut BufReader::new(up), method == "HEAD", true)?
            .ok_or_else(|| std::io::Error::other("no response upstream"))?;
        let object_get =
            method == "GET" && object && resp.head.split_whitespace().nth(1) == Some("200");
        if object_get {
            match fault {
                Fault::CorruptGet if !resp.body.is_empty() => {
                    let mid = resp.body.len() / 2;
                    resp.body[mid] ^= 0xff;
                }
                Fault::WrongEtagOnGet => {
                    resp.head =
                        resp.with_header("etag", Some("\"0123456789abcdef0123456789abcdef\""));
                }
                _ => {}
            }
        }
        if let Some(rest) = resp.head.strip_prefix("HTTP/1.0 ") {
            resp.head = format!("HTTP/1.1 {rest}");
        }
        let mut head = resp.with_header("transfer-encoding", None);
        head = Message {
            head,
            body: Vec::new(),
        }
        .with_header("connection", Some("keep-alive"));
        if method != "HEAD" {
            head = Message {
                head,
                body: Vec::new(),
            }
            .with_header("content-length", Some(&resp.body.len().to_string()));
        }
        out.write_all(head.as_bytes())?;
        out.write_all(b"\r\n\r\n")?;
        if method != "HEAD" {
            out.write_all(&resp.body)?;
        }
        out.flush()?;
    }
    Ok(())
}
