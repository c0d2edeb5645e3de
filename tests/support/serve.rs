//! The `crm` binary serving HTTP, as an operator starts it, and plain HTTP/1.1 to it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crm_events::testing::TestDatabase;

/// One HTTP/1.1 request over a plain socket; returns the status and the body.
pub fn http(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    request(addr, method, path, None, body).unwrap()
}

/// One HTTP/1.1 request, signed in with `token` when given; an error when the
/// server cannot be reached or hangs up before answering.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or("");
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    // The head, then as many bytes as it announces (or all until the server closes:
    // not every server closes when asked to).
    let no_answer = || std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    let head_end = loop {
        if let Some(at) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut buffer)?;
        if n == 0 {
            return Err(no_answer());
        }
        answer.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(no_answer)?;
    let length = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    let mut body = answer.split_off(head_end);
    match length {
        Some(length) => {
            while body.len() < length {
                let n = stream.read(&mut buffer)?;
                if n == 0 {
                    return Err(no_answer());
                }
                body.extend_from_slice(&buffer[..n]);
            }
        }
        None => {
            stream.read_to_end(&mut body)?;
        }
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Signs in to the demo site (password `demo-password`); returns the token.
#[track_caller]
pub fn login(addr: &str, email: &str) -> String {
    let body = serde_json::json!({"email": email, "password": "demo-password"}).to_string();
    let (status, answer) = request(addr, "POST", "/api/login", None, Some(&body)).unwrap();
    assert_eq!(status, 200, "{answer}");
    serde_json::from_str::<serde_json::Value>(&answer).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A running `crm serve`, stopped (and reaped) however the test ends.
pub struct Server(pub std::process::Child);

impl Server {
    /// Kills it outright (SIGKILL), as a crash or power cut would stop it.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// Sends SIGTERM and waits; true when it exited cleanly.
    pub fn stop(&mut self) -> bool {
        let pid = self.0.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        sent && self.0.wait().is_ok_and(|status| status.success())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

pub fn start_serve(db: &TestDatabase) -> (Server, String, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm"));
    command.env("CRM_MASTER_KEY_FILE", &db.master_key_file);
    start_serve_with(command, &db.url)
}

/// `crm serve --demo` on the database at `url` (with the master key `--demo`
/// keeps beside it): the server, its address and what it printed before it
/// listened.
pub fn start_serve_at(url: &str) -> (Server, String, Vec<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_crm"));
    command.env_remove("CRM_MASTER_KEY_FILE");
    start_serve_with(command, url)
}

fn start_serve_with(mut command: Command, url: &str) -> (Server, String, Vec<String>) {
    let mut server = Server(
        command
            .args([
                "serve",
                "--demo",
                "--bind",
                "127.0.0.1:0",
                "--database-url",
                url,
            ])
            // --demo's own key and digests for PostgreSQL go under the data
            // directory: a scratch one, not the user's.
            .env("XDG_DATA_HOME", std::env::temp_dir().join("crm-test-data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = Vec::new();
    let mut reader = BufReader::new(server.0.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap_or(0) > 0,
            "crm serve ended early: {lines:?}"
        );
        if let Some(addr) = line.trim().strip_prefix("crm listening on http://") {
            let addr = addr.to_owned();
            std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
            return (server, addr, lines);
        }
        lines.push(line);
    }
}
