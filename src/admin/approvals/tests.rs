//! Unit tests of [`super`].

use super::*;

#[test]
fn escaping_and_csrf() {
    assert_eq!(
        escape("<a href='x'>&\"</a>"),
        "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
    );
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::from_static("a=b; veil_csrf=tok"),
    );
    assert!(csrf_ok(&h, "tok"));
    assert!(!csrf_ok(&h, "other"));
    assert!(!csrf_ok(&h, ""));
    assert!(!csrf_ok(&HeaderMap::new(), "tok"));
}

#[test]
fn origin_must_match_host_or_public_url_when_given() {
    let mut h = HeaderMap::new();
    assert!(same_origin(&h, None));
    h.insert(header::HOST, HeaderValue::from_static("veil.example:6433"));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("http://veil.example:6433"),
    );
    assert!(same_origin(&h, None));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://evil.example"),
    );
    assert!(!same_origin(&h, None));
    h.insert(header::ORIGIN, HeaderValue::from_static("null"));
    assert!(!same_origin(&h, None));
    // Behind a proxy that rewrites Host, the public URL's origin.
    h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:6433"));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("https://veil.example"),
    );
    assert!(same_origin(&h, Some("https://veil.example")));
    assert!(!same_origin(&h, Some("https://other.example")));
}

#[test]
fn fetch_metadata_must_say_same_origin() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("veil.example"));
    h.insert(
        header::ORIGIN,
        HeaderValue::from_static("http://veil.example"),
    );
    h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
    assert!(same_origin(&h, None));
    for site in ["same-site", "cross-site", "none"] {
        h.insert("sec-fetch-site", HeaderValue::from_static(site));
        assert!(!same_origin(&h, None), "{site}");
    }
}
