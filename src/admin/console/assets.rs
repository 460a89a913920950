//! The console's stylesheet and script, served from the binary (no CDN,
//! no build step). The script only improves pages that work without it:
//! the live queue, copy buttons.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const CSS: &str = r#"
*,*::before,*::after{box-sizing:border-box}
html{font-size:100%;-webkit-text-size-adjust:100%}
body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",sans-serif;line-height:1.45;color:#1f2328;background:#f6f8fa}
a{color:#0550ae}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible{outline:3px solid #0969da;outline-offset:2px}
.skip{position:absolute;left:-999px;top:0;background:#fff;padding:.5rem}
.skip:focus{left:.5rem}
header.top{background:#24292f;color:#fff;padding:.5rem 1rem;display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center}
header.top .brand{font-weight:700;letter-spacing:.02em}
header.top nav ul{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.25rem .9rem}
header.top nav a{color:#fff;text-decoration:none;padding:.2rem 0;display:inline-block}
header.top nav a[aria-current=page]{border-bottom:2px solid #fff}
form.signout{margin-left:auto;display:flex;gap:.5rem;align-items:center;font-size:.9rem}
form.signout button{font-size:.85rem;padding:.2rem .6rem}
main{max-width:60rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.2rem;margin:1.5rem 0 .5rem}
h3{font-size:1.05rem;margin:0 0 .5rem;overflow-wrap:anywhere}
h4{font-size:.95rem;margin:.75rem 0 .25rem}
label{display:block;font-weight:600;margin-bottom:.2rem}
small{display:block;color:#57606a}
input,select,textarea{font:inherit;width:100%;max-width:32rem;padding:.4rem;border:1px solid #8c959f;border-radius:4px;background:#fff}
textarea.sql{max-width:none;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
button{font:inherit;padding:.45rem 1.1rem;border-radius:4px;border:1px solid #8c959f;background:#fff;cursor:pointer}
button.primary{background:#0969da;color:#fff;border-color:#0969da}
button.approve{background:#1a7f37;color:#fff;border-color:#1a7f37}
button.deny{background:#cf222e;color:#fff;border-color:#cf222e}
.buttons{display:flex;flex-wrap:wrap;gap:.6rem}
pre,code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.9rem}
pre{background:#fff;border:1px solid #d0d7de;padding:.7rem;white-space:pre-wrap;overflow-wrap:anywhere;margin:.5rem 0;unicode-bidi:isolate}
pre.sql{background:#fffdf5}
code{overflow-wrap:anywhere}
.kw{color:#0550ae;font-weight:600}.kw.danger{color:#cf222e}.str{color:#0a3069}.comment{color:#6e7781;font-style:italic}
article.request,.card{background:#fff;border:1px solid #d0d7de;border-radius:6px;padding:1rem;margin:0 0 1rem}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:.5rem 0}
dl.facts dt{font-weight:600;color:#57606a}
dl.facts dd{margin:0;overflow-wrap:anywhere;min-width:0}
ul.preview{margin:.25rem 0;padding-left:1.2rem}
.class-badge{display:inline-block;font-size:.8rem;padding:.05rem .45rem;border-radius:1rem;background:#ddf4ff;color:#0550ae;font-weight:600}
.class-badge.destructive,.class-badge.privileged,.class-badge.unknown{background:#ffebe9;color:#a40e26}
.class-badge.write,.class-badge.ddl{background:#fff8c5;color:#7d4e00}
.decision{font-weight:700}.decision.allow{color:#1a7f37}.decision.hold{color:#9a6700}.decision.deny{color:#cf222e}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.6rem}
.error{background:#ffebe9;border:1px solid #ff8182;padding:.6rem}
.flash{background:#dafbe1;border:1px solid #4ac26b;padding:.6rem}
.secret{background:#fff8c5;border:1px solid #d4a72c;padding:.6rem;overflow-wrap:anywhere}
.note,.empty{color:#57606a}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%}
table{border-collapse:collapse;width:100%;background:#fff;font-size:.9rem}
th,td{text-align:left;vertical-align:top;padding:.35rem .5rem;border-bottom:1px solid #d0d7de;overflow-wrap:anywhere}
code.stmt{display:block;max-width:24rem}
fieldset{border:1px solid #d0d7de;border-radius:6px;margin:0 0 1rem;padding:.5rem 1rem}
.row{display:flex;flex-wrap:wrap;gap:.5rem 1rem}
.row>p{flex:1 1 12rem;margin:.3rem 0}
.ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}
@media (max-width:40rem){main{padding:.6rem}dl.facts{grid-template-columns:1fr}dl.facts dt{margin-top:.3rem}form.signout{margin-left:0}}
"#;

const JS: &str = r#"// infraveil console: progressive enhancement only; every page works without it.
(function () {
  "use strict";
  // The live queue: new requests are added and decided ones removed, while
  // the ones an approver may be typing a note into stay as they are.
  var queue = document.getElementById("queue");
  if (queue && window.EventSource) {
    var source = new EventSource(queue.getAttribute("data-events"));
    source.addEventListener("queue", function (ev) {
      var next = document.createElement("div");
      next.innerHTML = ev.data; // server-rendered, escaped HTML
      var wanted = {};
      next.querySelectorAll("article.request").forEach(function (a) {
        wanted[a.getAttribute("data-id")] = a;
      });
      queue.querySelectorAll("article.request").forEach(function (a) {
        if (!wanted[a.getAttribute("data-id")]) { a.remove(); }
      });
      var have = {};
      queue.querySelectorAll("article.request").forEach(function (a) {
        have[a.getAttribute("data-id")] = true;
      });
      var first = queue.querySelector("article.request");
      Object.keys(wanted).forEach(function (id) {
        if (!have[id]) { queue.insertBefore(wanted[id], first); }
      });
      var empty = queue.querySelector("p.empty");
      var any = queue.querySelector("article.request");
      if (any && empty) { empty.remove(); }
      if (!any && !empty) {
        var p = document.createElement("p");
        p.className = "empty";
        p.textContent = "No pending requests.";
        queue.appendChild(p);
      }
    });
  }
  // Copy buttons: <button data-copy="ID"> copies the text of element ID.
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    b.hidden = false;
    b.addEventListener("click", function () {
      var el = document.getElementById(b.getAttribute("data-copy"));
      if (!el || !navigator.clipboard) { return; }
      navigator.clipboard.writeText(el.textContent).then(function () {
        b.textContent = "Copied";
      });
    });
  });
})();
"#;

pub async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

pub async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}
