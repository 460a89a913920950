//! Statements that read or change rows: queries, `INSERT`, `UPDATE`,
//! `DELETE`, `MERGE`, `COPY`, `TRUNCATE` and `CALL`. An `UPDATE`, `DELETE`
//! or `MERGE … UPDATE` is destructive unless its condition bounds the
//! target's rows (`bounds`).

use std::ops::ControlFlow;

use sqlparser::ast::{
    CopySource, CopyTarget, Delete, Expr, FromTable, Ident, Insert, Merge, MergeAction, ObjectName,
    OnConflict, OnConflictAction, OnInsert, Query, Statement, TableFactor, TableObject,
    TableWithJoins, Update, UpdateTableFromKind,
};

use super::Walker;
use crate::classify::bounds::{Target, bounded};
use crate::classify::names::{dotted, name_parts, normalize_ident, table_name};
use crate::classify::{Class, TableName};

impl Walker {
    /// The class of a statement of this family; `false` if it is not one.
    pub(super) fn dml_statement(&mut self, s: &Statement) -> bool {
        use Class::*;
        match s {
            Statement::Query(_) => self.raise(Read, "query (reads only)"),
            Statement::Insert(i) => self.insert(i),
            Statement::Update(u) => self.update(u),
            Statement::Delete(d) => self.delete(d),
            Statement::Merge(m) => self.merge(m),
            Statement::Copy {
                source,
                to,
                target,
                payload,
                ..
            } => self.copy(source, *to, target, payload.is_some()),
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
            _ => return false,
        }
        true
    }

    fn insert(&mut self, i: &Insert) {
        use Class::*;
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

    fn update(&mut self, u: &Update) {
        self.table_with_joins(&u.table);
        let target = match &u.table.relation {
            TableFactor::Table { name, alias, .. } => {
                self.written("UPDATE", name);
                Some((name, alias.as_ref().map(|a| &a.name)))
            }
            _ => None,
        };
        let mut others: Vec<&TableFactor> = u.table.joins.iter().map(|j| &j.relation).collect();
        if let Some(UpdateTableFromKind::BeforeSet(f) | UpdateTableFromKind::AfterSet(f)) = &u.from
        {
            others.extend(factors(f));
        }
        self.dml_bound("UPDATE", target, &others, u.selection.as_ref());
    }

    fn delete(&mut self, d: &Delete) {
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

    fn merge(&mut self, m: &Merge) {
        use Class::*;
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

    /// `to`: `COPY … TO`; `inline_payload`: rows follow in the same query
    /// string.
    fn copy(&mut self, source: &CopySource, to: bool, target: &CopyTarget, inline_payload: bool) {
        use Class::*;
        if let CopySource::Table { table_name, .. } = source {
            self.table(table_name);
            if !to {
                self.written("COPY FROM", table_name);
            }
        }
        if inline_payload {
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
