//! PostgreSQL's own reading of a query string, from libpg_query (the
//! `pg_query` crate: PostgreSQL's scanner and grammar compiled in).
//!
//! sqlparser's tokenizer and grammar are not PostgreSQL's: where they differ
//! (an operator that swallows a comment opener, a dollar-quote tag with a
//! non-ASCII byte) the firewall would judge text PostgreSQL never runs and
//! miss text it does. So every string is also parsed here, and from
//! PostgreSQL's tree this module reads what matters for safety on its own:
//! each statement's kind and the class that kind implies, the relations it
//! names (with `WITH` scoping), the functions it calls, the operators it
//! applies and the string constants it holds. `super::reconcile` holds the
//! two readings against each other.
//!
//! The tree is walked as JSON (pg_query's protobuf types derive `Serialize`),
//! so every field of every node is visited without listing PostgreSQL's ~250
//! node types; only the nodes that matter are named. This runs on a cache
//! miss only.

use std::collections::BTreeSet;

use pg_query::protobuf::{AlterTableType, ObjectType, TransactionStmtKind, VariableSetKind};
use serde_json::{Map, Value};

use super::functions::{self, Call};
use super::{Class, TableName, settings};

/// What PostgreSQL's reading says about one statement.
#[derive(Debug, Default)]
pub(crate) struct PgStatement {
    /// The statement node's type, e.g. `SelectStmt`.
    pub kind: String,
    /// The class the statement's nodes imply, without unlisted functions.
    pub floor: Class,
    pub reason: String,
    /// Set when a node makes the statement `unknown` whatever the policy
    /// says of functions (a user-defined operator, a statement kind the
    /// firewall does not classify).
    pub unknown: Option<String>,
    pub relations: BTreeSet<TableName>,
    /// Functions called that the reviewed table does not know.
    pub unlisted: BTreeSet<String>,
    /// Every function called, as PostgreSQL names it (`pg_catalog.extract`
    /// where its grammar turned syntax into a call).
    pub called: BTreeSet<String>,
    /// Every string constant's value.
    pub strings: BTreeSet<String>,
    /// Holds an UPDATE, DELETE, MERGE or upsert, whose class depends on
    /// the bounds analysis only the sqlparser walk does.
    pub needs_walk: bool,
    /// `PREPARE name AS …`: the name.
    pub prepares: Option<String>,
    /// What it does to the session's prepared statements and portals.
    pub session: super::SessionEffect,
    /// Names user objects of the database could take over.
    pub names: super::objects::Names,
    /// Quoted SQL-language routine bodies (`FUNCTION`/`PROCEDURE`, text).
    pub sql_bodies: Vec<(&'static str, String)>,
}

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

/// Stack the parse, the JSON conversion and the walk may need: prost
/// decodes at most 100 nested messages, which costs well under 1 MiB even
/// in a debug build. A session thread (2 MiB) has that left, so only a
/// caller deep in its own stack pays for a new one; `Reader::walk` grows
/// it further node by node if a tree needs more.
const RED_ZONE: usize = 3 << 19;
const STACK: usize = 16 << 20;

/// Parse `sql` as PostgreSQL 15 would (standard_conforming_strings on: the
/// firewall refuses changing it). One entry per statement, in order.
pub(crate) fn read(sql: &str) -> Result<Vec<PgStatement>, String> {
    stacker::maybe_grow(RED_ZONE, STACK, || read_on_stack(sql))
}

fn read_on_stack(sql: &str) -> Result<Vec<PgStatement>, String> {
    let parsed = pg_query::parse(sql, 0).map_err(|e| match e {
        pg_query::Error::Parse(m) => m,
        // prost refuses trees nested over 100 messages deep.
        pg_query::Error::Decode(_) => "the statement is nested too deeply to verify".into(),
        other => other.to_string(),
    })?;
    parsed
        .protobuf
        .stmts
        .iter()
        .map(|raw| {
            let tree = serde_json::to_value(&raw.stmt).map_err(|e| e.to_string())?;
            let mut r = Reader::default();
            let (kind, body) = node_of(&tree).ok_or("an empty statement")?;
            r.out.kind = kind.to_owned();
            if !STATEMENT_KINDS.contains(&kind) {
                r.unknown(format!(
                    "infraveil does not classify {kind} statements (PostgreSQL's reading)"
                ));
            }
            r.node(kind, body);
            r.out.session = session_effect(kind, body);
            if r.out.reason.is_empty() {
                r.out.reason = "reads only".into();
            }
            Ok(r.out)
        })
        .collect()
}

/// What a top-level statement does to the names PostgreSQL keeps per
/// session (prepared statements, portals).
fn session_effect(kind: &str, body: &Value) -> super::SessionEffect {
    use super::SessionEffect as E;
    let Some(m) = body.as_object() else {
        return E::None;
    };
    let name = |key| str_of(m, key).to_owned();
    match kind {
        "PrepareStmt" => E::Prepare(name("name")),
        "DeallocateStmt" if bool_of(m, "isall") || str_of(m, "name").is_empty() => E::DeallocateAll,
        "DeallocateStmt" => E::Deallocate(name("name")),
        "DiscardStmt" => {
            match pg_query::protobuf::DiscardMode::try_from(int_of(m, "target") as i32) {
                Ok(pg_query::protobuf::DiscardMode::DiscardAll) => E::DiscardAll,
                _ => E::None,
            }
        }
        // CURSOR_OPT_HOLD: the cursor outlives its transaction.
        "DeclareCursorStmt" => E::Declare {
            name: name("portalname"),
            hold: int_of(m, "options") & 0x0020 != 0,
        },
        "ClosePortalStmt" if str_of(m, "portalname").is_empty() => E::CloseAll,
        "ClosePortalStmt" => E::Close(name("portalname")),
        "FetchStmt" => E::Fetch {
            name: name("portalname"),
            forward: pg_query::protobuf::FetchDirection::try_from(int_of(m, "direction") as i32)
                == Ok(pg_query::protobuf::FetchDirection::FetchForward)
                && int_of(m, "how_many") >= 0,
        },
        _ => E::None,
    }
}

/// The parse tree without positions: equal for texts that differ only in
/// comments, whitespace, keyword case and quoting.
pub(crate) fn tree_key(sql: &str) -> Result<String, String> {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(m) => {
                m.retain(|k, _| !k.ends_with("location") && k != "stmt_len");
                m.values_mut().for_each(strip);
            }
            Value::Array(a) => a.iter_mut().for_each(strip),
            _ => {}
        }
    }
    stacker::maybe_grow(RED_ZONE, STACK, || {
        let parsed = pg_query::parse(sql, 0).map_err(|e| e.to_string())?;
        let mut v = serde_json::to_value(&parsed.protobuf.stmts).map_err(|e| e.to_string())?;
        strip(&mut v);
        Ok(v.to_string())
    })
}

