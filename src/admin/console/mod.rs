//! The web console on the admin listener, under `/console`: the approvals
//! queue, the risk checker, blast radius and access review, the guard
//! config generator, the audit log and grants. Server-rendered HTML
//! (maud escapes every value), plain CSS and a little progressive
//! JavaScript, all served from the binary; every page works without
//! JavaScript.
//!
//! Everyone signs in ([`signin`]); [`session`] holds who they are and the
//! CSRF token every POST must carry. GET never changes anything.

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};

use super::AdminState;

mod assets;
mod audit;
mod check;
mod grants;
mod highlight;
mod inventory;
mod queue;
pub mod session;
mod signin;

use session::Signed;

/// The console's own state.
#[derive(Default)]
pub struct Console {
    pub sessions: session::Sessions,
}

/// The console's routes (merged into the admin router).
pub fn routes() -> Router<AdminState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/approvals") }),
        )
        .route("/console/signin", get(signin::page).post(signin::post))
        .route("/console/signout", post(signin::signout))
        .route("/console/approvals", get(queue::page))
        .route("/console/approvals/events", get(queue::events))
        .route("/console/approvals/{id}", post(queue::decide))
        .route("/console/check", get(check::page).post(check::post))
        .route("/console/blast-radius", get(inventory::blast_radius))
        .route("/console/access", get(inventory::access_review))
        .route("/console/guard", get(inventory::guard))
        .route("/console/audit", get(audit::page))
        .route("/console/audit/export", get(audit::export))
        .route("/console/grants", get(grants::page).post(grants::issue))
        .route("/console/grants/{id}/revoke", post(grants::revoke))
        .route("/console/assets/console.css", get(assets::css))
        .route("/console/assets/console.js", get(assets::js))
}

/// Which page the navigation marks as current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    None,
    Approvals,
    Check,
    Inventory,
    Audit,
    Grants,
}

fn nav(signed: &Signed, current: Nav) -> Markup {
    let mut links = vec![
        (Nav::Approvals, "/console/approvals", "Approvals"),
        (Nav::Check, "/console/check", "Risk checker"),
    ];
    if signed.who.is_admin() {
        links.push((Nav::Inventory, "/console/blast-radius", "Blast radius"));
        links.push((Nav::Audit, "/console/audit", "Audit"));
        links.push((Nav::Grants, "/console/grants", "Grants"));
    }
    html! {
        nav aria-label="Console" {
            ul {
                @for (which, href, label) in links {
                    li {
                        a href=(href) aria-current=[(which == current).then_some("page")] { (label) }
                    }
                }
            }
        }
        form.signout method="post" action="/console/signout" {
            input type="hidden" name="csrf" value=(signed.csrf);
            span.who { "Signed in as " strong { (signed.who.name()) } }
            " "
            button type="submit" { "Sign out" }
        }
    }
}

/// A whole page: the layout around `body`, with the console's headers.
pub fn page(
    status: StatusCode,
    title: &str,
    signed: Option<&Signed>,
    current: Nav,
    body: Markup,
) -> Response {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · infraveil console" }
                link rel="stylesheet" href="/console/assets/console.css";
                script src="/console/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "infraveil" }
                    @if let Some(s) = signed { (nav(s, current)) }
                }
                main #main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    };
    with_headers((status, doc).into_response())
}

/// The console's security headers on any response.
pub fn with_headers(mut resp: Response) -> Response {
    super::approvals::page_headers(
        resp.headers_mut(),
        "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; \
         img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    resp
}

/// A page with a heading and one paragraph (refusals and errors).
pub fn message(status: StatusCode, title: &str, text: &str) -> Response {
    page(
        status,
        title,
        None,
        Nav::None,
        html! {
            p { (text) }
            p { a href="/console/approvals" { "Back to the console" } }
        },
    )
}
