//! Console sessions: a server-side table (in memory: a restart signs
//! everyone out), keyed by a random 256-bit id carried in an `HttpOnly;
//! SameSite=Strict` cookie scoped to `/console`. Each session has its own
//! CSRF token that every POST must carry, compared in constant time, on
//! top of the browser's word on where the POST came from.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, OptionalFromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use subtle::ConstantTimeEq;

use crate::admin::AdminState;

pub const COOKIE: &str = "veil_console";
/// Idle time after which a session ends.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Bounded: every sign-in adds one.
const MAX_SESSIONS: usize = 10_000;

/// Who signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// The admin token: sees everything, manages grants.
    Admin,
    /// An approver, with their approver secret or a grant secret: sees and
    /// decides only requests for roles that name them.
    Approver(String),
}

impl Who {
    pub fn name(&self) -> &str {
        match self {
            Who::Admin => "admin",
            Who::Approver(n) => n,
        }
    }

    pub fn is_admin(&self) -> bool {
        *self == Who::Admin
    }
}

struct Entry {
    who: Who,
    csrf: String,
    started: Instant,
    seen: Instant,
}

/// The signed-in sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Entry>>,
}

fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new session for `who`; returns its id (the cookie's value).
    pub fn create(&self, who: Who) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, e| live(e, now));
        }
        if map.len() >= MAX_SESSIONS {
            // Still full of live sessions: the oldest makes room.
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Entry {
                who,
                csrf: random_token(),
                started: now,
                seen: now,
            },
        );
        id
    }

    /// The live session `id`, touched.
    pub fn get(&self, id: &str) -> Option<Signed> {
        let now = Instant::now();
        let mut map = self.lock();
        let e = map.get_mut(id)?;
        if !live(e, now) {
            map.remove(id);
            return None;
        }
        e.seen = now;
        Some(Signed {
            id: id.to_owned(),
            who: e.who.clone(),
            csrf: e.csrf.clone(),
        })
    }

    /// Whether `id` is still live, without touching it (the live queue
    /// must not keep an idle session alive).
    pub fn alive(&self, id: &str) -> bool {
        self.lock().get(id).is_some_and(|e| live(e, Instant::now()))
    }

    pub fn remove(&self, id: &str) {
        self.lock().remove(id);
    }
}

fn live(e: &Entry, now: Instant) -> bool {
    now.duration_since(e.seen) < IDLE && now.duration_since(e.started) < LIFETIME
}

/// The `Set-Cookie` value for session `id` (`Secure` when the console is
/// reached over TLS, as the public URL says).
pub fn cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Expires the cookie.
pub fn cleared_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

fn cookie_value(headers: &HeaderMap) -> Option<String> {
    crate::admin::cookies(headers, COOKIE)
        .next()
        .map(str::to_owned)
}

/// A signed-in request. As an extractor it sends anyone else to sign in.
#[derive(Debug, Clone)]
pub struct Signed {
    pub id: String,
    pub who: Who,
    pub csrf: String,
}

impl Signed {
    /// A POST of this session: the form's CSRF token is this session's and
    /// the browser says it came from the console's own origin.
    pub fn check_post(
        &self,
        state: &AdminState,
        headers: &HeaderMap,
        form_csrf: &str,
    ) -> Result<(), Refused> {
        let token_ok =
            !form_csrf.is_empty() && bool::from(form_csrf.as_bytes().ct_eq(self.csrf.as_bytes()));
        if token_ok
            && crate::admin::approvals::same_origin(headers, public_origin(state).as_deref())
        {
            return Ok(());
        }
        tracing::info!(
            who = self.who.name(),
            "console: POST without this session's CSRF token or from another origin"
        );
        Err(Refused {
            title: "Refused",
            text: "This form was not sent from this console session (CSRF check failed). Reload the page and try again.",
        })
    }

    /// Refuses anyone but the admin.
    pub fn admin_only(&self) -> Result<(), Refused> {
        if self.who.is_admin() {
            return Ok(());
        }
        Err(Refused {
            title: "Admins only",
            text: "This page needs an admin sign-in (the admin token).",
        })
    }
}

