//! The policy engine behind the proxy's inspection seam: classify (cached),
//! judge, and turn the verdict into what the client sees.

use std::sync::{Arc, RwLock};

use tracing::debug;

use super::engine::{Action, Engine, PreparedClasses, Verdict};
use super::{PolicyError, PolicySet};
use crate::classify::SessionEffect;
use crate::policy::inspect::{Decision, Defines, Held, Inspection, Inspector, Origin, SessionInfo};
use crate::protocol::PgError;

/// Enforces the loaded policies. Until the first [`Inspector::reload`] it
/// has none, and denies everything.
pub struct PolicyInspector {
    engine: RwLock<Arc<Engine>>,
}

impl PolicyInspector {
    pub fn new(set: Arc<PolicySet>) -> Result<PolicyInspector, PolicyError> {
        Ok(PolicyInspector {
            engine: RwLock::new(Arc::new(Engine::new(set)?)),
        })
    }

    /// No policies yet: every identity is unknown, so everything is denied.
    pub fn empty() -> PolicyInspector {
        match Self::new(Arc::new(PolicySet::default())) {
            Ok(p) => p,
            Err(_) => unreachable!("an empty policy set always compiles"),
        }
    }

    pub fn engine(&self) -> Arc<Engine> {
        match self.engine.read() {
            Ok(e) => e.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Inspector for PolicyInspector {
    fn inspect(
        &self,
        session: &SessionInfo,
        prepared: &dyn PreparedClasses,
        sql: &str,
        origin: Origin<'_>,
    ) -> Inspection {
        let engine = self.engine();
        let analysis = engine.analyze(sql);
        let j = engine.judge_in(
            &session.identity,
            &session.role,
            &analysis,
            prepared,
            &session.objects,
        );
        let mut relations: Vec<crate::classify::TableName> = analysis
            .statements
            .iter()
            .flat_map(|s| s.tables.iter().cloned())
            .collect();
        relations.sort();
        relations.dedup();
        // Same order: TableName orders by schema, then name.
        let tables: Vec<String> = relations.iter().map(|t| t.to_string()).collect();
        let decision_of = |v: &Verdict| match v.action {
            Action::Allow => Decision::Allow,
            Action::Deny => Decision::Deny(denied(v)),
            Action::Hold => Decision::Hold(Box::new(Held {
                class: v.class,
                rule: v.rule.clone(),
                reason: v.reason.clone(),
                tables: tables.clone(),
                relations: relations.clone(),
                approvers: v.approvers.clone(),
                mode: mode(&engine, session),
                error: held(v),
            })),
        };
        // What the statements do to the session's names, for its model;
        // nothing to build for the strings (nearly all) that change none.
        let effects = if analysis
            .statements
            .iter()
            .all(|s| s.session == SessionEffect::None)
        {
            Vec::new()
        } else {
            analysis
                .statements
                .iter()
                .zip(&j.verdicts)
                .map(|(s, v)| Defines {
                    what: s.session.clone(),
                    class: v.class,
                    decision: decision_of(v),
                })
                .collect()
        };
        // A PREPARE the policy holds is held itself, and each execution of
        // the statement it defines is held again, with its values.
        let v = &j.overall;
        debug!(class = %v.class, decision = v.action.as_str(), rule = %v.rule, "judged");
        let mut decision = decision_of(v);
        // `EXECUTE name` as a prepared statement would run whatever `name`
        // is when it is executed, not what it is now.
        if let Origin::Parse { .. } = origin
            && !matches!(decision, Decision::Deny(_))
            && analysis.statements.iter().any(|s| s.executes.is_some())
        {
            decision = Decision::Deny(PgError::execute_not_prepared());
        }
        // SQL EXECUTE runs what its PREPARE said, not what this text shows;
        // a function the reviewed table does not know (allowed through
        // `safe_functions`) may do anything inside.
        let rollback_undoes = analysis
            .statements
            .iter()
            .all(|s| !s.outlives_rollback && s.executes.is_none() && s.functions.is_empty())
            && !session.objects.write_outlives_rollback(&tables);
        // Only a string that changes rows, of a role with row limits, pays
        // for this: reads do not even look the role up.
        let changes_rows = analysis
            .statements
            .iter()
            .any(|s| s.changes_rows || s.executes.is_some());
        let role = changes_rows
            .then(|| engine.policies().role(&session.role))
            .flatten();
        let row_check = match (&decision, role) {
            (Decision::Deny(_), _) | (_, None) => None,
            (_, Some(role)) if !role.limits_rows() => None,
            (_, Some(role)) => super::limits::row_check(
                &engine,
                session,
                role,
                sql,
                &analysis,
                &j,
                (&tables, &relations),
                mode(&engine, session),
            ),
        };
        Inspection {
            decision,
            class: Some(v.class),
            rule: Some(v.rule.clone()),
            tables,
            effects,
            rollback_undoes,
            row_check,
        }
    }

    fn reload(&self, policies: Arc<PolicySet>) -> Result<(), PolicyError> {
        let engine = Arc::new(Engine::new(policies)?);
        let mut guard = self.engine.write().unwrap_or_else(|p| p.into_inner());
        *guard = engine;
        Ok(())
    }

    fn policies(&self) -> Option<Arc<PolicySet>> {
        Some(self.engine().policies().clone())
    }
}

/// How the identity's approvals work: the role's mode, else its kind's.
fn mode(engine: &Engine, session: &SessionInfo) -> super::ApprovalMode {
    let set = engine.policies();
    let kind = set.identity(&session.identity).map(|i| i.kind);
    set.role(&session.role)
        .and_then(|r| r.mode)
        .or(kind.map(super::default_mode))
        .unwrap_or(super::ApprovalMode::Defer)
}

/// The client's error for a denial: rule and class in the message, the
/// classifier's reason in DETAIL.
pub fn denied(v: &Verdict) -> PgError {
    PgError::denied(v.class, &v.rule, &v.reason, v.advice.as_deref())
}

/// The client's error for a held statement when no approval can be asked
/// for (the admin API, where approvals are decided, is not configured).
pub fn held(v: &Verdict) -> PgError {
    PgError::held_without_approvals(v.class, &v.rule, &v.reason, &v.approvers)
}

#[cfg(test)]
mod tests;
