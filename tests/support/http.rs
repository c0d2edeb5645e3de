//! Calling the HTTP API in-process, as a client would.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

use crm::app::App;
use crm::http::{router, AppState};

/// The API of one app.
#[derive(Debug, Clone)]
pub struct Api {
    pub router: Router,
    pub app: App,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl Reply {
    /// The `id` of the resource answered.
    #[track_caller]
    pub fn id(&self) -> String {
        self.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no id in {}", self.body))
            .to_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a problem+json answer of this status and type.
    #[track_caller]
    pub fn problem(&self, status: u16, kind: &str) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{}",
            self.body
        );
        assert_eq!(self.body["type"], kind, "{}", self.body);
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].is_string() && self.body["detail"].is_string());
        self
    }
}

/// A fresh app on `db` with one site of every role (emails `@demo.example`), and its API.
pub async fn demo(db: &crm_events::testing::TestDatabase) -> (Api, super::Site) {
    let app = super::app(db).await;
    let s = super::site(&app, "Demo Realty", "demo.example").await;
    (Api::new(app), s)
}

impl Api {
    pub fn new(app: App) -> Self {
        Self {
            router: router(AppState { app: app.clone() }),
            app,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let body = match body {
            Some(json) => {
                request = request.header("content-type", "application/json");
                Body::from(json.to_string())
            }
            None => Body::empty(),
        };
        self.send(request.body(body).unwrap()).await
    }

    pub async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn get(&self, token: &str, path: &str) -> Reply {
        self.call(Method::GET, path, Some(token), None, &[]).await
    }

    pub async fn post(&self, token: &str, path: &str, body: Value) -> Reply {
        self.call(Method::POST, path, Some(token), Some(&body), &[])
            .await
    }

    pub async fn patch(
        &self,
        token: &str,
        path: &str,
        body: Value,
        if_match: Option<&str>,
    ) -> Reply {
        let headers: Vec<(&str, &str)> = if_match.map(|v| ("if-match", v)).into_iter().collect();
        self.call(Method::PATCH, path, Some(token), Some(&body), &headers)
            .await
    }

    pub async fn delete(&self, token: &str, path: &str) -> Reply {
        self.call(Method::DELETE, path, Some(token), None, &[])
            .await
    }

    /// Signs in; returns the token.
    pub async fn login(&self, email: &str) -> String {
        let reply = self
            .call(
                Method::POST,
                "/api/login",
                None,
                Some(&serde_json::json!({"email": email, "password": super::PASSWORD})),
                &[],
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        reply.body["token"].as_str().unwrap().to_owned()
    }
}
