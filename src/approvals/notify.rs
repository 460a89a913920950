//! Telling approvers: a Slack-compatible webhook message (`text` plus
//! `blocks` with the request and Approve / Deny link buttons), POSTed with
//! timeouts, retries with doubling backoff and an optional HMAC signature;
//! or, without a webhook, the log (and, in the demo, the terminal).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{ApprovalView, Status};
use crate::config::{ConfigError, WebhookConfig};

/// A function that shows approval messages (the demo prints them).
pub type Sink = Arc<dyn Fn(&str) + Send + Sync>;

/// Where approval messages go.
#[derive(Clone)]
pub enum Notifier {
    /// Only the log; decide with `veilctl approvals`.
    Log,
    /// Hand the rendered text to this function (the demo prints it).
    Sink(Sink),
    Webhook(Arc<Webhook>),
}

pub struct Webhook {
    client: reqwest::Client,
    url: String,
    signing: Option<ring::hmac::Key>,
    retries: u32,
}

impl Webhook {
    pub fn from_config(c: &WebhookConfig) -> Result<Webhook, ConfigError> {
        let url = c.url.read("approvals.webhook.url")?;
        let signing = c
            .signing_secret
            .as_ref()
            .map(|s| s.read("approvals.webhook.signing_secret"))
            .transpose()?
            .map(|s| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, s.as_bytes()));
        // reqwest's rustls takes the process-wide provider; ours is ring.
        crate::net::tls::install_default_provider();
        let client = reqwest::Client::builder()
            .timeout(c.timeout)
            .connect_timeout(c.timeout)
            .build()
            .map_err(|e| ConfigError::Invalid(format!("approvals.webhook: {e}")))?;
        Ok(Webhook {
            client,
            url,
            signing,
            retries: c.retries,
        })
    }

    /// POST `body`, retrying on network errors, 429 and 5xx. Returns how it
    /// went, for the request's record.
    pub async fn post(&self, body: &Value) -> Result<String, String> {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let mut backoff = Duration::from_millis(500);
        let mut last = String::new();
        for attempt in 1..=self.retries + 1 {
            let mut req = self
                .client
                .post(&self.url)
                .header("content-type", "application/json")
                .body(bytes.clone());
            if let Some(key) = &self.signing {
                let (ts, sig) = sign(key, &bytes);
                req = req
                    .header("x-infraveil-timestamp", ts)
                    .header("x-infraveil-signature", sig);
            }
            match req.send().await {
                Ok(r) if r.status().is_success() => {
                    return Ok(format!("delivered (attempt {attempt})"));
                }
                Ok(r) => {
                    last = format!("webhook answered {}", r.status());
                    let s = r.status();
                    if s.is_client_error() && s != reqwest::StatusCode::TOO_MANY_REQUESTS {
                        break;
                    }
                }
                // Never the URL: it is a secret.
                Err(e) if e.is_timeout() => last = "webhook timed out".to_owned(),
                Err(e) if e.is_connect() => last = "webhook unreachable".to_owned(),
                Err(_) => last = "webhook request failed".to_owned(),
            }
            if attempt <= self.retries {
                tracing::warn!(attempt, error = %last, "approval webhook failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(last)
    }
}

/// `X-Infraveil-Timestamp` and `X-Infraveil-Signature: v1=<hex>` where the
/// signature is HMAC-SHA256 over `"{timestamp}.{body}"`: receivers check it
/// and reject stale timestamps, so a captured message cannot be replayed.
pub fn sign(key: &ring::hmac::Key, body: &[u8]) -> (String, String) {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        .to_string();
    let mut msg = ts.clone().into_bytes();
    msg.push(b'.');
    msg.extend_from_slice(body);
    let tag = ring::hmac::sign(key, &msg);
    (ts, format!("v1={}", hex::encode(tag.as_ref())))
}

/// Longest statement text put in a message; the page shows all of it.
const MAX_STATEMENT_IN_MESSAGE: usize = 2_000;

fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parameter values as approvers see them: text quoted, binary in hex,
/// NULL as NULL; a value that looks like a secret, or every value of a
/// statement that builds a connection string, as `'***'`.
pub fn show_values(sql: &str, types: &[u32], values: super::Values<'_>) -> Vec<String> {
    const MAX_SHOWN: usize = 200;
    let all_secret = crate::classify::redact(sql).as_ref() != sql;
    let typed = |i: usize, shown: String| match types.get(i) {
        Some(&t) if t != 0 => format!("{shown} (type oid {t})"),
        _ => shown,
    };
    values
        .iter()
        .enumerate()
        .map(|(i, (binary, v))| {
            let Some(v) = v else {
                return typed(i, "NULL".to_owned());
            };
            let text = match std::str::from_utf8(v) {
                Ok(t) if !binary => format!("'{}'", t.replace('\'', "''")),
                _ => format!("'\\x{}'", hex::encode(v)),
            };
            let shown = if all_secret || crate::classify::redact(&text).as_ref() != text {
                "'***'".to_owned()
            } else {
                clip(&text, MAX_SHOWN)
            };
            typed(i, shown)
        })
        .collect()
}

/// A prepared statement's parameter values, `$1 = 'a', $2 = NULL`.
pub fn params_line(r: &ApprovalView) -> Option<String> {
    if r.params.is_empty() {
        return None;
    }
    let list: Vec<String> = r
        .params
        .iter()
        .enumerate()
        .map(|(i, v)| format!("${} = {v}", i + 1))
        .collect();
    Some(clip(&list.join(", "), MAX_STATEMENT_IN_MESSAGE))
}

/// Text for Slack's `mrkdwn`: `&`, `<` and `>` are its control characters
/// (`<https://x|label>` is a link, `<!channel>` a mention); escaped, they
/// show as themselves.
pub fn mrkdwn(s: &str) -> String {
    mrkdwn_clipped(s, usize::MAX)
}

/// Inline code: a backtick would end it, so it shows as a modifier letter.
fn inline_code(s: &str) -> String {
    format!("`{}`", mrkdwn(s).replace('`', "\u{2cb}"))
}

/// "in 8 min", "3 min ago": how far `ms` (Unix milliseconds) is from now.
pub fn relative(ms: u64) -> String {
    let now = crate::time::now_ms();
    let (d, future) = if ms >= now {
        (ms - now, true)
    } else {
        (now - ms, false)
    };
    let secs = d / 1000;
    let span = if secs < 60 {
        format!("{secs} s")
    } else if secs < 2 * 3600 {
        format!("{} min", secs.div_ceil(60))
    } else if secs < 2 * 86_400 {
        format!("{} h", secs / 3600)
    } else {
        format!("{} days", secs / 86_400)
    };
    if future {
        format!("in {span}")
    } else {
        format!("{span} ago")
    }
}

/// `alice (human)`, or just the name when the kind is not known.
pub fn who(r: &ApprovalView) -> String {
    if r.kind.is_empty() {
        r.identity.clone()
    } else {
        format!("{} ({})", r.identity, r.kind)
    }
}

/// What approving does, in the approver's words.
pub fn what_approving_does(r: &ApprovalView) -> String {
    match r.mode {
        crate::policy::ApprovalMode::Wait => format!(
            "{}'s session is waiting: approving runs the statement once, now",
            r.identity
        ),
        crate::policy::ApprovalMode::Defer => format!(
            "approving runs nothing by itself: the statement runs once when {} sends it again",
            r.identity
        ),
    }
}

/// What became of a request, in one line (for follow-ups and the page).
pub fn story(r: &ApprovalView) -> String {
    let by = r.decided_by.as_deref().unwrap_or("nobody");
    let mut out = match r.status {
        Status::Pending => "pending".to_owned(),
        Status::Approved => format!("approved by {by}"),
        Status::Denied => format!("denied by {by}"),
        Status::Executed => format!("approved by {by}, and run"),
        Status::Expired if r.decided_by.is_some() => format!(
            "approved by {by}, but never run: it expired before {} sent the statement again",
            r.identity
        ),
        Status::Expired => "expired: nobody decided in time".to_owned(),
        Status::Cancelled => "cancelled".to_owned(),
    };
    if let Some(n) = &r.note {
        out.push_str(&format!(" (note: {n})"));
    }
    if let Some(o) = &r.outcome {
        out.push_str(&format!("; {o}"));
    } else if r.status == Status::Approved {
        out.push_str(&format!("; {}", what_approving_does(r)));
    }
    out
}

/// Slack refuses a section whose text is longer than 3000 characters (and
/// then nobody is paged): each section stays under this, after escaping.
const MAX_SECTION: usize = 2_900;

/// `mrkdwn(s)` cut (with "…") so the escaped text stays within `max`
/// characters, never inside an escape.
fn mrkdwn_clipped(s: &str, max: usize) -> String {
    let mut out = String::new();
    let mut len = 0;
    for c in s.chars() {
        let piece = match c {
            '&' => "&amp;".to_owned(),
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            c => c.to_string(),
        };
        let n = piece.chars().count();
        if len + n > max.saturating_sub(1) {
            out.push('…');
            return out;
        }
        len += n;
        out.push_str(&piece);
    }
    out
}

/// A section block of `mrkdwn` text that Slack shows as written:
/// `verbatim` stops it from turning URLs and names in it into links.
fn section(text: String) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": true}})
}

/// The statement as a code block within one section's limit.
fn statement_block(sql: &str, max: usize) -> String {
    // Backticks each gain a zero-width space: count them twice.
    let budget = max.saturating_sub(8 + sql.matches('`').count().min(max / 2));
    let text = mrkdwn_clipped(&reveal(sql).0, budget);
    let lead = if text.starts_with('`') {
        "\u{200b}"
    } else {
        ""
    };
    format!("```{lead}{}```", text.replace('`', "`\u{200b}"))
}

/// Characters that change how text reads without showing themselves
/// (direction overrides and isolates, zero-width and other format
/// characters, controls): shown as `\u{…}` so an approver sees that they
/// are there. The second value says whether there were any.
pub fn reveal(s: &str) -> (String, bool) {
    let hidden = |c: char| {
        matches!(c as u32,
            0x00..=0x08 | 0x0b | 0x0c | 0x0e..=0x1f | 0x7f..=0x9f
            | 0xad | 0x34f | 0x61c | 0x115f | 0x1160 | 0x17b4 | 0x17b5 | 0x180b..=0x180f
            | 0x200b..=0x200f | 0x2028..=0x202e | 0x2060..=0x206f | 0x3164 | 0xfe00..=0xfe0f
            | 0xfeff | 0xffa0 | 0xfff0..=0xfffb | 0x1d173..=0x1d17a | 0xe0000..=0xe0fff)
    };
    if !s.chars().any(hidden) {
        return (s.to_owned(), false);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if hidden(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    (out, true)
}

/// The warning shown when [`reveal`] found something.
pub const HIDDEN_CHARACTERS: &str = "the statement contains invisible or direction-changing characters, shown as \\u{…}: what an editor or chat displays may differ from what runs";

/// The Slack-compatible message for a request. Every piece of text that
/// came from a user is escaped for `mrkdwn` and sent `verbatim`, names are
/// in code formatting, and each section stays within Slack's limit.
pub fn slack_message(r: &ApprovalView, link: &str) -> Value {
    let tables = if r.tables.is_empty() {
        "-".to_owned()
    } else {
        r.tables
            .iter()
            .map(|t| inline_code(t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = mrkdwn_clipped(
        &format!(
            "infraveil: {} ({} role) wants to run a {} statement; approval {} by {}",
            r.identity,
            r.role,
            r.class,
            r.id,
            r.approvers.join(" or ")
        ),
        MAX_SECTION,
    );
    let head = format!(
        "*{}* (role {}, from {}, database {}) wants to run a *{}* statement:\n",
        mrkdwn_clipped(&who(r), 200),
        inline_code(&r.role),
        mrkdwn_clipped(&r.client_addr, 100),
        inline_code(&r.database),
        r.class,
    );
    let mut statement = format!(
        "{head}{}",
        statement_block(&r.statement, MAX_SECTION - head.chars().count())
    );
    if reveal(&r.statement).1 {
        statement = format!(
            "{head}:warning: *{}*\n{}",
            capitalised(HIDDEN_CHARACTERS),
            statement_block(&r.statement, MAX_SECTION - head.chars().count() - 200)
        );
    }
    let mut details = String::new();
    if let Some(p) = params_line(r) {
        details.push_str(&format!(
            "*With parameters:*\n{}\n",
            statement_block(&p, 1_000)
        ));
    }
    if let Some(reason) = &r.grant_reason {
        details.push_str(&format!(
            "*Grant reason:* {}\n",
            mrkdwn_clipped(reason, 300)
        ));
    }
    details.push_str(&format!(
        "*Tables:* {}\n*Why held:* {} (rule {})\n*Blast radius:*\n{}\n*{}.*\n*Approvers:* {} · *expires* {} ({}) · statement sha256 {}",
        tables,
        mrkdwn_clipped(&r.reason, 400),
        inline_code(&r.rule),
        r.preview
            .iter()
            .map(|l| format!("• {}", mrkdwn_clipped(l, 300)))
            .collect::<Vec<_>>()
            .join("\n"),
        mrkdwn(&capitalised(&what_approving_does(r))),
        mrkdwn_clipped(&r.approvers.join(", "), 200),
        relative(r.expires_ms),
        r.expires_at,
        inline_code(&r.statement_hash[..r.statement_hash.len().min(16)]),
    ));
    json!({
        "text": text,
        "blocks": [
            section(statement),
            section(clip_chars(&details, MAX_SECTION)),
            {"type": "actions", "elements": [
                {"type": "button", "style": "primary", "action_id": "approve",
                 "text": {"type": "plain_text", "text": "Approve"},
                 "url": format!("{link}&action=approve")},
                {"type": "button", "style": "danger", "action_id": "deny",
                 "text": {"type": "plain_text", "text": "Deny"},
                 "url": format!("{link}&action=deny")}
            ]}
        ]
    })
}

/// Cut already-escaped text to `max` characters at a line break, so no
/// escape or code span is cut in half.
fn clip_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out = String::new();
    for line in s.lines() {
        if out.chars().count() + line.chars().count() + 2 > max {
            out.push('…');
            break;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The follow-up posted when a request is decided, cancelled, expires or
/// runs: no buttons, so chat no longer offers a spent link.
pub fn slack_follow_up(r: &ApprovalView) -> Value {
    let text = format!(
        "infraveil: approval {} ({}, {} statement) is {}",
        r.id,
        r.identity,
        r.class,
        story(r)
    );
    let body = format!(
        "*Approval {}* for *{}*: {}\n{}\nThe approval link is spent; nothing more can be decided.",
        mrkdwn(&r.id),
        mrkdwn_clipped(&who(r), 200),
        mrkdwn_clipped(&story(r), 1_500),
        statement_block(&r.statement, 600),
    );
    json!({
        "text": mrkdwn_clipped(&text, MAX_SECTION),
        "blocks": [section(body)]
    })
}

/// The same request as plain text, for the log and the terminal.
pub fn plain_text(r: &ApprovalView, link: &str) -> String {
    let mut out = format!(
        "approval {} needed: {} (role {}) wants to run a {} statement\n  {}\n",
        r.id,
        who(r),
        r.role,
        r.class,
        clip(&reveal(&r.statement).0, MAX_STATEMENT_IN_MESSAGE)
    );
    if reveal(&r.statement).1 {
        out.push_str(&format!("  warning: {HIDDEN_CHARACTERS}\n"));
    }
    if let Some(p) = params_line(r) {
        out.push_str(&format!("  with parameters: {p}\n"));
    }
    if let Some(reason) = &r.grant_reason {
        out.push_str(&format!("  grant reason: {reason}\n"));
    }
    for l in &r.preview {
        out.push_str(&format!("  blast radius: {l}\n"));
    }
    out.push_str(&format!(
        "  {}\n  approvers: {}; expires {}; open {link}\n  or: veilctl approvals approve {} --as NAME\n",
        what_approving_does(r),
        r.approvers.join(", "),
        relative(r.expires_ms),
        r.id
    ));
    out
}

impl Notifier {
    /// Deliver the message; the result is kept on the request.
    pub async fn send(&self, r: &ApprovalView, link: &str) -> Result<String, String> {
        match self {
            Notifier::Log => {
                // Not the link: its token is a credential, and logs travel.
                tracing::info!(
                    approval = %r.id,
                    identity = %r.identity,
                    class = %r.class,
                    approvers = %r.approvers.join(","),
                    "approval requested (no webhook configured; decide with veilctl approvals approve|deny)"
                );
                Ok("logged (no webhook configured)".to_owned())
            }
            Notifier::Sink(f) => {
                f(&plain_text(r, link));
                Ok("printed".to_owned())
            }
            Notifier::Webhook(w) => w.post(&slack_message(r, link)).await,
        }
    }

    /// Tell the approvers what became of a request.
    pub async fn send_update(&self, r: &ApprovalView) -> Result<String, String> {
        match self {
            Notifier::Log => Ok("logged".to_owned()),
            Notifier::Sink(f) => {
                f(&format!("approval {}: {}", r.id, story(r)));
                Ok("printed".to_owned())
            }
            Notifier::Webhook(w) => w.post(&slack_follow_up(r)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"s3cret");
        let (ts, sig) = sign(&key, b"{\"a\":1}");
        let hex_sig = sig.strip_prefix("v1=").unwrap();
        let msg = format!("{ts}.{{\"a\":1}}");
        ring::hmac::verify(&key, msg.as_bytes(), &hex::decode(hex_sig).unwrap()).unwrap();
    }

    #[test]
    fn values_are_shown_quoted_in_hex_or_redacted_and_bound_by_format() {
        let values: &[(bool, Option<&[u8]>)] =
            &[(false, Some(b"it's")), (true, Some(&[1, 2])), (false, None)];
        assert_eq!(
            show_values("SELECT $1, $2, $3", &[], values),
            vec!["'it''s'", "'\\x0102'", "NULL"]
        );
        let conninfo: &[(bool, Option<&[u8]>)] = &[(false, Some(b"host=h password=s3cret"))];
        assert_eq!(
            show_values("SELECT dblink_connect($1)", &[], conninfo),
            vec!["'***'"]
        );
        // Text and binary of the same bytes are different approvals; no
        // values is the text alone.
        let text: &[(bool, Option<&[u8]>)] = &[(false, Some(b"1"))];
        let binary: &[(bool, Option<&[u8]>)] = &[(true, Some(b"1"))];
        let sql = "DELETE FROM t WHERE id = $1";
        use super::super::{bound_hash, statement_hash};
        assert_ne!(bound_hash(sql, &[], text), bound_hash(sql, &[], binary));
        // So are the same bytes as text and as bytea.
        assert_ne!(bound_hash(sql, &[25], text), bound_hash(sql, &[17], text));
        assert_eq!(bound_hash(sql, &[], &[]), statement_hash(sql));
    }

    #[test]
    fn slack_control_characters_are_escaped_and_fences_cannot_close_early() {
        assert_eq!(
            mrkdwn("<https://evil.example|ok> & <!channel>"),
            "&lt;https://evil.example|ok&gt; &amp; &lt;!channel&gt;"
        );
        let block = statement_block("SELECT 1 /* ``` */ ``", 1_000);
        // Only the two fences remain as runs of three backticks.
        assert_eq!(block.matches("```").count(), 2, "{block}");
        assert!(block.starts_with("```") && block.ends_with("```"));
        assert!(!statement_block("`x", 100).starts_with("````"));
        // Escaping cannot push a section past Slack's limit.
        let long = "&".repeat(5_000);
        assert!(statement_block(&long, MAX_SECTION).chars().count() <= MAX_SECTION);
        assert!(mrkdwn_clipped(&long, 10).ends_with('…'));
        assert!(!mrkdwn_clipped("a&b", 3).contains("&am"));
        // Hidden characters are shown.
        let (shown, any) = reveal("DELETE FROM t /*\u{202e} x */");
        assert!(any && shown.contains("\\u{202e}"), "{shown}");
        assert_eq!(reveal("plain\ttext\n"), ("plain\ttext\n".to_owned(), false));
        assert_eq!(inline_code("a`b"), "`a\u{2cb}b`");
    }

    #[test]
    fn relative_times_read_naturally() {
        let now = crate::time::now_ms();
        assert_eq!(relative(now + 8 * 60_000 - 500), "in 8 min");
        assert_eq!(relative(now.saturating_sub(30_000)), "30 s ago");
        assert_eq!(relative(now + 5 * 3_600_000 + 1_000), "in 5 h");
    }

    #[test]
    fn clip_respects_char_boundaries() {
        assert_eq!(clip("héllo", 2), "h…");
        assert_eq!(clip("abc", 5), "abc");
    }
}
