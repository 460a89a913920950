//! The firewall's self-service admin API (`/v1/self`), signed in with the
//! same identity and grant secret the database connection uses: for the
//! answers only the firewall has (risk check, proposals, request status,
//! who am I). No admin token is ever used or needed.

use serde_json::{Value, json};

use super::failure::Failure;

pub struct SelfApi {
    base: String,
    identity: String,
    secret: String,
    database: String,
    http: reqwest::Client,
}

impl SelfApi {
    pub fn new(
        base: &str,
        identity: &str,
        secret: &str,
        database: &str,
    ) -> Result<SelfApi, String> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(SelfApi {
            base: base.trim_end_matches('/').to_owned(),
            identity: identity.to_owned(),
            secret: secret.to_owned(),
            database: database.to_owned(),
            http,
        })
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<Value, Failure> {
        let resp = req
            .basic_auth(&self.identity, Some(&self.secret))
            .send()
            .await
            .map_err(|e| {
                Failure::new(
                    "unavailable",
                    format!("the firewall's admin API did not answer: {e}"),
                )
            })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let message = body["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("the admin API answered {status}"));
        let kind = match status.as_u16() {
            401 | 403 => "access_ended",
            404 => "not_found",
            400 => "bad_request",
            _ => "unavailable",
        };
        Err(Failure::new(kind, message))
    }

    pub async fn check(&self, sql: &str) -> Result<Value, Failure> {
        let body = json!({ "sql": sql, "database": self.database });
        self.send(
            self.http
                .post(format!("{}/v1/self/check", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn propose(&self, sql: &str, reason: &str) -> Result<Value, Failure> {
        let body = json!({ "sql": sql, "reason": reason, "database": self.database });
        self.send(
            self.http
                .post(format!("{}/v1/self/proposals", self.base))
                .json(&body),
        )
        .await
    }

    pub async fn status(&self, id: &str) -> Result<Value, Failure> {
        let url = format!("{}/v1/self/approvals/{}", self.base, urlencode(id));
        self.send(self.http.get(url)).await
    }

    pub async fn whoami(&self) -> Result<Value, Failure> {
        let url = format!(
            "{}/v1/self/whoami?database={}",
            self.base,
            urlencode(&self.database)
        );
        self.send(self.http.get(url)).await
    }
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
