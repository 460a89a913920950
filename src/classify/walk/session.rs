//! Statements that steer the session rather than touch data: `EXPLAIN`,
//! prepared statements, transaction control, `SHOW`, cursors,
//! `LISTEN`/`NOTIFY`, `DISCARD`, `SET`/`RESET` (judged by `settings`) and
//! `LOCK`.

use sqlparser::ast::{Expr, Reset, Set, Statement, UtilityOption, Value};

use super::Walker;
use crate::classify::names::{dotted, normalize_ident, string_literal};
use crate::classify::{Class, settings};

impl Walker {
    /// The class of a statement of this family; `false` if it is not one.
    pub(super) fn session_statement(&mut self, s: &Statement) -> bool {
        use Class::*;
        match s {
            Statement::Explain {
                analyze, options, ..
            } => self.explain(s, *analyze, options.as_deref()),
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
            _ => return false,
        }
        true
    }

    /// `EXPLAIN`: only with ANALYZE does the statement run; without it,
    /// what it holds is walked as planned but not run.
    fn explain(&mut self, s: &Statement, analyze: bool, options: Option<&[UtilityOption]>) {
        use Class::*;
        // PostgreSQL's grammar takes ANALYSE too, and the last
        // ANALYZE option of a list wins (explain.c).
        let listed = options
            .into_iter()
            .flatten()
            .rfind(|o| {
                let n = o.name.value.to_ascii_lowercase();
                n == "analyze" || n == "analyse"
            })
            .map(|o| !is_false(o.arg.as_ref()));
        let analyze = listed.unwrap_or(analyze);
        if analyze {
            self.raise(Read, "EXPLAIN ANALYZE runs the statement");
        } else {
            self.raise(Read, "EXPLAIN without ANALYZE does not run the statement");
            self.explain_only.push(s);
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
