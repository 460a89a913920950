//! The expression nodes of PostgreSQL's tree that matter for safety: the
//! relations it names (with `WITH` scoping), the functions it calls and the
//! operators it applies, and the names and strings the other checks read.

use serde_json::{Map, Value};

use super::json::{constant, int_of, names, node_of, str_of};
use super::{Reader, Seen};
use crate::classify::functions::{self, Call};
use crate::classify::{Class, settings};

/// Built-in operator names of PostgreSQL 15 (`SELECT DISTINCT oprname FROM
/// pg_operator`). Any other operator is user code.
const OPERATORS: &[&str] = &[
    "!!", "!~", "!~*", "!~~", "!~~*", "#", "##", "#-", "#>", "#>>", "%", "&", "&&", "&<", "&<|",
    "&>", "*", "*<", "*<=", "*<>", "*=", "*>", "*>=", "+", "-", "->", "->>", "-|-", "/", "<",
    "<->", "<<", "<<=", "<<|", "<=", "<>", "<@", "<^", "=", ">", ">=", ">>", ">>=", ">^", "?",
    "?#", "?&", "?-", "?-|", "?|", "?||", "@", "@-@", "@>", "@?", "@@", "@@@", "^", "^@", "|",
    "|&>", "|/", "|>>", "||", "||/", "~", "~*", "~<=~", "~<~", "~=", "~>=~", "~>~", "~~", "~~*",
];

pub(crate) fn is_builtin_operator(op: &str) -> bool {
    OPERATORS.contains(&op)
}

impl Reader {
    /// What an expression node names (operators, types, fields,
    /// strings); `Seen::Other` if `kind` is not one.
    pub(super) fn expression_node(&mut self, kind: &str, m: &Map<String, Value>) -> Seen {
        match kind {
            "RangeVar" => {
                self.relation(m);
                return Seen::Walked;
            }
            "FuncCall" => {
                self.call(m);
                return Seen::Walked;
            }
            "AExpr" => {
                if (11..=14).contains(&int_of(m, "kind")) {
                    // BETWEEN's "name" is the keyword: it compares with
                    // the types' own <= and >= (< and > when negated).
                    for op in ["<=", ">=", "<", ">"] {
                        self.out.names.operators.push(op.to_owned());
                    }
                } else {
                    self.operator(&names(m.get("name")));
                }
            }
            // `CASE x WHEN v` compares with `=`.
            "CaseExpr" if matches!(m.get("arg"), Some(Value::Object(_))) => {
                self.out.names.operators.push("=".to_owned());
            }
            "TypeName" => {
                let n = names(m.get("names"));
                match n.as_slice() {
                    [schema, _] if schema == "pg_catalog" => {}
                    [.., last] => self.out.names.types.push(last.clone()),
                    [] => {}
                }
            }
            "ColumnRef" => {
                if let Some(fields) = m.get("fields").and_then(Value::as_array)
                    && fields.len() >= 2
                    && let Some(("String", s)) = fields.last().and_then(node_of)
                    && let Some(f) = s.get("sval").and_then(Value::as_str)
                {
                    self.out.names.fields.push(f.to_owned());
                }
            }
            "AIndirection" => {
                let selected = names(m.get("indirection"));
                self.out.names.fields.extend(selected);
            }
            "SubLink" => {
                let op = names(m.get("oper_name"));
                if !op.is_empty() {
                    self.operator(&op);
                } else if matches!(int_of(m, "sub_link_type"), 2 | 3) {
                    // `x IN (SELECT …)` and `x NOT IN …`: the grammar
                    // leaves the name out; PostgreSQL compares with `=`.
                    self.out.names.operators.push("=".to_owned());
                }
            }
            "SortBy" => {
                let op = names(m.get("use_op"));
                if !op.is_empty() {
                    self.operator(&op);
                }
            }
            "AConst" => {
                if let Some(Value::Object(val)) = m.get("val")
                    && let Some(Value::Object(s)) = val.get("Sval")
                {
                    self.out.strings.insert(str_of(s, "sval").to_owned());
                }
            }
            _ => return Seen::Other,
        }
        Seen::Judged
    }

    fn relation(&mut self, m: &Map<String, Value>) {
        let schema = str_of(m, "schemaname");
        let name = str_of(m, "relname");
        if schema.is_empty() && self.ctes.iter().any(|s| s.iter().any(|c| c == name)) {
            return;
        }
        let schema = (!schema.is_empty()).then_some(schema);
        let t = crate::classify::resolve(schema, name);
        self.out.names.unqualified_relations |= schema.is_none() && t.schema != "pg_catalog";
        self.out.relations.insert(t);
    }

    fn call(&mut self, m: &Map<String, Value>) {
        let n = names(m.get("funcname"));
        let dotted = n.join(".");
        let bare = dotted
            .strip_prefix("pg_catalog.")
            .unwrap_or(&dotted)
            .to_owned();
        self.fields(m, &["funcname"]);
        if n.len() == 1 {
            self.out.names.functions.push(bare.clone());
        }
        if n.len() == 1 && functions::SYNTAX_NOT_FUNCTIONS.contains(&bare.as_str()) {
            self.out.unlisted.insert(dotted);
            return;
        }
        self.out.called.insert(dotted.clone());
        if bare == "set_config" {
            let args: Vec<Option<String>> = m
                .get("args")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(constant).collect())
                .unwrap_or_default();
            return match args.first().cloned().flatten() {
                Some(name) => {
                    let value: Vec<String> = args.get(1).cloned().flatten().into_iter().collect();
                    let (class, why) = settings::classify(&name, Some(&value));
                    self.raise_planned(class, format!("set_config: {why}"));
                }
                None => self.raise_planned(
                    Class::Privileged,
                    "set_config() with a setting name that is not a literal could change the role",
                ),
            };
        }
        match functions::lookup(&bare) {
            Call::ReadOnly => {}
            Call::Effect(class, why) => {
                self.raise_planned(class, format!("calls {bare}(), which {why}"))
            }
            Call::Unlisted => {
                self.out.unlisted.insert(dotted);
            }
        }
    }

    /// Judged inside a plain `EXPLAIN` too (see `raise_planned`).
    fn operator(&mut self, name: &[String]) {
        if let [op] = name {
            self.out.names.operators.push(op.clone());
        }
        let ok = match name {
            [op] => is_builtin_operator(op),
            [schema, op] => schema == "pg_catalog" && is_builtin_operator(op),
            _ => false,
        };
        if !ok {
            self.unknown(format!(
                "applies the operator {}, which is not one of PostgreSQL's built-in operators and may run any function",
                name.join(".")
            ));
        }
    }
}
