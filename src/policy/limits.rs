//! Row-estimate holds. For a role with `max_rows` or `max_rows_fraction`,
//! a `write` DELETE, UPDATE or MERGE is planned before it runs, and counts
//! as `destructive` when the planner expects it to change more rows than
//! the role allows: syntax proves `WHERE id > 0` bounded, only the planner
//! sees that it is every row. This module decides which statements need a
//! plan and what stands when one is over; the proxy asks the planner.

use std::sync::Arc;

use super::enforce::{denied, held};
use super::engine::{Action, Engine, Judgement, Verdict};
use super::inspect::{Decision, Held, Inspection, SessionInfo};
use super::{ApprovalMode, Role};
use crate::classify::{Analysis, Class, TableName};

/// What the proxy must plan before a limited role's write runs, and the
/// decision that stands if the plan is over a limit or cannot be made.
#[derive(Debug, Clone, PartialEq)]
pub struct RowCheck {
    /// Each statement to plan, alone (PostgreSQL's own split).
    pub statements: Vec<String>,
    pub max_rows: Option<u64>,
    pub max_rows_fraction: Option<f64>,
    /// The plan is made as the role's upstream user, who sees what it sees.
    pub upstream_user: String,
    /// Set when the string cannot be planned at all (an `EXECUTE` of a
    /// prepared write, a string PostgreSQL's parser does not split): it is
    /// over without asking, failing closed.
    pub unplannable: Option<String>,
    /// The string judged as `destructive` by the role's rules.
    over: Verdict,
    mode: ApprovalMode,
    tables: Vec<String>,
    relations: Vec<TableName>,
}

impl RowCheck {
    /// The decision for a string the planner sizes over a limit (or could
    /// not size), with `why` as its reason; and the class and rule it is
    /// then recorded under.
    pub fn over(&self, why: &str) -> (Decision, Class, String) {
        let v = Verdict {
            reason: why.to_owned(),
            ..self.over.clone()
        };
        let decision = match v.action {
            Action::Allow => Decision::Allow,
            Action::Deny => Decision::Deny(denied(&v)),
            Action::Hold => Decision::Hold(Box::new(Held {
                class: v.class,
                rule: v.rule.clone(),
                reason: v.reason.clone(),
                tables: self.tables.clone(),
                relations: self.relations.clone(),
                approvers: v.approvers.clone(),
                mode: self.mode,
                error: held(&v),
            })),
        };
        (decision, v.class, v.rule)
    }

    /// Make `inspection` what it is when the planner sized the string over
    /// a limit (or could not size it): the `destructive` decision, class
    /// and rule, with `why` as the reason.
    pub fn apply_over(&self, why: &str, inspection: &mut Inspection) {
        let (decision, class, rule) = self.over(why);
        inspection.decision = decision;
        inspection.class = Some(class);
        inspection.rule = Some(rule);
    }

    /// The tables the string touches, schema and name apart.
    pub fn relations(&self) -> &[TableName] {
        &self.relations
    }

    /// The tables the string touches, `schema.name`.
    pub fn tables(&self) -> &[String] {
        &self.tables
    }

    /// `max_rows 100` / `max_rows_fraction 0.25` / both, for reasons.
    pub fn limits(&self) -> String {
        let mut parts = Vec::new();
        if let Some(n) = self.max_rows {
            parts.push(format!("max_rows {n}"));
        }
        if let Some(f) = self.max_rows_fraction {
            parts.push(format!("max_rows_fraction {f}"));
        }
        parts.join(", ")
    }
}

/// The check a judged string needs, if any: only for a role with limits,
/// only when a statement of it changes existing rows, and only
/// when `destructive` would be decided differently (a role that allows
/// `destructive` loses nothing by skipping the plan).
#[allow(clippy::too_many_arguments)]
pub(super) fn row_check(
    engine: &Engine,
    session: &SessionInfo,
    role: &Role,
    sql: &str,
    analysis: &Analysis,
    j: &Judgement,
    (tables, relations): (&[String], &[TableName]),
    mode: ApprovalMode,
) -> Option<Arc<RowCheck>> {
    // What changes existing rows, as PostgreSQL's tree shows it (an
    // EXPLAIN ANALYZE, a COPY or a CREATE TABLE AS can hold a DELETE), and
    // an EXECUTE of a write, unless denied anyway or already judged as
    // destructive.
    let sized: Vec<usize> = analysis
        .statements
        .iter()
        .zip(&j.verdicts)
        .enumerate()
        .filter(|(_, (s, v))| {
            v.action != Action::Deny
                && v.class != Class::Destructive
                && (s.changes_rows || (s.executes.is_some() && v.class == Class::Write))
        })
        .map(|(i, _)| i)
        .collect();
    if sized.is_empty() {
        return None;
    }
    let over = engine.decide_class(
        &session.identity,
        &session.role,
        Class::Destructive,
        relations,
    );
    if over.action == Action::Allow {
        return None;
    }
    let texts = if analysis.statements.len() == 1 {
        Some(vec![sql.to_owned()])
    } else {
        crate::classify::statement_texts(sql).filter(|t| t.len() == analysis.statements.len())
    };
    let mut unplannable = None;
    let mut statements = Vec::new();
    match texts {
        None => {
            unplannable = Some("its statements could not be told apart to plan each".to_owned())
        }
        // The side connection takes the session's settings as PostgreSQL
        // last reported them; a SET in the same string would change them
        // after the plan.
        Some(texts)
            if texts.len() > 1
                && texts.iter().any(|t| {
                    crate::classify::leading_keywords(t)
                        .and_then(|k| k.into_iter().next())
                        .is_some_and(|k| k == "SET" || k == "RESET")
                }) =>
        {
            unplannable = Some(
                "it changes settings in the same string as its writes, so they cannot be planned under the settings they run with"
                    .to_owned(),
            )
        }
        Some(texts) => {
            for i in sized {
                let s = &analysis.statements[i];
                if s.executes.is_some() {
                    unplannable = Some(
                        "an EXECUTE of a prepared statement cannot be planned apart from the session"
                            .to_owned(),
                    );
                    break;
                }
                if !s.explainable {
                    unplannable = Some(
                        "it changes rows inside a statement EXPLAIN cannot plan as written (EXPLAIN ANALYZE, COPY, CREATE TABLE AS, …)"
                            .to_owned(),
                    );
                    break;
                }
                statements.push(texts[i].clone());
            }
        }
    }
    if unplannable.is_none() && statements.is_empty() {
        return None;
    }
    Some(Arc::new(RowCheck {
        statements,
        max_rows: role.max_rows,
        max_rows_fraction: role.max_rows_fraction,
        upstream_user: role.upstream_user.clone(),
        unplannable,
        over,
        mode,
        tables: tables.to_vec(),
        relations: relations.to_vec(),
    }))
}
