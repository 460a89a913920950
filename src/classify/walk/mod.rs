//! The tree walk. sqlparser's visitor takes us to every statement, query,
//! table, and expression, however deeply nested (data-modifying CTEs,
//! subqueries, `EXPLAIN ANALYZE`, `PREPARE … AS`, `COPY (query)`, SQL
//! function bodies); each node raises the statement's class to at least its
//! own. A statement kind no family here names is `unknown`.
//!
//! This file holds the walker's state and what every family shares. Each
//! statement family judges its own statements in a file of its own: `dml`
//! (rows), `session` (the session's own state), `ddl` (the schema) and
//! `admin` (maintenance and the server); `visit` has the visitor hooks.

mod admin;
mod ddl;
mod dml;
mod session;
mod visit;

use std::collections::BTreeSet;

use sqlparser::ast::{
    FunctionArg, FunctionArgExpr, Ident, ObjectName, Query, SetExpr, Statement, TableFactor,
    TableWithJoins, Visit,
};

use super::functions::{self, Call};
use super::names::{dotted, name_parts, string_literal, table_name};
use super::{Class, StatementClass, TableName, settings};

/// How deep SQL function bodies are classified (a body defining a function
/// whose body defines a function …); deeper is `unknown`.
pub(crate) const MAX_BODY_DEPTH: usize = 3;

struct CteScope {
    query: *const Query,
    names: Vec<String>,
    bodies: Vec<*const Query>,
    visible: usize,
}

pub(crate) struct Walker {
    depth: usize,
    class: Class,
    reason: String,
    /// Class and reason if every unlisted function were declared safe.
    base_class: Class,
    base_reason: String,
    functions: BTreeSet<String>,
    tables: BTreeSet<TableName>,
    /// Non-ANALYZE `EXPLAIN`s being walked: nothing inside them runs.
    explain_only: Vec<*const Statement>,
    ctes: Vec<CteScope>,
    /// `FROM f(…)` names, which the visitor reports as relations right after.
    not_relations: Vec<*const ObjectName>,
    prepares: Option<String>,
    executes: Option<String>,
    facts: Facts,
}

/// What the walk saw, for holding against PostgreSQL's own reading.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// The PostgreSQL node type this statement must be, where the walk
    /// depends on it (queries and DML).
    pub family: Option<&'static str>,
    /// Every function called, normalised (`pg_catalog.` removed).
    pub called: BTreeSet<String>,
    /// Every string literal's value.
    pub strings: BTreeSet<String>,
}

/// The PostgreSQL statement node a sqlparser statement must correspond to.
fn family(s: &Statement) -> Option<&'static str> {
    Some(match s {
        // `WITH … INSERT/UPDATE/DELETE/MERGE` is a query in sqlparser's tree.
        Statement::Query(q) => match &*q.body {
            SetExpr::Insert(_) => "InsertStmt",
            SetExpr::Update(_) => "UpdateStmt",
            SetExpr::Delete(_) => "DeleteStmt",
            SetExpr::Merge(_) => "MergeStmt",
            _ => "SelectStmt",
        },
        Statement::Insert(_) => "InsertStmt",
        Statement::Update(_) => "UpdateStmt",
        Statement::Delete(_) => "DeleteStmt",
        Statement::Merge(_) => "MergeStmt",
        Statement::Explain { .. } => "ExplainStmt",
        Statement::Copy { .. } => "CopyStmt",
        Statement::Prepare { .. } => "PrepareStmt",
        Statement::Execute { .. } => "ExecuteStmt",
        Statement::Truncate(_) => "TruncateStmt",
        Statement::Call(_) => "CallStmt",
        _ => return None,
    })
}

impl Walker {
    pub(crate) fn classify(stmt: &Statement, depth: usize) -> (StatementClass, Facts) {
        let mut w = Walker {
            depth,
            class: Class::Read,
            reason: String::new(),
            base_class: Class::Read,
            base_reason: String::new(),
            functions: BTreeSet::new(),
            tables: BTreeSet::new(),
            explain_only: Vec::new(),
            ctes: Vec::new(),
            not_relations: Vec::new(),
            prepares: None,
            executes: None,
            facts: Facts {
                family: family(stmt),
                ..Facts::default()
            },
        };
        let _ = stmt.visit(&mut w);
        if w.reason.is_empty() {
            w.reason = "reads only".into();
        }
        if w.base_reason.is_empty() {
            w.base_reason = "reads only".into();
        }
        // On its own, EXECUTE is as unknown as the statement it names; the
        // policy engine replaces this with the class remembered from PREPARE.
        let execute_args = w.class;
        if let Some(name) = &w.executes {
            w.class = Class::Unknown;
            w.reason = format!(
                "EXECUTE {name}: runs a prepared statement; its class is the one its PREPARE had"
            );
        }
        let class = StatementClass {
            execute_args,
            names: Default::default(),
            class: w.class,
            tables: w.tables.into_iter().collect(),
            reason: w.reason,
            functions: w.functions.into_iter().collect(),
            base_class: w.base_class,
            base_reason: w.base_reason,
            prepares: w.prepares,
            executes: w.executes,
            // Only PostgreSQL's reading says (see `StatementClass::hold_against`).
            session: super::SessionEffect::Unknown,
            // Set against both readings' calls, there too.
            outlives_rollback: false,
            changes_rows: false,
            explainable: false,
        };
        (class, w.facts)
    }

    /// Raise the class to at least `class`. The first reason at the highest
    /// class is kept.
    fn raise(&mut self, class: Class, reason: impl Into<String>) {
        if self.explain_only.is_empty() {
            self.raise_planned(class, reason);
        }
    }

