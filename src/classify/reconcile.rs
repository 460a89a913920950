//! Holding the walk's reading of each statement against PostgreSQL's own
//! (see `pg`): where they disagree on the split into statements, a
//! statement's kind, or the relations, functions and strings it holds, the
//! statement is `unknown`; otherwise the class is raised to at least what
//! PostgreSQL's tree implies.

use std::collections::BTreeSet;

use super::{Class, StatementClass, classify_at, functions, pg, unknown, walk};

/// Hold the walk's reading against PostgreSQL's own (see `pg`). `depth`
/// counts enclosing routine bodies, as in `classify_at`.
pub(super) fn reconcile(
    sql: &str,
    mut ours: Vec<(StatementClass, Option<walk::Facts>)>,
    depth: usize,
) -> Vec<StatementClass> {
    let theirs = match pg::read(sql) {
        Ok(t) => t,
        Err(e) => {
            let why = format!("PostgreSQL's parser does not accept this text: {e}");
            if ours.is_empty() {
                return vec![unknown(why)];
            }
            return ours
                .into_iter()
                .map(|(mut s, _)| {
                    s.disagree(why.clone());
                    s
                })
                .collect();
        }
    };
    if theirs.len() != ours.len() {
        let why = format!(
            "PostgreSQL reads {} statement(s) in this text and infraveil's parser {}: the readings disagree",
            theirs.len(),
            ours.len()
        );
        let mut out: Vec<StatementClass> = ours.into_iter().map(|(s, _)| s).collect();
        if out.is_empty() {
            out.push(unknown(why.clone()));
        }
        for s in &mut out {
            s.disagree(why.clone());
        }
        return out;
    }
    for ((s, facts), p) in ours.iter_mut().zip(theirs) {
        s.hold_against(facts.as_ref(), p, depth);
    }
    ours.into_iter().map(|(s, _)| s).collect()
}

/// Statement kinds whose reading the walk depends on in detail.
const DETAILED_KINDS: &[&str] = &[
    "SelectStmt",
    "InsertStmt",
    "UpdateStmt",
    "DeleteStmt",
    "MergeStmt",
];

impl StatementClass {
    /// The readings disagree: `unknown`, whatever any policy lists.
    fn disagree(&mut self, why: String) {
        if self.base_class == Class::Unknown && self.class == Class::Unknown {
            return;
        }
        self.class = Class::Unknown;
        self.base_class = Class::Unknown;
        self.execute_args = Class::Unknown;
        self.reason = why.clone();
        self.base_reason = why;
    }

    fn raise_both(&mut self, class: Class, why: &str) {
        if class > self.base_class {
            self.base_class = class;
            self.base_reason = why.to_owned();
        }
        if class > self.class {
            self.class = class;
            self.reason = why.to_owned();
        }
        self.execute_args = self.execute_args.max(class);
    }

    fn hold_against(&mut self, facts: Option<&walk::Facts>, mut p: pg::PgStatement, depth: usize) {
        self.session = std::mem::take(&mut p.session);
        let outlives = p
            .called
            .iter()
            .chain(facts.iter().flat_map(|f| f.called.iter()))
            .any(|c| functions::outlives_rollback(c.strip_prefix("pg_catalog.").unwrap_or(c)));
        self.outlives_rollback = outlives;
        let (changes_rows, explainable) =
            (p.changes_rows, DETAILED_KINDS.contains(&p.kind.as_str()));
        self.changes_rows = changes_rows;
        self.explainable = explainable;
        // EXECUTE takes its class from the session's PREPARE: never here.
        if facts.is_none() && !p.needs_walk && p.unknown.is_none() && p.kind != "ExecuteStmt" {
            // sqlparser cannot parse it (`TABLE t`, `EXPLAIN ANALYSE …`,
            // `xmlelement(name …)`), and nothing in it needs the walk's
            // bounds analysis: PostgreSQL's own reading is the whole answer.
            *self = StatementClass {
                class: p.floor,
                tables: p.relations.into_iter().collect(),
                reason: p.reason.clone(),
                functions: Vec::new(),
                base_class: p.floor,
                base_reason: p.reason,
                prepares: p.prepares,
                executes: None,
                execute_args: p.floor,
                names: p.names,
                session: std::mem::take(&mut self.session),
                outlives_rollback: outlives,
                changes_rows,
                explainable,
            };
            // The walk classifies routine bodies; here nobody else will.
            for (what, body) in &p.sql_bodies {
                if depth >= walk::MAX_BODY_DEPTH {
                    return self.disagree("function bodies nested too deeply".into());
                }
                for s in classify_at(body, depth + 1).statements {
                    self.raise_both(s.base_class, &format!("{what} body: {}", s.base_reason));
                    self.tables.extend(s.tables);
                    self.functions.extend(s.functions);
                }
            }
            self.tables.sort();
            self.tables.dedup();
            let functions = std::mem::take(&mut self.functions);
            return self.forgivable(p.unlisted.into_iter().chain(functions).collect());
        }
        self.names = std::mem::take(&mut p.names);
        let detailed = DETAILED_KINDS.contains(&p.kind.as_str());
        if let Some(f) = facts {
            if (detailed || f.family.is_some()) && f.family != Some(p.kind.as_str()) {
                return self.disagree(format!(
                    "PostgreSQL reads a {} statement here and infraveil's parser {}: the readings disagree",
                    p.kind,
                    f.family.unwrap_or("another kind of statement")
                ));
            }
            // A call PostgreSQL's grammar made of SQL-standard syntax
            // (`EXTRACT(… FROM …)` is `pg_catalog.extract`) is no sign of a
            // misreading when it is a reviewed read-only built-in.
            let missed = p.called.iter().find(|c| {
                let bare = c.strip_prefix("pg_catalog.").unwrap_or(c);
                let syntax = c.starts_with("pg_catalog.")
                    && matches!(functions::lookup(bare), functions::Call::ReadOnly);
                !f.called.contains(bare) && !syntax
            });
            if let Some(missed) = missed {
                return self.disagree(format!(
                    "PostgreSQL reads a call to {missed}() that infraveil's parser does not see: the readings disagree"
                ));
            }
            if detailed && let Some(code) = f.strings.iter().find(|x| !p.strings.contains(*x)) {
                return self.disagree(format!(
                    "infraveil's parser reads {:?} as a string where PostgreSQL does not: the readings disagree",
                    code.chars().take(40).collect::<String>()
                ));
            }
        }
        for t in p.relations {
            if !self.tables.contains(&t) {
                if detailed && facts.is_some() {
                    return self.disagree(format!(
                        "PostgreSQL reads the table {t} that infraveil's parser does not see: the readings disagree"
                    ));
                }
                self.tables.push(t);
            }
        }
        if let Some(why) = p.unknown {
            return self.disagree(why);
        }
        self.raise_both(p.floor, &p.reason);
        self.forgivable(p.unlisted);
    }

    /// Calls to functions the reviewed table does not know: `unknown`,
    /// unless the role lists every one of them in `safe_functions`.
    fn forgivable(&mut self, unlisted: BTreeSet<String>) {
        for f in unlisted {
            if !self.functions.contains(&f) {
                self.functions.push(f.clone());
            }
            if self.class < Class::Unknown {
                self.class = Class::Unknown;
                self.reason = format!(
                    "calls {f}(), which infraveil does not know to be free of side effects \
                     (if it is, whoever maintains the infraveil policies can list it in the role's safe_functions)"
                );
            }
        }
    }
}
