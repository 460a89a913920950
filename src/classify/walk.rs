//! The tree walk. sqlparser's visitor takes us to every statement, query,
//! table, and expression, however deeply nested (data-modifying CTEs,
//! subqueries, `EXPLAIN ANALYZE`, `PREPARE … AS`, `COPY (query)`, SQL
//! function bodies); each node raises the statement's class to at least its
//! own. A statement kind this file does not name is `unknown`.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTableOperation, CopySource, CopyTarget, CreateFunctionBody, Expr, FromTable, FunctionArg,
    FunctionArgExpr, FunctionArguments, Ident, MergeAction, ObjectName, ObjectType, OnConflict,
    OnConflictAction, OnInsert, Query, Reset, Select, Set, SetExpr, Statement, TableFactor,
    TableObject, TableWithJoins, UpdateTableFromKind, Value, Visit, Visitor,
};

use super::bounds::{Target, bounded};
use super::functions::{self, Call};
use super::names::{dotted, name_parts, normalize_ident, string_literal, table_name};
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

    fn dml_bound(
        &mut self,
        verb: &str,
        target: Option<(&ObjectName, Option<&Ident>)>,
        others: &[&TableFactor],
        cond: Option<&Expr>,
    ) {
        let Some((name, alias)) = target else {
            return self.raise(
                Class::Unknown,
                format!("{verb} target is not a plain table"),
            );
        };
        let resolved = table_name(name);
        let t = resolved
            .as_ref()
            .map(|t| t.to_string())
            .unwrap_or_else(|| name.to_string());
        let mut qualifiers = vec![dotted(name)];
        if let Some(last) = name_parts(name).and_then(|p| p.last().cloned()) {
            qualifiers.push(last);
        }
        if let Some(a) = alias {
            qualifiers.push(normalize_ident(a));
        }
        // Another FROM/USING item that is the same table is the target
        // under a second name: `t.id = t2.id` compares a row with itself.
        for o in others {
            match o {
                TableFactor::Table {
                    name: n, alias: a, ..
                } if table_name(n).is_some_and(|x| Some(&x) == resolved.as_ref()) => match a {
                    Some(a) => qualifiers.push(normalize_ident(&a.name)),
                    None => qualifiers.push(dotted(n)),
                },
                TableFactor::Derived {
                    subquery,
                    alias: Some(a),
                    ..
                } if reads(subquery, resolved.as_ref()) => {
                    qualifiers.push(normalize_ident(&a.name))
                }
                _ => {}
            }
        }
        let target = Target {
            qualifiers,
            table: resolved.clone(),
            unqualified_is_target: others.is_empty(),
        };
        match cond {
            None => self.raise(
                Class::Destructive,
                format!("{verb} on {t} has no WHERE: every row"),
            ),
            Some(c) if !bounded(c, &target) => self.raise(
                Class::Destructive,
                format!(
                    "{verb} on {t} has a WHERE that does not restrict {t}'s rows on every branch"
                ),
            ),
            Some(_) => self.raise(Class::Write, format!("{verb} on {t}")),
        }
    }

    fn create_function(
        &mut self,
        what: &str,
        language: Option<&Ident>,
        body: Option<&CreateFunctionBody>,
    ) {
        let lang = language
            .map(normalize_ident)
            .unwrap_or_else(|| "sql".into());
        self.raise(Class::Ddl, format!("CREATE {what}"));
        match lang.as_str() {
            "sql" => {
                // A quoted body is parsed here; a BEGIN ATOMIC body is part
                // of the tree and the visitor walks it.
                if let Some(
                    CreateFunctionBody::AsBeforeOptions { body, .. }
                    | CreateFunctionBody::AsAfterOptions(body),
                ) = body
                    && let Some(text) = string_literal(body)
                {
                    self.body(what, &text);
                }
            }
            "plpgsql" | "pltcl" | "plperl" | "plv8" => self.raise(
                Class::Destructive,
                format!("CREATE {what} in {lang}: the body can run any SQL, including dynamic SQL, when called; infraveil cannot see inside it"),
            ),
            _ => self.raise(
                Class::Privileged,
                format!("CREATE {what} in language {lang} (untrusted or native code)"),
            ),
        }
    }

    /// Classify the text of a SQL-language function body; the function is
    /// at least as dangerous as what it runs.
    fn body(&mut self, what: &str, text: &str) {
        if self.depth >= MAX_BODY_DEPTH {
            return self.raise(Class::Unknown, "function bodies nested too deeply");
        }
        let inner = super::classify_at(text, self.depth + 1);
        for s in inner.statements {
            for t in s.tables {
                self.tables.insert(t);
            }
            for f in s.functions {
                self.unlisted_function(f);
            }
            self.raise(s.base_class, format!("{what} body: {}", s.base_reason));
        }
    }

    /// Class of a statement node itself (its children are visited after).
    fn statement(&mut self, s: &Statement) {
        use Class::*;
        match s {
            Statement::Query(_) => self.raise(Read, "query (reads only)"),
            Statement::Insert(i) => {
                if let TableObject::TableName(n) = &i.table {
                    self.table(n);
                    self.raise(Write, format!("INSERT into {}", dotted(n)));
                    self.written("INSERT", n);
                    // Upserting rows read from the table itself can rewrite
                    // every row of it.
                    if let Some(OnInsert::OnConflict(OnConflict {
                        action: OnConflictAction::DoUpdate(_),
                        ..
                    })) = &i.on
                        && let Some(src) = &i.source
                        && reads(src, table_name(n).as_ref())
                    {
                        self.raise(
                            Destructive,
                            format!(
                                "INSERT … SELECT from {} ON CONFLICT DO UPDATE can rewrite every row of it",
                                dotted(n)
                            ),
                        );
                    }
                } else {
                    self.raise(Unknown, "INSERT into a table function");
                }
            }
            Statement::Update(u) => {
                self.table_with_joins(&u.table);
                let target = match &u.table.relation {
                    TableFactor::Table { name, alias, .. } => {
                        self.written("UPDATE", name);
                        Some((name, alias.as_ref().map(|a| &a.name)))
                    }
                    _ => None,
                };
                let mut others: Vec<&TableFactor> =
                    u.table.joins.iter().map(|j| &j.relation).collect();
                if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) =
                    &u.from
                {
                    others.extend(factors(f));
                }
                self.dml_bound("UPDATE", target, &others, u.selection.as_ref());
            }
            Statement::Delete(d) => {
                let from = match &d.from {
                    FromTable::WithFromKeyword(f) | FromTable::WithoutKeyword(f) => f,
                };
                for t in from {
                    self.table_with_joins(t);
                    if let TableFactor::Table { name, .. } = &t.relation {
                        self.written("DELETE", name);
                    }
                }
                let target = match from.first().map(|t| &t.relation) {
                    Some(TableFactor::Table { name, alias, .. }) if d.tables.is_empty() => {
                        Some((name, alias.as_ref().map(|a| &a.name)))
                    }
                    _ => None,
                };
                let mut others: Vec<&TableFactor> = factors(from).skip(1).collect();
                if let Some(u) = &d.using {
                    others.extend(factors(u));
                }
                self.dml_bound("DELETE", target, &others, d.selection.as_ref());
            }
            Statement::Merge(m) => {
                let target = match &m.table {
                    TableFactor::Table { name, alias, .. } => {
                        self.table(name);
                        self.written("MERGE", name);
                        Some((name, alias.as_ref().map(|a| &a.name)))
                    }
                    _ => None,
                };
                let deletes = m
                    .clauses
                    .iter()
                    .any(|c| matches!(c.action, MergeAction::Delete { .. }));
                let updates = m
                    .clauses
                    .iter()
                    .any(|c| matches!(c.action, MergeAction::Update(_)));
                if deletes {
                    self.raise(Destructive, "MERGE … THEN DELETE removes rows");
                } else if updates {
                    self.dml_bound("MERGE … UPDATE", target, &[&m.source], Some(&m.on));
                } else {
                    self.raise(Write, "MERGE");
                }
            }
            Statement::Copy {
                source,
                to,
                target,
                payload,
                ..
            } => {
                if let CopySource::Table { table_name, .. } = source {
                    self.table(table_name);
                    if !*to {
                        self.written("COPY FROM", table_name);
                    }
                }
                if payload.is_some() {
                    return self.raise(
                        Unknown,
                        "text after COPY … FROM STDIN in one query string: PostgreSQL reads it as SQL",
                    );
                }
                match (target, to) {
                    (CopyTarget::Program { .. }, _) => self.raise(
                        Destructive,
                        "COPY … PROGRAM runs a shell command on the database server",
                    ),
                    (CopyTarget::File { .. }, _) => {
                        self.raise(Privileged, "COPY to or from a file on the database server")
                    }
                    (CopyTarget::Stdin, false) => self.raise(Write, "COPY FROM STDIN loads rows"),
                    (CopyTarget::Stdout, true) => self.raise(Read, "COPY TO STDOUT"),
                    _ => self.raise(Unknown, "COPY in an unexpected direction"),
                }
            }
            Statement::Explain {
                analyze, options, ..
            } => {
                // PostgreSQL's grammar takes ANALYSE too, and the last
                // ANALYZE option of a list wins (explain.c).
                let listed = options
                    .iter()
                    .flatten()
                    .rfind(|o| {
                        let n = o.name.value.to_ascii_lowercase();
                        n == "analyze" || n == "analyse"
                    })
                    .map(|o| !is_false(o.arg.as_ref()));
                let analyze = listed.unwrap_or(*analyze);
                if analyze {
                    self.raise(Read, "EXPLAIN ANALYZE runs the statement");
                } else {
                    self.raise(Read, "EXPLAIN without ANALYZE does not run the statement");
                    self.explain_only.push(s);
                }
            }
            Statement::ExplainTable { .. } => self.raise(Read, "describes a table"),
            Statement::Prepare { name, .. } => {
                self.raise(Read, "PREPARE");
                self.prepares = Some(normalize_ident(name));
            }
            Statement::Execute {
                name: Some(name),
                immediate: false,
                ..
            } => {
                self.raise(Read, "EXECUTE");
                self.executes = Some(dotted(name));
            }
            Statement::Deallocate { .. } => self.raise(Read, "DEALLOCATE"),
            Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. } => self.raise(Read, "transaction control"),
            Statement::ShowVariable { .. }
            | Statement::ShowVariables { .. }
            | Statement::ShowStatus { .. }
            | Statement::ShowTables { .. }
            | Statement::ShowColumns { .. }
            | Statement::ShowFunctions { .. }
            | Statement::ShowSchemas { .. }
            | Statement::ShowDatabases { .. }
            | Statement::ShowViews { .. } => self.raise(Read, "SHOW"),
            Statement::Declare { .. } => self.raise(Read, "DECLARE cursor"),
            Statement::Fetch { .. } => self.raise(Read, "FETCH from a cursor"),
            Statement::Close { .. } => self.raise(Read, "CLOSE cursor"),
            Statement::LISTEN { .. } | Statement::UNLISTEN { .. } => {
                self.raise(Read, "LISTEN/UNLISTEN")
            }
            Statement::NOTIFY { .. } => self.raise(Write, "NOTIFY signals other sessions"),
            // Start-up role parameters are refused, so a reset can only
            // return the session to its upstream login: the pool resets
            // `DISCARD ALL` and `RESET ALL` are harmless.
            Statement::Discard { .. } => self.raise(Read, "DISCARD"),
            Statement::Set(set) => self.set(set),
            Statement::Reset(r) => match &r.reset {
                Reset::ALL => self.raise(Read, "RESET ALL returns to the start-up settings"),
                Reset::SessionAuthorization => self.raise(
                    Privileged,
                    "RESET SESSION AUTHORIZATION changes the session's role",
                ),
                Reset::ConfigurationParameter(n) => {
                    let (class, why) = settings::classify(&dotted(n), None);
                    self.raise(class, format!("RESET: {why}"));
                }
            },
            Statement::Lock(l) => {
                for t in &l.tables {
                    self.table(&t.name);
                }
                self.raise(Write, "LOCK TABLE blocks other sessions");
            }
            Statement::Call(f) => {
                // Its body is never visible here: unknown unless the role
                // lists the procedure in safe_functions.
                self.raise(Write, format!("CALL {} runs a procedure", dotted(&f.name)));
                self.unlisted_function(dotted(&f.name));
            }
            Statement::Truncate(t) => {
                for n in &t.table_names {
                    self.table(&n.name);
                    self.written("TRUNCATE", &n.name);
                }
                self.raise(Destructive, "TRUNCATE removes every row");
            }
            Statement::Drop {
                object_type, names, ..
            } => {
                if matches!(
                    object_type,
                    ObjectType::Table | ObjectType::View | ObjectType::MaterializedView
                ) {
                    for n in names {
                        self.table(n);
                    }
                }
                self.raise(Destructive, format!("DROP {object_type}"));
            }
            Statement::DropFunction(_)
            | Statement::DropProcedure { .. }
            | Statement::DropTrigger(_)
            | Statement::DropPolicy(_)
            | Statement::DropRule(_)
            | Statement::DropDomain(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_) => self.raise(Destructive, "DROP"),
            Statement::AlterTable(a) => {
                self.table(&a.name);
                for op in &a.operations {
                    self.alter_table(op);
                }
            }
            Statement::CreateTable(c) => {
                self.table(&c.name);
                self.raise(Ddl, "CREATE TABLE");
            }
            Statement::CreateView(v) => {
                self.table(&v.name);
                self.raise(Ddl, "CREATE VIEW");
            }
            Statement::CreateIndex(i) => {
                self.table(&i.table_name);
                self.raise(Ddl, "CREATE INDEX");
            }
            Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateType { .. }
            | Statement::CreateTrigger(_)
            | Statement::CreatePolicy(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::CreateAggregate(_)
            | Statement::CreateCollation(_)
            | Statement::Comment { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::AlterDefaultPrivileges(_)
            | Statement::AlterSchema(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterPolicy(_)
            | Statement::AlterTrigger(_)
            | Statement::AlterFunction(_) => self.raise(Ddl, "schema change"),
            Statement::CreateRule(_) => self.raise(
                Destructive,
                "CREATE RULE rewrites later statements into ones infraveil never sees",
            ),
            Statement::CreateFunction(f) => {
                self.create_function("FUNCTION", f.language.as_ref(), f.function_body.as_ref())
            }
            Statement::CreateProcedure { language, .. } => {
                // Procedure bodies are quoted text in PostgreSQL; sqlparser
                // parses them as its own dialect's blocks, so judge by
                // language alone (a SQL procedure can do anything CALL can).
                self.create_function("PROCEDURE", language.as_ref(), None);
                self.raise(
                    Destructive,
                    "CREATE PROCEDURE: the body runs whatever it contains when called",
                );
            }
            Statement::Vacuum(v) => {
                if let Some(n) = &v.table_name {
                    self.table(n);
                }
                self.raise(Ddl, "VACUUM (maintenance)");
            }
            Statement::Analyze(_) => self.raise(Ddl, "ANALYZE (maintenance)"),
            Statement::RefreshMaterializedView(_) => self.raise(Write, "REFRESH MATERIALIZED VIEW"),
            Statement::CreateExtension(_) => self.raise(
                Privileged,
                "CREATE EXTENSION installs code into the database",
            ),
            Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::GrantRole(_)
            | Statement::RevokeRole(_) => self.raise(Privileged, "role or membership change"),
            Statement::CreateServer(_)
            | Statement::CreateForeignTable(_)
            | Statement::CreateForeignDataWrapper(_)
            | Statement::CreateUserMapping(_) => self.raise(
                Privileged,
                "foreign server objects reach outside the database",
            ),
            Statement::Load { .. } => self.raise(Privileged, "LOAD loads a shared library"),
            other => {
                let kind = variant_name(other);
                self.raise(
                    Unknown,
                    format!("infraveil does not classify {kind} statements"),
                );
            }
        }
    }

    fn set(&mut self, set: &Set) {
        use Class::*;
        match set {
            // `SET x TO DEFAULT` (the keyword; PostgreSQL's `VAR_SET_DEFAULT`)
            // is a `RESET`; a quoted `'default'` is just a string.
            Set::SingleAssignment {
                variable, values, ..
            } if matches!(values.as_slice(), [Expr::Identifier(i)]
                if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default")) =>
            {
                let (class, why) = settings::classify(&dotted(variable), None);
                self.raise(class, format!("SET: {why}"));
            }
            Set::SingleAssignment {
                variable, values, ..
            } => {
                let values: Vec<String> = values.iter().map(setting_value).collect();
                let (class, why) = settings::classify(&dotted(variable), Some(&values));
                self.raise(class, format!("SET: {why}"));
            }
            Set::ParenthesizedAssignments { variables, .. } => {
                for v in variables {
                    let (class, why) = settings::classify(&dotted(v), Some(&[]));
                    self.raise(class, format!("SET: {why}"));
                }
            }
            Set::MultipleAssignments { assignments } => {
                for a in assignments {
                    let values = [setting_value(&a.value)];
                    let (class, why) = settings::classify(&dotted(&a.name), Some(&values));
                    self.raise(class, format!("SET: {why}"));
                }
            }
            Set::SetRole { .. } => self.raise(Privileged, "SET ROLE changes the session's role"),
            Set::SetSessionAuthorization(_) => self.raise(
                Privileged,
                "SET SESSION AUTHORIZATION changes the session's role",
            ),
            Set::SetTimeZone { .. } => self.raise(Read, "SET TIME ZONE"),
            Set::SetTransaction { .. } => self.raise(Read, "SET TRANSACTION"),
            Set::SetNames { charset_name, .. } => {
                let (class, why) = settings::classify(
                    "client_encoding",
                    Some(std::slice::from_ref(&charset_name.value)),
                );
                self.raise(class, format!("SET NAMES: {why}"));
            }
            Set::SetNamesDefault {} => {
                let (class, why) = settings::classify("client_encoding", None);
                self.raise(class, format!("SET NAMES: {why}"));
            }
            Set::SetSessionParam(_) => self.raise(Unknown, "SET of a session parameter"),
        }
    }

    fn alter_table(&mut self, op: &AlterTableOperation) {
        use AlterTableOperation as A;
        use Class::*;
        match op {
            A::DropColumn { .. } => self.raise(Destructive, "ALTER TABLE … DROP COLUMN loses data"),
            A::DropConstraint { .. } | A::DropPrimaryKey { .. } | A::DropForeignKey { .. } => {
                self.raise(Destructive, "ALTER TABLE … DROP CONSTRAINT")
            }
            A::DropIndex { .. }
            | A::DropPartitions { .. }
            | A::DetachPartition { .. }
            | A::DetachPartitionOf { .. } => self.raise(Destructive, "ALTER TABLE … DROP/DETACH"),
            A::OwnerTo { .. } => self.raise(Privileged, "ALTER TABLE … OWNER TO"),
            A::DisableRowLevelSecurity | A::NoForceRowLevelSecurity => {
                self.raise(Privileged, "ALTER TABLE … weakens row-level security")
            }
            A::AddConstraint { .. }
            | A::AddColumn { .. }
            | A::DisableRule { .. }
            | A::DisableTrigger { .. }
            | A::AttachPartition { .. }
            | A::AttachPartitionOf { .. }
            | A::EnableAlwaysRule { .. }
            | A::EnableAlwaysTrigger { .. }
            | A::EnableReplicaRule { .. }
            | A::EnableReplicaTrigger { .. }
            | A::EnableRowLevelSecurity
            | A::ForceRowLevelSecurity
            | A::EnableRule { .. }
            | A::EnableTrigger { .. }
            | A::ReplicaIdentity { .. }
            | A::RenameColumn { .. }
            | A::RenameTable { .. }
            | A::RenameConstraint { .. }
            | A::AlterColumn { .. }
            | A::SetLogged
            | A::SetUnlogged
            | A::ValidateConstraint { .. }
            | A::Inherit { .. }
            | A::NoInherit { .. }
            | A::SetOptionsParens { .. }
            | A::ResetOptions { .. } => self.raise(Ddl, "ALTER TABLE"),
            _ => self.raise(
                Unknown,
                "ALTER TABLE with an operation infraveil does not classify",
            ),
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

/// Whether `q` reads the table `t` anywhere.
fn reads(q: &Query, t: Option<&TableName>) -> bool {
    let Some(t) = t else { return true };
    sqlparser::ast::visit_relations(q, |r| {
        if table_name(r).as_ref() == Some(t) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .is_break()
}

/// Every table factor of a FROM list, joins included, in order.
fn factors(from: &[TableWithJoins]) -> impl Iterator<Item = &TableFactor> {
    from.iter()
        .flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation)))
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

fn is_false(arg: Option<&Expr>) -> bool {
    match arg {
        None => false,
        Some(Expr::Value(v)) => match &v.value {
            Value::Boolean(b) => !b,
            Value::Number(n, _) => n == "0",
            Value::SingleQuotedString(s) => {
                matches!(
                    s.to_ascii_lowercase().as_str(),
                    "false" | "off" | "0" | "no"
                )
            }
            _ => false,
        },
        Some(Expr::Identifier(i)) => {
            matches!(
                i.value.to_ascii_lowercase().as_str(),
                "false" | "off" | "no"
            )
        }
        _ => false,
    }
}

/// A `SET` value as text: `'UTF8'` → `UTF8`, `"$user"` → `$user`.
fn setting_value(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => normalize_ident(i),
        other => string_literal(other).unwrap_or_else(|| other.to_string()),
    }
}

impl Visitor for Walker {
    type Break = ();

    fn pre_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        self.statement(s);
        ControlFlow::Continue(())
    }

    fn post_visit_statement(&mut self, s: &Statement) -> ControlFlow<()> {
        if self
            .explain_only
            .last()
            .is_some_and(|p| std::ptr::eq(*p, s))
        {
            self.explain_only.pop();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        // Entering the i-th CTE body: only the CTEs before it are in scope
        // (all of them for WITH RECURSIVE).
        if let Some(top) = self.ctes.last_mut()
            && let Some(i) = top.bodies.iter().position(|b| std::ptr::eq(*b, q))
        {
            top.visible = top.visible.max(i);
        }
        if let Some(with) = &q.with {
            let names: Vec<String> = with
                .cte_tables
                .iter()
                .map(|c| normalize_ident(&c.alias.name))
                .collect();
            let visible = if with.recursive { names.len() } else { 0 };
            self.ctes.push(CteScope {
                query: q,
                bodies: with
                    .cte_tables
                    .iter()
                    .map(|c| &*c.query as *const Query)
                    .collect(),
                names,
                visible,
            });
        }
        if !q.locks.is_empty() {
            self.raise(Class::Write, "SELECT … FOR UPDATE/SHARE locks rows");
        }
        self.table_commands(&q.body);
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if self.ctes.last().is_some_and(|s| std::ptr::eq(s.query, q)) {
            self.ctes.pop();
        }
        if let Some(top) = self.ctes.last_mut()
            && let Some(i) = top.bodies.iter().position(|b| std::ptr::eq(*b, q))
        {
            top.visible = top.visible.max(i + 1);
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        if let Some(into) = &s.into {
            let mut created = Vec::new();
            for t in &into.targets {
                match t {
                    Expr::Identifier(i) => created.push(ObjectName::from(vec![i.clone()])),
                    Expr::CompoundIdentifier(p) => created.push(ObjectName::from(p.clone())),
                    _ => {}
                }
            }
            for n in &created {
                self.table(n);
            }
            let names: Vec<String> = created.iter().map(dotted).collect();
            self.raise(
                Class::Ddl,
                format!("SELECT … INTO creates table {}", names.join(", ")),
            );
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        match t {
            // `FROM f(…)`: the visitor reports `f` as a relation next.
            TableFactor::Table {
                name,
                args: Some(args),
                ..
            } => {
                self.not_relations.push(name);
                self.call(name, &args.args);
            }
            TableFactor::Function { name, args, .. } => self.call(name, args),
            TableFactor::UNNEST { .. } => {
                self.facts.called.insert("unnest".to_owned());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, n: &ObjectName) -> ControlFlow<()> {
        if let Some(i) = self.not_relations.iter().position(|p| std::ptr::eq(*p, n)) {
            self.not_relations.swap_remove(i);
            return ControlFlow::Continue(());
        }
        self.relation(n);
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        // Syntax sqlparser keeps as its own nodes and PostgreSQL's grammar
        // turns into function calls: record the call PostgreSQL will make.
        let builtin = match e {
            Expr::Floor { .. } => Some("floor"),
            Expr::Ceil { .. } => Some("ceil"),
            Expr::AtTimeZone { .. } => Some("timezone"),
            Expr::Extract { .. } => Some("extract"),
            Expr::Substring { .. } => Some("substring"),
            Expr::Position { .. } => Some("position"),
            Expr::Overlay { .. } => Some("overlay"),
            Expr::Trim { .. } => Some("btrim"),
            _ => None,
        };
        if let Some(name) = builtin {
            self.facts.called.insert(name.to_owned());
        }
        match e {
            Expr::Function(f) => match &f.args {
                FunctionArguments::List(l) => self.call(&f.name, &l.args),
                _ => self.call(&f.name, &[]),
            },
            Expr::BinaryOp {
                op: sqlparser::ast::BinaryOperator::PGCustomBinaryOperator(op),
                ..
            } if !(op.len() == 2
                && op[0].eq_ignore_ascii_case("pg_catalog")
                && super::pg::is_builtin_operator(&op[1])) =>
            {
                self.raise(
                    Class::Unknown,
                    format!("OPERATOR({}) may call any function", op.join(".")),
                )
            }
            Expr::BinaryOp {
                op: sqlparser::ast::BinaryOperator::Custom(op),
                ..
            } if !super::pg::is_builtin_operator(op) => self.raise(
                Class::Unknown,
                format!(
                    "{op} is not one of PostgreSQL's built-in operators: user code, or text PostgreSQL reads differently"
                ),
            ),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_value(&mut self, v: &sqlparser::ast::ValueWithSpan) -> ControlFlow<()> {
        match &v.value {
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::UnicodeStringLiteral(s) => {
                self.facts.strings.insert(s.clone());
            }
            Value::DollarQuotedString(d) => {
                self.facts.strings.insert(d.value.clone());
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}