/// `{"node": {"Kind": {…}}}` → `("Kind", {…})`.
fn node_of(v: &Value) -> Option<(&str, &Value)> {
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

/// Object types that hold rows under a name programs use.
const TABLE_LIKE: &[&str] = &[
    "OBJECT_TABLE",
    "OBJECT_VIEW",
    "OBJECT_MATVIEW",
    "OBJECT_FOREIGN_TABLE",
];

/// Top-level statement kinds this module classifies.
const STATEMENT_KINDS: &[&str] = &[
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
    "CopyStmt",
    "ExplainStmt",
    "PrepareStmt",
    "ExecuteStmt",
    "DeallocateStmt",
    "TransactionStmt",
    "VariableSetStmt",
    "VariableShowStmt",
    "DiscardStmt",
    "ListenStmt",
    "UnlistenStmt",
    "NotifyStmt",
    "DeclareCursorStmt",
    "FetchStmt",
    "ClosePortalStmt",
    "LockStmt",
    "CallStmt",
    "DoStmt",
    "DropStmt",
    "TruncateStmt",
    "DropRoleStmt",
    "DropdbStmt",
    "DropOwnedStmt",
    "DropTableSpaceStmt",
    "DropSubscriptionStmt",
    "DropUserMappingStmt",
    "CreateStmt",
    "CreateTableAsStmt",
    "ViewStmt",
    "IndexStmt",
    "CreateSchemaStmt",
    "CreateSeqStmt",
    "AlterSeqStmt",
    "CreateDomainStmt",
    "AlterDomainStmt",
    "CompositeTypeStmt",
    "CreateEnumStmt",
    "AlterEnumStmt",
    "CreateRangeStmt",
    "DefineStmt",
    "CommentStmt",
    "CreateTrigStmt",
    "CreatePolicyStmt",
    "AlterPolicyStmt",
    "CreateStatsStmt",
    "AlterStatsStmt",
    "RefreshMatViewStmt",
    "ClusterStmt",
    "ReindexStmt",
    "VacuumStmt",
    "AlterObjectSchemaStmt",
    "AlterTableStmt",
    "RenameStmt",
    "AlterOwnerStmt",
    "GrantStmt",
    "AlterDefaultPrivilegesStmt",
    "CreateFunctionStmt",
    "AlterFunctionStmt",
    "RuleStmt",
    "CreatedbStmt",
    "AlterDatabaseStmt",
    "AlterDatabaseSetStmt",
    "CreateRoleStmt",
    "AlterRoleStmt",
    "AlterRoleSetStmt",
    "GrantRoleStmt",
    "ReassignOwnedStmt",
    "CreateExtensionStmt",
    "AlterExtensionStmt",
    "AlterExtensionContentsStmt",
    "AlterSystemStmt",
    "LoadStmt",
    "CheckPointStmt",
    "CreateEventTrigStmt",
    "AlterEventTrigStmt",
    "CreateFdwStmt",
    "AlterFdwStmt",
    "CreateForeignServerStmt",
    "AlterForeignServerStmt",
    "CreateUserMappingStmt",
    "AlterUserMappingStmt",
    "CreateForeignTableStmt",
    "ImportForeignSchemaStmt",
    "CreatePublicationStmt",
    "AlterPublicationStmt",
    "CreateSubscriptionStmt",
    "AlterSubscriptionStmt",
    "CreatePLangStmt",
    "CreateAmStmt",
    "CreateTransformStmt",
    "CreateCastStmt",
    "CreateConversionStmt",
    "CreateOpClassStmt",
    "CreateOpFamilyStmt",
    "AlterOpFamilyStmt",
    "AlterOperatorStmt",
    "AlterTypeStmt",
    "AlterCollationStmt",
    "AlterTSDictionaryStmt",
    "AlterTSConfigurationStmt",
    "SecLabelStmt",
    "CreateTableSpaceStmt",
    "AlterTableSpaceOptionsStmt",
    "AlterTableMoveAllStmt",
    "ConstraintsSetStmt",
    "ReturnStmt",
];

#[derive(Default)]
struct Reader {
    out: PgStatement,
    /// CTE names in scope, innermost last.
    ctes: Vec<Vec<String>>,
    /// Inside a non-ANALYZE `EXPLAIN`: nothing runs.
    not_run: usize,
}

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> &'a str {
    m.get(key).and_then(Value::as_str).unwrap_or("")
}

