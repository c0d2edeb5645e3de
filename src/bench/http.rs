//! The Lead Manager read over real HTTP on loopback, by a minimal HTTP/1.1 client of
//! its own (one GET per connection), so what is measured is the server.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crm::app::{App, AppError};

use super::{history::BenchSite, percentiles};

/// `GET /api/leads` from 16 concurrent HTTP clients against a real server on
/// loopback: p99 in ms.
pub(super) async fn http_lead_pages(app: &App, sites: &[BenchSite]) -> Result<f64, AppError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io)?;
    let addr = listener.local_addr().map_err(io)?;
    let router = crm::http::router(crm::http::AppState { app: app.clone() });
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let tokens: Vec<String> = sites
        .iter()
        .flat_map(|s| s.agents.iter().map(|(_, t)| t.clone()))
        .collect();
    let clients = (0..16).map(|c| {
        let token = tokens[c % tokens.len()].clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            for i in 0..40 {
                let sort = ["-updated_at", "name", "next_task_due_at"][i % 3];
                let started = Instant::now();
                get(addr, &format!("/api/leads?sort={sort}&limit=50"), &token).await?;
                samples.push(started.elapsed().as_secs_f64() * 1_000.0);
            }
            Ok::<_, std::io::Error>(samples)
        })
    });
    let mut samples = Vec::new();
    for client in futures_util::future::join_all(clients).await {
        samples.extend(
            client
                .map_err(|e| AppError::Conflict(e.to_string()))?
                .map_err(io)?,
        );
    }
    server.abort();
    Ok(percentiles(samples).1)
}

fn io(error: std::io::Error) -> AppError {
    AppError::Store(crm_events::StoreError::Unavailable(sqlx::Error::Io(error)))
}

/// One HTTP/1.1 GET; fails unless the answer is 200.
async fn get(addr: std::net::SocketAddr, path: &str, token: &str) -> Result<(), std::io::Error> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await?;
    if answer.starts_with(b"HTTP/1.1 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned(),
        ))
    }
}