    /// Raise even inside a plain `EXPLAIN`: for what planning itself can
    /// run (function calls, see `unlisted_function`).
    fn raise_planned(&mut self, class: Class, reason: impl Into<String>) {
        let reason = reason.into();
        if class > self.base_class || self.base_reason.is_empty() {
            self.base_class = self.base_class.max(class);
            self.base_reason = reason.clone();
        }
        if class > self.class || self.reason.is_empty() {
            self.class = self.class.max(class);
            self.reason = reason;
        }
    }

    /// Functions count inside a plain `EXPLAIN` too: the planner folds
    /// immutable calls and evaluates stable ones to estimate (a `LIMIT`, a
    /// selectivity), so planning alone can run them.
    fn unlisted_function(&mut self, name: String) {
        if self.class < Class::Unknown {
            self.class = Class::Unknown;
            self.reason = format!(
                "calls {name}(), which infraveil does not know to be free of side effects \
                 (if it is, whoever maintains the infraveil policies can list it in the role's safe_functions)"
            );
        }
        self.functions.insert(name);
    }

    fn table(&mut self, n: &ObjectName) {
        match table_name(n) {
            Some(t) => {
                self.tables.insert(t);
            }
            None => self.raise(Class::Unknown, format!("cannot resolve the name {n}")),
        }
    }

    /// A table a statement writes to. Writing a system catalog is
    /// privileged: most are superuser-only, and the writable views among
    /// them are settings in disguise (`UPDATE pg_settings` runs
    /// `set_config`, so it can switch off `standard_conforming_strings`
    /// or change `search_path` past every check on `SET`).
    fn written(&mut self, verb: &str, n: &ObjectName) {
        if let Some(t) = table_name(n)
            && matches!(
                t.schema.as_str(),
                "pg_catalog" | "information_schema" | "pg_toast"
            )
        {
            self.raise(
                Class::Privileged,
                format!(
                    "{verb} writes the system catalog {t} (pg_settings runs set_config; the rest is superuser-only)"
                ),
            );
        }
    }

    fn table_with_joins(&mut self, t: &TableWithJoins) {
        if let TableFactor::Table { name, .. } = &t.relation {
            self.table(name);
        }
    }

    fn call(&mut self, name: &ObjectName, args: &[FunctionArg]) {
        let n = dotted(name);
        let bare = n.strip_prefix("pg_catalog.").unwrap_or(&n);
        self.facts.called.insert(bare.to_owned());
        if bare == "set_config" {
            return self.set_config(args);
        }
        match functions::lookup(bare) {
            Call::ReadOnly => {}
            Call::Effect(class, why) => {
                self.raise_planned(class, format!("calls {bare}(), which {why}"))
            }
            Call::Unlisted => self.unlisted_function(n),
        }
    }

    /// `set_config(name, value, local)`: as dangerous as `SET name`.
    fn set_config(&mut self, args: &[FunctionArg]) {
        let arg = |i: usize| match args.get(i) {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) => string_literal(e),
            _ => None,
        };
        match arg(0) {
            Some(name) => {
                // A value that is not a literal is judged as an unknown value.
                let value = arg(1).map(|v| vec![v]).unwrap_or_default();
                let (class, why) = settings::classify(&name, Some(&value));
                self.raise(class, format!("set_config: {why}"));
            }
            None => self.raise(
                Class::Privileged,
                "set_config() with a setting name that is not a literal could change the role",
            ),
        }
    }

    /// Class of a statement node itself (its children are visited after).
    /// Each family names its own statements (no statement is in two); one
    /// that none names is `unknown`.
    fn statement(&mut self, s: &Statement) {
        let known = self.dml_statement(s)
            || self.session_statement(s)
            || self.ddl_statement(s)
            || self.admin_statement(s);
        if !known {
            let kind = variant_name(s);
            self.raise(
                Class::Unknown,
                format!("infraveil does not classify {kind} statements"),
            );
        }
    }

    fn relation(&mut self, n: &ObjectName) {
        if let Some(p) = name_parts(n)
            && let [single] = p.as_slice()
            && self.is_cte(single)
        {
            return;
        }
        self.table(n);
    }

    /// `TABLE t` (alone, in a subquery, a CTE, a UNION branch or a cursor)
    /// reads `t`; the visitor does not report it as a relation.
    fn table_commands(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(t) => {
                if let Some(name) = &t.table_name {
                    let parts: Vec<Ident> = t.schema_name.iter().chain([name]).cloned().collect();
                    self.relation(&ObjectName::from(parts));
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.table_commands(left);
                self.table_commands(right);
            }
            _ => {}
        }
    }

    fn is_cte(&self, name: &str) -> bool {
        self.ctes.iter().any(|s| {
            s.names[..s.visible.min(s.names.len())]
                .iter()
                .any(|n| n == name)
        })
    }
}

/// The enum variant name of a statement, from its `Debug` output but
/// without formatting the whole tree.
fn variant_name(s: &Statement) -> String {
    struct Head(String);
    impl std::fmt::Write for Head {
        fn write_str(&mut self, x: &str) -> std::fmt::Result {
            for c in x.chars() {
                if !c.is_alphanumeric() {
                    return Err(std::fmt::Error);
                }
                self.0.push(c);
            }
            Ok(())
        }
    }
    let mut h = Head(String::new());
    let _ = std::fmt::write(&mut h, format_args!("{s:?}"));
    h.0
}
