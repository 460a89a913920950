//! The policy engine behind the proxy's inspection seam: classify (cached),
//! judge, and turn the verdict into what the client sees.

use std::sync::{Arc, RwLock};

use tracing::debug;

use super::engine::{Action, Engine, Verdict};
use super::{PolicyError, PolicySet};
use crate::inspect::{Decision, Held, Inspection, Inspector, Origin, SessionInfo, SessionMemory};
use crate::protocol::{PgError, sqlstate};

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
        memory: &mut SessionMemory,
        sql: &str,
        origin: Origin<'_>,
    ) -> Inspection {
        let engine = self.engine();
        let analysis = engine.analyze(sql);
        let j = engine.judge_in(
            &session.identity,
            &session.role,
            &analysis,
            &memory.prepared,
            &session.objects,
        );
        let v = &j.overall;
        let mut tables: Vec<String> = analysis
            .statements
            .iter()
            .flat_map(|s| s.tables.iter().map(|t| t.to_string()))
            .collect();
        tables.sort();
        tables.dedup();
        debug!(class = %v.class, decision = v.action.as_str(), rule = %v.rule, "judged");
        let decision = match v.action {
            Action::Allow => {
                memory.prepared.merge(&j.prepared);
                if let Origin::Parse { statement } = origin
                    && !statement.is_empty()
                {
                    let class = j.verdicts.iter().map(|v| v.class).max();
                    memory
                        .prepared
                        .remember(statement, class.unwrap_or(crate::classify::Class::Read));
                }
                Decision::Allow
            }
            Action::Deny => Decision::Deny(denied(v)),
            Action::Hold => {
                let set = engine.policies();
                let kind = set.identity(&session.identity).map(|i| i.kind);
                let mode = set
                    .role(&session.role)
                    .and_then(|r| r.mode)
                    .or(kind.map(super::default_mode))
                    .unwrap_or(super::ApprovalMode::Defer);
                Decision::Hold(Box::new(Held {
                    class: v.class,
                    rule: v.rule.clone(),
                    reason: v.reason.clone(),
                    tables: tables.clone(),
                    approvers: v.approvers.clone(),
                    mode,
                    error: held(v),
                }))
            }
        };
        Inspection {
            decision,
            class: Some(v.class),
            rule: Some(v.rule.clone()),
            tables,
        }
    }

    fn reload(&self, policies: Arc<PolicySet>) -> Result<(), PolicyError> {
        let engine = Arc::new(Engine::new(policies)?);
        let mut guard = self.engine.write().unwrap_or_else(|p| p.into_inner());
        *guard = engine;
        Ok(())
    }
}

/// The client's error for a denial: rule and class in the message, the
/// classifier's reason in DETAIL.
pub fn denied(v: &Verdict) -> PgError {
    PgError::error(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!(
            "infraveil denied this {} statement (rule {})",
            v.class, v.rule
        ),
    )
    .with_detail(v.reason.clone())
}

/// The client's error for a held statement when no approval can be asked
/// for (the admin API, where approvals are decided, is not configured).
pub fn held(v: &Verdict) -> PgError {
    PgError::error(
        sqlstate::INSUFFICIENT_PRIVILEGE,
        format!(
            "approval required: infraveil holds this {} statement for a human (rule {})",
            v.class, v.rule
        ),
    )
    .with_detail(v.reason.clone())
    .with_hint(format!(
        "approvers: {}; approvals are decided over the admin API, which is not configured, so the statement did not run",
        v.approvers.join(", ")
    ))
}
