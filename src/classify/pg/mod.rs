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
//!
//! Each statement family is judged in a file of its own (`dml`, `session`,
//! `ddl`, `admin`), expression nodes in `expr`; `json` reads fields.

mod admin;
mod ddl;
mod dml;
mod expr;
mod json;
mod session;

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use self::json::{bool_of, int_of, node_of, str_of};
use super::{Class, TableName};

pub(crate) use self::expr::is_builtin_operator;

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
    /// Runs an UPDATE, DELETE, MERGE or upsert somewhere in its tree: it
    /// changes rows that exist (what row limits size).
    pub changes_rows: bool,
    /// `PREPARE name AS …`: the name.
    pub prepares: Option<String>,
    /// What it does to the session's prepared statements and portals.
    pub session: super::SessionEffect,
    /// Names user objects of the database could take over.
    pub names: super::objects::Names,
    /// Quoted SQL-language routine bodies (`FUNCTION`/`PROCEDURE`, text).
    pub sql_bodies: Vec<(&'static str, String)>,
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

/// Each statement's own text, as PostgreSQL's parser splits `sql`.
pub(crate) fn split(sql: &str) -> Result<Vec<String>, String> {
    stacker::maybe_grow(RED_ZONE, STACK, || {
        pg_query::split_with_parser(sql)
            .map(|v| v.into_iter().map(str::to_owned).collect())
            .map_err(|e| e.to_string())
    })
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

/// What a family's reader did with a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Not a node of this family.
    Other,
    /// Judged; its fields are walked next.
    Judged,
    /// Judged, and its fields walked already (or deliberately not walked).
    Walked,
}

/// One family's judge of the nodes it names (see `Reader::node_body`).
type Family = fn(&mut Reader, &str, &Map<String, Value>) -> Seen;

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

    /// Judge a node by its kind, then walk its fields. Each family names
    /// its own kinds (no kind is in two); a statement kind none names is a
    /// schema change if it is in `STATEMENT_KINDS` and `unknown` if not.
    fn node_body(&mut self, kind: &str, m: &Map<String, Value>) {
        let families: [Family; 5] = [
            Self::expression_node,
            Self::dml_statement,
            Self::session_statement,
            Self::ddl_statement,
            Self::admin_statement,
        ];
        let mut seen = Seen::Other;
        for family in families {
            seen = family(self, kind, m);
            if seen != Seen::Other {
                break;
            }
        }
        if seen == Seen::Other && kind.ends_with("Stmt") {
            if STATEMENT_KINDS.contains(&kind) {
                self.raise(Class::Ddl, "schema change");
            } else {
                self.unknown(format!("infraveil does not classify {kind} statements"));
            }
        }
        if seen != Seen::Walked {
            self.fields(m, &[]);
        }
    }
}
