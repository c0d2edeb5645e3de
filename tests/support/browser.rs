//! Headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`): just the calls an end-to-end test needs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use super::serve::request;

/// The key WebDriver answers an element's id under.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A browser session; the driver is stopped when it is dropped.
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

/// An element of the page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// A headless Chromium at 1280x800; `None` (and why) when it is not installed.
    pub fn start() -> Result<Self, String> {
        let (chromium, driver) = ("/usr/bin/chromium", "/usr/bin/chromedriver");
        if !Path::new(chromium).exists() || !Path::new(driver).exists() {
            return Err(format!(
                "{chromium} or {driver} is missing (apt-get install chromium chromium-driver)"
            ));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut browser = Self {
            driver: child,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
        };
        let started = Instant::now();
        while request(&browser.addr, "GET", "/status", None, None).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                return Err("chromedriver did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let created = browser.call(
            "POST",
            "/session",
            &json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--window-size=1280,800"],
                },
            }}}),
        );
        browser.session = created["sessionId"]
            .as_str()
            .ok_or_else(|| format!("no session: {created}"))?
            .to_owned();
        Ok(browser)
    }

    #[track_caller]
    fn call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|answer| panic!("{method} {path}: {answer}"))
    }

    /// The answer's value, or the whole answer when the driver refused.
    fn try_call(&self, method: &str, path: &str, body: &Value) -> Result<Value, Value> {
        let body = (method == "POST").then(|| body.to_string());
        let (status, answer) = request(&self.addr, method, path, None, body.as_deref())
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let answer: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        if status == 200 {
            Ok(answer["value"].clone())
        } else {
            Err(answer)
        }
    }

    fn session_call(&self, method: &str, path: &str, body: &Value) -> Value {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) {
        self.session_call("POST", "/url", &json!({"url": url}));
    }

    /// The first element matching `css`, waiting up to ten seconds for it to be
    /// there and displayed.
    #[track_caller]
    pub fn find(&self, css: &str) -> Element {
        let started = Instant::now();
        loop {
            let found = self.session_call(
                "POST",
                "/elements",
                &json!({"using": "css selector", "value": css}),
            );
            for element in found.as_array().into_iter().flatten() {
                let element = Element(element[ELEMENT].as_str().unwrap().to_owned());
                // An element the page has just replaced is "stale": look again.
                let path = format!("/session/{}/element/{}/displayed", self.session, element.0);
                if self.try_call("GET", &path, &Value::Null) == Ok(json!(true)) {
                    return element;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "nothing displayed matches {css:?}; the page says: {}",
                self.text_of("body")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (up to ten seconds) until the element matching `css` shows `text`.
    #[track_caller]
    pub fn wait_for_text(&self, css: &str, text: &str) -> String {
        self.wait_for_text_within(css, text, Duration::from_secs(10))
    }

    /// Waits up to `limit` until the element matching `css` shows `text`.
    #[track_caller]
    pub fn wait_for_text_within(&self, css: &str, text: &str, limit: Duration) -> String {
        let started = Instant::now();
        loop {
            let shown = self.text_of(css);
            if shown.contains(text) {
                return shown;
            }
            assert!(
                started.elapsed() < limit,
                "{css:?} never showed {text:?}; it shows {shown:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `script` in the page (a function body; `arguments` are `args`) and
    /// answers what it returns.
    pub fn execute(&self, script: &str, args: Value) -> Value {
        self.session_call(
            "POST",
            "/execute/sync",
            &json!({"script": script, "args": args}),
        )
    }

    /// The serious and critical accessibility violations axe-core finds in the
    /// page as it is now, each as "rule: what it is about (where)". `axe` is the
    /// source of axe.min.js.
    pub fn accessibility_violations(&self, axe: &str) -> Vec<String> {
        self.execute(axe, json!([]));
        let found = self.session_call(
            "POST",
            "/execute/async",
            &json!({"script": "const done = arguments[arguments.length - 1];
                axe.run(document, {resultTypes: ['violations']}).then((r) => done(
                  r.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical')
                    .map((v) => `${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3)
                      .map((n) => n.target.join(' ')).join(', ')}`)),
                  (e) => done([`axe failed: ${e}`]));", "args": []}),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The visible text of the first element matching `css` ("" when there is none).
    pub fn text_of(&self, css: &str) -> String {
        let found = self.session_call(
            "POST",
            "/elements",
            &json!({"using": "css selector", "value": css}),
        );
        match found.as_array().and_then(|all| all.first()) {
            Some(element) => {
                let path = format!(
                    "/session/{}/element/{}/text",
                    self.session,
                    element[ELEMENT].as_str().unwrap()
                );
                // Replaced meanwhile: as good as not there yet.
                self.try_call("GET", &path, &Value::Null)
                    .ok()
                    .and_then(|text| text.as_str().map(str::to_owned))
                    .unwrap_or_default()
            }
            None => String::new(),
        }
    }

    fn element_call(&self, method: &str, element: &Element, path: &str, body: &Value) -> Value {
        self.session_call(method, &format!("/element/{}{path}", element.0), body)
    }

    /// Runs `act` on the element matching `css`, finding it again while the page
    /// replaces it under our feet (a "stale element").
    #[track_caller]
    fn on(&self, css: &str, method: &str, path: &str, body: &Value) -> Value {
        let started = Instant::now();
        loop {
            let element = self.find(css);
            let at = format!("/session/{}/element/{}{path}", self.session, element.0);
            match self.try_call(method, &at, body) {
                Ok(value) => return value,
                // Replaced by the page drawn again, or not yet usable while the
                // next page loads (the old one is dimmed and takes no input):
                // found again, as a person would wait for it.
                Err(answer)
                    if [
                        "stale element reference",
                        "element not interactable",
                        "element click intercepted",
                    ]
                    .contains(&answer["value"]["error"].as_str().unwrap_or_default())
                        && started.elapsed() < Duration::from_secs(10) =>
                {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(answer) => panic!("{method} {path} on {css:?}: {answer}"),
            }
        }
    }

    /// Clicks the element matching `css`.
    #[track_caller]
    pub fn click(&self, css: &str) {
        self.on(css, "POST", "/click", &json!({}));
    }

    /// Types `text` into the element matching `css`.
    #[track_caller]
    pub fn type_into(&self, css: &str, text: &str) {
        self.on(css, "POST", "/value", &json!({"text": text}));
    }

    /// Empties a text field.
    pub fn clear(&self, css: &str) {
        self.on(css, "POST", "/clear", &json!({}));
    }

    /// The value of a property (an input's `value`, ...) of the element matching `css`.
    #[track_caller]
    pub fn property(&self, css: &str, name: &str) -> Value {
        self.on(css, "GET", &format!("/property/{name}"), &Value::Null)
    }

    pub fn resize(&self, width: u32, height: u32) {
        self.session_call(
            "POST",
            "/window/rect",
            &json!({"width": width, "height": height}),
        );
    }

    /// Saves a PNG of the viewport.
    pub fn screenshot(&self, path: &Path) {
        let png = self.session_call("GET", "/screenshot", &Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(
                &self.addr,
                "DELETE",
                &format!("/session/{}", self.session),
                None,
                None,
            );
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
