//! Reading pg_query's tree as JSON: a node's kind and body, a field as a
//! string, bool or integer (absent reads as empty, false or 0, as in the
//! protobuf), qualified names, constants and booleans as PostgreSQL's
//! `parse_bool` and `defGetBoolean` read them.

use serde_json::{Map, Value};

/// `{"node": {"Kind": {…}}}` → `("Kind", {…})`.
pub(super) fn node_of(v: &Value) -> Option<(&str, &Value)> {
    let m = v.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let inner = m.get("node")?.as_object()?;
    if inner.len() != 1 {
        return None;
    }
    inner.iter().next().map(|(k, v)| (k.as_str(), v))
}

pub(super) fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

pub(super) fn bool_of(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or(false)
}

pub(super) fn int_of(m: &Map<String, Value>, key: &str) -> i64 {
    m.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// The `sval`s of a list of `String` nodes (a qualified name).
pub(super) fn names(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|n| match node_of(n) {
                    Some(("String", s)) => s.get("sval").and_then(Value::as_str).map(str::to_owned),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A constant's text as `SET` would see it; `None` if it is not a constant.
pub(super) fn constant(v: &Value) -> Option<String> {
    let (kind, body) = node_of(v)?;
    if kind != "AConst" {
        return None;
    }
    let val = body.get("val")?.as_object()?;
    let (k, inner) = val.iter().next()?;
    match k.as_str() {
        "Sval" => inner.get("sval")?.as_str().map(str::to_owned),
        "Ival" => Some(
            inner
                .get("ival")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                .to_string(),
        ),
        "Fval" => inner.get("fval")?.as_str().map(str::to_owned),
        "Boolval" => Some(
            if inner
                .get("boolval")
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                "on"
            } else {
                "off"
            }
            .to_owned(),
        ),
        _ => None,
    }
}

/// PostgreSQL's `parse_bool`: a prefix of true/false/yes/no, on/off, 1/0.
pub(super) fn parse_bool(s: &str) -> Option<bool> {
    let s = s.to_ascii_lowercase();
    let prefix_of = |w: &str| !s.is_empty() && w.starts_with(s.as_str());
    match s.as_str() {
        "1" => Some(true),
        "0" => Some(false),
        "on" => Some(true),
        "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// A `DefElem`'s boolean value as `defGetBoolean` reads it; an argument it
/// would reject counts as `true` (the statement is then refused anyway).
pub(super) fn def_bool(d: &Map<String, Value>) -> bool {
    match d.get("arg") {
        None | Some(Value::Null) => true,
        Some(arg) => match node_of(arg) {
            Some(("String", s)) => s
                .get("sval")
                .and_then(Value::as_str)
                .and_then(parse_bool)
                .unwrap_or(true),
            Some(("Integer", i)) => i.get("ival").and_then(Value::as_i64).unwrap_or(0) != 0,
            Some(("Boolean", b)) => b.get("boolval").and_then(Value::as_bool).unwrap_or(false),
            _ => constant(arg).and_then(|c| parse_bool(&c)).unwrap_or(true),
        },
    }
}