/// A `403` page: why a signed-in request was refused.
#[derive(Debug)]
pub struct Refused {
    title: &'static str,
    text: &'static str,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        super::message(StatusCode::FORBIDDEN, self.title, self.text)
    }
}

pub fn public_origin(state: &AdminState) -> Option<String> {
    state.approvals.as_ref().and_then(|a| a.public_origin())
}

/// Whether the console is reached over TLS: cookies get `Secure` then.
pub fn secure(state: &AdminState) -> bool {
    public_origin(state).is_some_and(|o| o.starts_with("https://"))
}

impl FromRequestParts<AdminState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Response> {
        let found = cookie_value(&parts.headers).and_then(|id| state.console.sessions.get(&id));
        // An approver removed from the policies is signed out at once.
        match found {
            Some(s) if still_allowed(state, &s.who) => Ok(s),
            Some(s) => {
                state.console.sessions.remove(&s.id);
                Err(Redirect::to("/console/signin").into_response())
            }
            None => Err(Redirect::to("/console/signin").into_response()),
        }
    }
}

impl OptionalFromRequestParts<AdminState> for Signed {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AdminState,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(
            <Signed as FromRequestParts<AdminState>>::from_request_parts(parts, state)
                .await
                .ok(),
        )
    }
}

/// A form with the session's CSRF token in it.
pub trait CsrfField {
    fn csrf(&self) -> &str;
}

/// A POSTed form of a signed-in session, its CSRF token and origin
/// checked: handlers that take it never see a forged one.
pub struct Posted<T>(pub Signed, pub T);

impl<T> FromRequest<AdminState> for Posted<T>
where
    T: serde::de::DeserializeOwned + CsrfField + Send,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &AdminState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let signed =
            <Signed as FromRequestParts<AdminState>>::from_request_parts(&mut parts, state).await?;
        let headers = parts.headers.clone();
        let Ok(Form(form)) = Form::<T>::from_request(Request::from_parts(parts, body), state).await
        else {
            return Err(super::message(
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The form is malformed.",
            ));
        };
        signed
            .check_post(state, &headers, form.csrf())
            .map_err(IntoResponse::into_response)?;
        Ok(Posted(signed, form))
    }
}

/// Whether `who` may still use the console under the policies in force.
pub fn still_allowed(state: &AdminState, who: &Who) -> bool {
    match who {
        Who::Admin => true,
        Who::Approver(name) => state.shared.policies().is_approver(name),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::header;

    use super::*;

    #[test]
    fn sessions_have_their_own_ids_and_csrf_tokens() {
        let s = Sessions::default();
        let a = s.create(Who::Approver("oncall".into()));
        let b = s.create(Who::Admin);
        assert_ne!(a, b);
        // 256 random bits, base64url without padding.
        assert_eq!(a.len(), 43);
        let (sa, sb) = (s.get(&a).unwrap(), s.get(&b).unwrap());
        assert_eq!(sa.who, Who::Approver("oncall".into()));
        assert_eq!(sb.who, Who::Admin);
        assert_ne!(sa.csrf, sb.csrf);
        assert_ne!(sa.csrf, a, "the CSRF token is not the session id");
        assert!(s.alive(&a));
        s.remove(&a);
        assert!(s.get(&a).is_none() && !s.alive(&a));
        assert!(s.get("not-a-session").is_none());
    }

    #[test]
    fn the_cookie_is_scoped_and_secure_under_tls() {
        let c = cookie("abc", false);
        assert_eq!(
            c,
            "veil_console=abc; Path=/console; HttpOnly; SameSite=Strict; Max-Age=28800"
        );
        assert!(cookie("abc", true).ends_with("; Secure"));
        assert!(cleared_cookie(true).contains("Max-Age=0"));
    }

    #[test]
    fn only_this_sessions_cookie_is_read() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "veil_csrf=x; veil_console=the-id; other=y".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("the-id"));
        h.insert(header::COOKIE, "veil_console_x=no".parse().unwrap());
        assert_eq!(cookie_value(&h), None);
    }
}
