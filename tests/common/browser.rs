//! Headless Chromium driven over WebDriver (chromedriver), for the tests
//! of pages people open in a browser: the approval page
//! (`tests/browser.rs`) and the web console (`tests/console.rs`). Included
//! by those two with `#[path]`, so other test binaries do not build it.
//!
//! Needs Debian's `chromium` and `chromium-driver`. Without them the tests
//! say so and pass, unless `INFRAVEIL_REQUIRE_BROWSER=1` (CI sets it).
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};

use super::common::scratch_dir;

/// chromedriver and a browser session; both go away on drop.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
    _profile: std::path::PathBuf,
}

fn find(names: &[&str]) -> Option<std::path::PathBuf> {
    names
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

impl Browser {
    /// `None` (with a note) when Chromium is not installed and not required.
    pub async fn start() -> Option<Browser> {
        let chromium = find(&["/usr/bin/chromium", "/usr/bin/chromium-browser"]);
        let driver_bin = find(&["/usr/bin/chromedriver"]);
        let (Some(chromium), Some(driver_bin)) = (chromium, driver_bin) else {
            assert!(
                std::env::var_os("INFRAVEIL_REQUIRE_BROWSER").is_none(),
                "INFRAVEIL_REQUIRE_BROWSER is set but chromium / chromedriver are not installed"
            );
            eprintln!("skipping: install chromium and chromium-driver to run the browser tests");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start chromedriver");
        let profile = scratch_dir().join("chromium-profile");
        let caps: serde_json::Map<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium,
                    // As root (CI) Chromium needs --no-sandbox; the rest keep
                    // it from calling out to a network this machine lacks.
                    "args": [
                        "--headless=new", "--no-sandbox", "--disable-gpu",
                        "--disable-dev-shm-usage", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update",
                        "--disable-sync", "--disable-quic",
                        format!("--user-data-dir={}", profile.display()),
                    ]
                }
            }))
            .unwrap();
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&format!("http://127.0.0.1:{port}"))
                .await
            {
                Ok(client) => {
                    return Some(Browser {
                        client,
                        driver,
                        _profile: profile,
                    });
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver never answered: {last:?}");
    }

    /// Open `url`, sign in as `approver` with `secret`, press `button`
    /// ("approve" or "deny") after typing `note`; returns the page's
    /// heading and text.
    pub async fn decide(
        &self,
        url: &str,
        approver: &str,
        secret: &str,
        note: &str,
        button: &str,
    ) -> (String, String) {
        let c = &self.client;
        c.goto(url).await.unwrap();
        let typed = |name: &'static str, text: String| async move {
            c.find(Locator::Css(&format!("input[name={name}]")))
                .await
                .unwrap_or_else(|e| panic!("input {name}: {e}"))
                .send_keys(&text)
                .await
                .unwrap();
        };
        typed("approver", approver.to_owned()).await;
        typed("secret", secret.to_owned()).await;
        typed("note", note.to_owned()).await;
        c.find(Locator::Css(&format!("button[value={button}]")))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.answer().await
    }

    /// The page a form submission led to: decision pages carry no form.
    pub async fn answer(&self) -> (String, String) {
        for _ in 0..100 {
            if self
                .client
                .find_all(Locator::Css("form"))
                .await
                .is_ok_and(|f| f.is_empty())
            {
                return self.page().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the form submission never led anywhere");
    }

    /// The current page's heading and body text, once it has loaded.
    pub async fn page(&self) -> (String, String) {
        let c = &self.client;
        let h1 = c
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css("h1"))
            .await
            .unwrap();
        let heading = h1.text().await.unwrap();
        let body = c
            .find(Locator::Css("body"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (heading, body)
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}

impl Browser {
    /// Write a PNG of the current page to `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) -> std::path::PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The viewport's width and height, in CSS pixels.
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("set the window size");
    }

    /// Click the element `css` matches.
    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    /// Type `text` into the element `css` matches.
    pub async fn type_into(&self, css: &str, text: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .send_keys(text)
            .await
            .unwrap();
    }

    /// Run `script` (a function body that `return`s) in the page.
    pub async fn eval(&self, script: &str) -> serde_json::Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }
}

/// Where screenshots go: under the cargo target directory.
pub fn screenshot_dir() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("console-screenshots")
}

/// A page an attacker controls, served from `host`: a form that posts a
/// decision to the approval page with every field right, as if the link,
/// the CSRF token and even the secret had leaked.
pub async fn attacker_page(host: &str, action: &str, fields: &[(&str, String)]) -> String {
    let inputs: String = fields
        .iter()
        .map(|(k, v)| format!("<input type=\"hidden\" name=\"{k}\" value=\"{v}\">"))
        .collect();
    let html = format!(
        "<!doctype html><html><body><h1>Win a prize</h1><form method=\"post\" action=\"{action}\">{inputs}\
         <button name=\"decision\" value=\"approve\">Claim</button></form></body></html>"
    );
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let html = html.clone();
            async move { axum::response::Html(html) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{host}:{port}/")
}
