//! The admin API client: one place that turns transport failures, a wrong
//! token and the daemon's `{"error": ...}` answers into messages a person
//! can act on.

use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub struct Api {
    base: String,
    token: Token,
    http: Client,
    /// For exports and verification, which take as long as the log is big.
    long: Client,
}

/// The admin token as given. An empty one (`VEIL_ADMIN_TOKEN=` left over in
/// a shell, `--token ''`) is not sent: the daemon would only answer 401,
/// which reads as "the token is wrong" when it is missing.
enum Token {
    Missing,
    Empty,
    Given(String),
}

/// Where the token comes from, for the messages that ask for it.
const TOKEN_HELP: &str = "export VEIL_ADMIN_TOKEN=... or pass --token (`infraveil demo` prints it and writes it to $VEIL_DATA_DIR/env; the docker setup keeps it in docker/secrets/admin-token)";

impl Api {
    pub fn new(base: Option<String>, token: Option<String>) -> anyhow::Result<Api> {
        let base = base
            .map(|b| b.trim().trim_end_matches('/').to_owned())
            .filter(|b| !b.is_empty())
            .context("no admin API address: set --admin-url or VEIL_ADMIN_URL (`infraveil demo` prints it)")?;
        let token = match token {
            None => Token::Missing,
            Some(t) if t.trim().is_empty() => Token::Empty,
            Some(t) => Token::Given(t.trim().to_owned()),
        };
        let http = Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        let long = Client::builder()
            .timeout(None)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Api {
            base,
            token,
            http,
            long,
        })
    }

    /// [`Api::get`] without the overall timeout.
    pub fn get_long<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let req = self.authed(self.long.get(self.url(path)))?;
        decode(self.send(req)?)
    }

    /// A GET whose body the caller reads as it arrives.
    pub fn get_stream(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Response> {
        let url = url::Url::parse_with_params(&self.url(path), query)
            .with_context(|| format!("bad admin API address {}", self.base))?;
        let req = self.authed(self.long.get(url))?;
        check(self.send(req)?)
    }

    /// `GET /healthz`, which needs no token.
    pub fn healthz(&self) -> anyhow::Result<()> {
        let resp = self.send(self.http.get(self.url("/healthz")))?;
        if resp.status() != StatusCode::OK {
            bail!("admin API at {} answered {}", self.base, resp.status());
        }
        Ok(())
    }

    /// Why no token will be sent, if none will.
    pub fn token_problem(&self) -> Option<String> {
        match &self.token {
            Token::Given(_) => None,
            Token::Missing => Some(format!("the admin token is not set: {TOKEN_HELP}")),
            Token::Empty => Some(format!(
                "the admin token is set but empty (VEIL_ADMIN_TOKEN= or --token ''): {TOKEN_HELP}"
            )),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let req = self.authed(self.http.get(self.url(path)))?;
        decode(self.send(req)?)
    }

    pub fn get_text(&self, path: &str) -> anyhow::Result<String> {
        let req = self.authed(self.http.get(self.url(path)))?;
        let resp = check(self.send(req)?)?;
        Ok(resp.text()?)
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let req = self.authed(self.http.post(self.url(path)).json(body))?;
        decode(self.send(req)?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authed(&self, req: RequestBuilder) -> anyhow::Result<RequestBuilder> {
        if let Token::Given(token) = &self.token {
            return Ok(req.bearer_auth(token));
        }
        bail!("{}", self.token_problem().unwrap_or_default())
    }

    fn send(&self, req: RequestBuilder) -> anyhow::Result<Response> {
        req.send().map_err(|e| {
            let why = if e.is_timeout() {
                "timed out".to_owned()
            } else if e.is_connect() {
                "connection refused or unreachable".to_owned()
            } else {
                e.to_string()
            };
            anyhow!(
                "cannot reach the infraveil admin API at {} ({why}); is the daemon running, and is --admin-url / VEIL_ADMIN_URL right?",
                self.base
            )
        })
    }
}

fn check(resp: Response) -> anyhow::Result<Response> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    if status == StatusCode::UNAUTHORIZED {
        bail!("the admin token was rejected; check --token / VEIL_ADMIN_TOKEN");
    }
    let text = resp.text().unwrap_or_default();
    let message = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or(text);
    bail!("{message} (HTTP {})", status.as_u16())
}

fn decode<T: DeserializeOwned>(resp: Response) -> anyhow::Result<T> {
    let resp = check(resp)?;
    resp.json()
        .context("the admin API answered something veilctl does not understand (version mismatch?)")
}