fn bool_of(m: &Map<String, Value>, key: &str) -> bool {
    m.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn int_of(m: &Map<String, Value>, key: &str) -> i64 {
    m.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// The `sval`s of a list of `String` nodes (a qualified name).
fn names(v: Option<&Value>) -> Vec<String> {
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
fn constant(v: &Value) -> Option<String> {
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
fn parse_bool(s: &str) -> Option<bool> {
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
fn def_bool(d: &Map<String, Value>) -> bool {
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

/// Types an `ALTER COLUMN … TYPE` may change to without losing any value.
fn lossless_type(type_name: Option<&Value>) -> bool {
    let Some(t) = type_name.and_then(Value::as_object) else {
        return false;
    };
    let n = names(t.get("names"));
    // Only the built-in types: a `public.text` domain is something else.
    let bare = match n.as_slice() {
        [only] => only.as_str(),
        [schema, name] if schema == "pg_catalog" => name.as_str(),
        _ => "",
    };
    let no_typmod = t
        .get("typmods")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    let no_array = t
        .get("array_bounds")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    no_array && no_typmod && matches!(bare, "text" | "varchar")
}

impl Reader {
    /// Raise the floor for what a statement does when it runs: nothing
    /// inside a plain `EXPLAIN` does.
    fn raise(&mut self, class: Class, reason: impl Into<String>) {
        if self.not_run == 0 {
            self.raise_planned(class, reason);
        }
    }

    /// Raise the floor even inside a plain `EXPLAIN`: planning folds
    /// immutable calls and evaluates stable ones (a `LIMIT`, a
    /// selectivity estimate), so functions and operators count there too.
    fn raise_planned(&mut self, class: Class, reason: impl Into<String>) {
        if class > self.out.floor || self.out.reason.is_empty() {
            self.out.floor = self.out.floor.max(class);
            self.out.reason = reason.into();
        }
    }

    fn unknown(&mut self, reason: String) {
        self.out.unknown.get_or_insert(reason);
    }

    /// Walk any value: nodes by their kind, bare messages by their shape.
    fn walk(&mut self, v: &Value) {
        stacker::maybe_grow(64 << 10, 1 << 20, || self.walk_here(v))
    }

    fn walk_here(&mut self, v: &Value) {
        match v {
            Value::Array(items) => {
                for i in items {
                    self.walk(i);
                }
            }
            Value::Object(m) => {
                if let Some((kind, body)) = node_of(v) {
                    return self.node(kind, body);
                }
                // Messages embedded without a Node wrapper.
                if m.contains_key("relname") && m.contains_key("relpersistence") {
                    return self.node("RangeVar", v);
                }
                if m.contains_key("funcname") && m.contains_key("agg_star") {
                    return self.node("FuncCall", v);
                }
                if m.contains_key("names") && m.contains_key("typemod") {
                    return self.node("TypeName", v);
                }
                // ALTER DEFAULT PRIVILEGES … GRANT holds its GRANT bare.
                if m.contains_key("is_grant") && m.contains_key("grantees") {
                    return self.node("GrantStmt", v);
                }
                self.fields(m, &[]);
            }
            _ => {}
        }
    }

    fn fields(&mut self, m: &Map<String, Value>, skip: &[&str]) {
        for (k, v) in m {
            if !skip.contains(&k.as_str()) {
                self.walk(v);
            }
        }
    }

    fn node(&mut self, kind: &str, body: &Value) {
        let Some(m) = body.as_object() else {
            return;
        };
        if let Some(Value::Object(with)) = m.get("with_clause") {
            return self.with_scope(kind, m, with);
        }
        self.node_body(kind, m);
    }

    /// A statement with `WITH`: CTE i sees the CTEs before it (all of them
    /// under RECURSIVE); the statement itself sees them all.
    fn with_scope(&mut self, kind: &str, m: &Map<String, Value>, with: &Map<String, Value>) {
        let ctes: Vec<&Map<String, Value>> = with
            .get("ctes")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|c| match node_of(c) {
                        Some(("CommonTableExpr", b)) => b.as_object(),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let all: Vec<String> = ctes
            .iter()
            .map(|c| str_of(c, "ctename").to_owned())
            .collect();
        let recursive = bool_of(with, "recursive");
        for (i, c) in ctes.iter().enumerate() {
            let visible = if recursive {
                all.clone()
            } else {
                all[..i].to_vec()
            };
            self.ctes.push(visible);
            self.fields(c, &["ctename"]);
            self.ctes.pop();
        }
        self.ctes.push(all);
        let mut rest = m.clone();
        rest.remove("with_clause");
        self.node_body(kind, &rest);
        self.ctes.pop();
    }

    fn relation(&mut self, m: &Map<String, Value>) {
        let schema = str_of(m, "schemaname");
        let name = str_of(m, "relname");
        if schema.is_empty() && self.ctes.iter().any(|s| s.iter().any(|c| c == name)) {
            return;
        }
        let schema = (!schema.is_empty()).then_some(schema);
        let t = super::resolve(schema, name);
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

    fn node_body(&mut self, kind: &str, m: &Map<String, Value>) {
        use Class::*;
        match kind {
            "RangeVar" => return self.relation(m),
            "FuncCall" => return self.call(m),
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
            "SelectStmt" => {
                self.raise(Read, "query (reads only)");
                if matches!(m.get("into_clause"), Some(Value::Object(_))) {
                    self.raise(Ddl, "SELECT … INTO creates a table");
                }
                if m.get("locking_clause")
                    .and_then(Value::as_array)
                    .is_some_and(|l| !l.is_empty())
                {
                    self.raise(Write, "SELECT … FOR UPDATE/SHARE locks rows");
                }
            }
            "InsertStmt" => {
                self.out.needs_walk |= self.not_run == 0
                    && matches!(m.get("on_conflict_clause"), Some(Value::Object(_)));
                self.raise(Write, "INSERT");
            }
            "UpdateStmt" | "DeleteStmt" => {
                self.out.needs_walk |= self.not_run == 0;
                let verb = if kind == "UpdateStmt" {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                match m.get("where_clause") {
                    None | Some(Value::Null) => {
                        self.raise(Destructive, format!("{verb} has no WHERE: every row"))
                    }
                    Some(w) if !mentions_columns(w) => self.raise(
                        Destructive,
                        format!("{verb} has a WHERE that names no column: every row or none"),
                    ),
                    Some(_) => self.raise(Write, verb),
                }
            }
            "MergeStmt" => {
                self.out.needs_walk |= self.not_run == 0;
                let deletes = m
                    .get("merge_when_clauses")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            node_of(c)
                                .and_then(|(_, b)| b.as_object())
                                .is_some_and(|b| int_of(b, "command_type") == 5)
                        })
                    });
                if deletes {
                    self.raise(Destructive, "MERGE … THEN DELETE removes rows");
                } else {
                    self.raise(Write, "MERGE");
                }
            }
            "CopyStmt" => {
                // The tree cannot tell `TO STDOUT` from `TO ''` (both leave
                // the file name empty): only the walk's reading decides.
                self.out.needs_walk = true;
                if bool_of(m, "is_program") {
                    self.raise(
                        Destructive,
                        "COPY … PROGRAM runs a shell command on the server",
                    );
                } else if !str_of(m, "filename").is_empty() {
                    self.raise(Privileged, "COPY to or from a file on the database server");
                } else if bool_of(m, "is_from") {
                    self.raise(Write, "COPY FROM STDIN loads rows");
                } else {
                    self.raise(Read, "COPY TO STDOUT");
                }
            }
            "ExplainStmt" => {
                // The last ANALYZE option wins, as in explain.c.
                let mut analyze = false;
                for o in m
                    .get("options")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(("DefElem", d)) = node_of(o)
                        && let Some(d) = d.as_object()
                        && str_of(d, "defname").starts_with("analy")
                    {
                        analyze = def_bool(d);
                    }
                }
                self.raise(Read, "EXPLAIN");
                if !analyze {
                    self.not_run += 1;
                    self.fields(m, &[]);
                    self.not_run -= 1;
                    return;
                }
            }
            "PrepareStmt" => {
                self.out.prepares = Some(str_of(m, "name").to_owned());
                self.raise(Read, "PREPARE");
            }
            "TransactionStmt" => {
                let k = TransactionStmtKind::try_from(int_of(m, "kind") as i32)
                    .map(|k| k.as_str_name())
                    .unwrap_or("");
                if k.ends_with("PREPARE") || k.ends_with("_PREPARED") {
                    self.raise(
                        Write,
                        "two-phase commit: a prepared transaction outlives the session",
                    );
                } else {
                    self.raise(Read, "transaction control");
                }
            }
            "ExecuteStmt" | "DeallocateStmt" | "VariableShowStmt" | "ListenStmt"
            | "UnlistenStmt" | "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt"
            | "ConstraintsSetStmt" | "ReturnStmt" => self.raise(Read, kind),
            // Both only return the session to its vetted start-up state.
            "DiscardStmt" => self.raise(Read, "DISCARD"),
            "NotifyStmt" => self.raise(Write, "NOTIFY signals other sessions"),
            "LockStmt" => self.raise(Write, "LOCK TABLE blocks other sessions"),
            "RefreshMatViewStmt" => self.raise(Write, "REFRESH MATERIALIZED VIEW"),
            "VariableSetStmt" => self.set(m),
            "CallStmt" => {
                // A procedure's body is never visible here: the call is
                // unknown unless the role lists the procedure.
                self.raise(Write, "CALL runs a procedure");
                if let Some(Value::Object(f)) = m.get("funccall") {
                    let n = names(f.get("funcname")).join(".");
                    self.out.unlisted.insert(n.clone());
                    self.out.called.insert(n);
                    self.fields(f, &["funcname"]);
                }
                return;
            }
            "DoStmt" => self.raise(Destructive, "DO runs a procedural block: any SQL"),
            "DropStmt"
            | "TruncateStmt"
            | "DropdbStmt"
            | "DropOwnedStmt"
            | "DropTableSpaceStmt"
            | "DropSubscriptionStmt"
            | "DropUserMappingStmt" => {
                self.raise(Destructive, format!("{kind}: removes objects or rows"))
            }
            "RuleStmt" => self.raise(
                Destructive,
                "CREATE RULE rewrites later statements into ones infraveil never sees",
            ),
            "AlterTableStmt" => self.raise(Ddl, "ALTER TABLE"),
            "AlterTableCmd" => self.alter_table_cmd(m),
            "RenameStmt" | "AlterObjectSchemaStmt" => {
                let key = if kind == "RenameStmt" {
                    "rename_type"
                } else {
                    "object_type"
                };
                let t = ObjectType::try_from(int_of(m, key) as i32)
                    .map(|t| t.as_str_name())
                    .unwrap_or("");
                let schema = kind == "RenameStmt" && t == "OBJECT_SCHEMA";
                if schema || TABLE_LIKE.contains(&t) {
                    self.raise(
                        Destructive,
                        "renaming or moving a table or schema breaks every program that uses its name",
                    );
                } else {
                    self.raise(Ddl, "RENAME / SET SCHEMA");
                }
            }
            "CreatePolicyStmt" | "AlterPolicyStmt" => self.raise(
                Privileged,
                "a row-level security policy decides which rows every role sees",
            ),
            "AlterOwnerStmt" | "ReassignOwnedStmt" => self.raise(
                Privileged,
                "OWNER TO hands an object and its privileges to another role",
            ),
            "GrantStmt" => {
                if grantees_public(m) {
                    self.raise(
                        Privileged,
                        "GRANT … TO PUBLIC gives every role, present and future, the privilege",
                    );
                } else {
                    self.raise(Ddl, "GRANT/REVOKE");
                }
            }
            "AlterDefaultPrivilegesStmt" => self.raise(Ddl, "ALTER DEFAULT PRIVILEGES"),
            "CreateFunctionStmt" => {
                self.create_function(m);
                self.security_definer(m);
            }
            "AlterFunctionStmt" => {
                self.raise(Ddl, "ALTER FUNCTION");
                self.security_definer(m);
            }
            "CreateExtensionStmt"
            | "AlterExtensionStmt"
            | "AlterExtensionContentsStmt"
            | "AlterSystemStmt"
            | "LoadStmt"
            | "CheckPointStmt"
            | "CreateEventTrigStmt"
            | "AlterEventTrigStmt"
            | "CreateFdwStmt"
            | "AlterFdwStmt"
            | "CreateForeignServerStmt"
            | "AlterForeignServerStmt"
            | "CreateUserMappingStmt"
            | "AlterUserMappingStmt"
            | "CreateForeignTableStmt"
            | "ImportForeignSchemaStmt"
            | "CreatePublicationStmt"
            | "AlterPublicationStmt"
            | "CreateSubscriptionStmt"
            | "AlterSubscriptionStmt"
            | "CreatePLangStmt"
            | "CreateAmStmt"
            | "CreateTransformStmt"
            | "SecLabelStmt"
            | "CreateTableSpaceStmt"
            | "AlterTableSpaceOptionsStmt"
            | "AlterTableMoveAllStmt"
            | "CreateRoleStmt"
            | "AlterRoleStmt"
            | "AlterRoleSetStmt"
            | "GrantRoleStmt"
            | "DropRoleStmt"
            | "AlterDatabaseSetStmt"
            | "AlterDatabaseStmt" => self.raise(
                Privileged,
                format!("{kind} acts on the server, roles or code"),
            ),
            k if k.ends_with("Stmt") => {
                if STATEMENT_KINDS.contains(&k) {
                    self.raise(Ddl, "schema change");
                } else {
                    self.unknown(format!("infraveil does not classify {k} statements"));
                }
            }
            _ => {}
        }
        self.fields(m, &[]);
    }

    fn security_definer(&mut self, m: &Map<String, Value>) {
        let opts = m
            .get("options")
            .or_else(|| m.get("actions"))
            .and_then(Value::as_array);
        for o in opts.into_iter().flatten() {
            if let Some(("DefElem", d)) = node_of(o)
                && let Some(d) = d.as_object()
                && str_of(d, "defname") == "security"
                && def_bool(d)
            {
                self.raise(
                    Class::Privileged,
                    "SECURITY DEFINER runs the function with its owner's privileges",
                );
            }
        }
    }

    /// A routine is as dangerous as its body: a SQL body is classified
    /// (a `BEGIN ATOMIC` body is part of the tree and walked), other
    /// languages cannot be seen into.
    fn create_function(&mut self, m: &Map<String, Value>) {
        let what = if bool_of(m, "is_procedure") {
            "PROCEDURE"
        } else {
            "FUNCTION"
        };
        self.raise(Class::Ddl, format!("CREATE {what}"));
        let mut language = "sql".to_owned();
        let mut body = Vec::new();
        for o in m
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(("DefElem", d)) = node_of(o) else {
                continue;
            };
            let Some(d) = d.as_object() else { continue };
            match str_of(d, "defname") {
                "language" => {
                    if let Some(("String", l)) = d.get("arg").and_then(node_of) {
                        language = l
                            .get("sval")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                    }
                }
                "as" => {
                    if let Some(("List", l)) = d.get("arg").and_then(node_of) {
                        body = names(l.get("items"));
                    }
                }
                _ => {}
            }
        }
        match language.as_str() {
            "sql" => {
                if what == "PROCEDURE" {
                    self.raise(
                        Class::Destructive,
                        "CREATE PROCEDURE: the body runs whatever it contains when called",
                    );
                }
                // Classified only if the walk could not read the statement
                // (it classifies bodies itself): see `reconcile`.
                if let Some(text) = body.first() {
                    self.out.sql_bodies.push((what, text.clone()));
                }
            }
            "plpgsql" | "pltcl" | "plperl" | "plv8" => self.raise(
                Class::Destructive,
                format!("CREATE {what} in {language}: the body can run any SQL when called"),
            ),
            _ => self.raise(
                Class::Privileged,
                format!("CREATE {what} in language {language} (untrusted or native code)"),
            ),
        }
    }

    fn set(&mut self, m: &Map<String, Value>) {
        let name = str_of(m, "name");
        let kind = VariableSetKind::try_from(int_of(m, "kind") as i32)
            .unwrap_or(VariableSetKind::Undefined);
        match kind {
            VariableSetKind::VarResetAll => self.raise(
                Class::Read,
                "RESET ALL returns the session to its vetted start-up settings",
            ),
            VariableSetKind::VarSetMulti => self.raise(Class::Read, "SET TRANSACTION"),
            VariableSetKind::VarReset | VariableSetKind::VarSetDefault => {
                let (class, why) = settings::classify(name, None);
                self.raise(class, format!("RESET: {why}"));
            }
            VariableSetKind::VarSetValue => {
                let values: Vec<String> = m
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| constant(v).unwrap_or_else(|| "\u{fffd}".into()))
                            .collect()
                    })
                    .unwrap_or_default();
                let (class, why) = settings::classify(name, Some(&values));
                self.raise(class, format!("SET: {why}"));
            }
            _ => {
                let (class, why) = settings::classify(name, Some(&["\u{fffd}".to_owned()]));
                self.raise(class, format!("SET: {why}"));
            }
        }
    }

    fn alter_table_cmd(&mut self, m: &Map<String, Value>) {
        use Class::*;
        let sub = AlterTableType::try_from(int_of(m, "subtype") as i32)
            .map(|t| t.as_str_name())
            .unwrap_or("AT_Unknown");
        match sub {
            "AT_DropColumn" => self.raise(Destructive, "ALTER TABLE … DROP COLUMN loses data"),
            "AT_DropConstraint" => self.raise(Destructive, "ALTER TABLE … DROP CONSTRAINT"),
            "AT_DetachPartition" | "AT_DetachPartitionFinalize" => {
                self.raise(Destructive, "ALTER TABLE … DETACH PARTITION")
            }
            "AT_SetUnLogged" => self.raise(
                Destructive,
                "SET UNLOGGED: the table's rows are lost after a crash and not replicated",
            ),
            "AT_AlterColumnType" => {
                let def = m
                    .get("def")
                    .and_then(node_of)
                    .and_then(|(_, d)| d.as_object());
                let using = def
                    .and_then(|d| d.get("raw_default"))
                    .is_some_and(|u| !u.is_null());
                if using || !lossless_type(def.and_then(|d| d.get("type_name"))) {
                    self.raise(
                        Destructive,
                        "ALTER COLUMN … TYPE rewrites every value (USING, or a type that can round or cut values)",
                    );
                } else {
                    self.raise(Ddl, "ALTER COLUMN … TYPE to a lossless type");
                }
            }
            "AT_ChangeOwner" => self.raise(Privileged, "ALTER TABLE … OWNER TO"),
            "AT_DisableTrig" | "AT_DisableTrigAll" | "AT_DisableTrigUser" | "AT_DisableRule" => {
                self.raise(
                    Privileged,
                    "disabling triggers or rules switches off checks and audit the table relies on",
                )
            }
            "AT_DisableRowSecurity" | "AT_NoForceRowSecurity" => {
                self.raise(Privileged, "ALTER TABLE … weakens row-level security")
            }
            _ => self.raise(Ddl, "ALTER TABLE"),
        }
    }
}

/// Whether a GRANT (or the GRANT inside ALTER DEFAULT PRIVILEGES) names PUBLIC.
fn grantees_public(m: &Map<String, Value>) -> bool {
    m.get("is_grant").and_then(Value::as_bool).unwrap_or(false)
        && m.get("grantees")
            .and_then(Value::as_array)
            .is_some_and(|g| {
                g.iter().any(|r| {
                    node_of(r)
                        .and_then(|(_, b)| b.as_object())
                        .is_some_and(|b| int_of(b, "roletype") == 5)
                })
            })
}

/// Whether an expression names a column (or `CURRENT OF` a cursor) at all.
fn mentions_columns(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(mentions_columns),
        Value::Object(m) => {
            if let Some((kind, _)) = node_of(v)
                && matches!(kind, "ColumnRef" | "CurrentOfExpr")
            {
                return true;
            }
            m.values().any(mentions_columns)
        }
        _ => false,
    }
}
