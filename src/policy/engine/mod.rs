//! Decisions: a classified statement, an identity and the role it holds in,
//! one of allow / deny / hold out, with the rule that decided. Pure logic;
//! the proxy (through [`PolicyInspector`](super::PolicyInspector)) and
//! `veilctl check` both call it.
//!
//! Order of rules for one statement:
//! 1. the role's `deny`, `allow`, `approve` lists, in that order;
//! 2. for a class the role does not list, the identity kind's default;
//! 3. a statement allowed or held by the above is still denied if it touches
//!    a table outside the role's `tables` scope.
//!
//! A query string is judged as a whole: one denial denies all of it, else
//! one hold holds all of it.

use std::collections::HashMap;
use std::sync::Arc;

use globset::{Glob, GlobMatcher};
use serde::Serialize;

use super::{Kind, PolicyError, PolicySet, Role};
use crate::classify::objects::UserObjects;
use crate::classify::{Analysis, Class, StatementClass, TableName};

/// Cache size in entries and the longest statement worth caching.
const CACHE_ENTRIES: usize = 16_384;
const CACHE_MAX_STATEMENT: usize = 16 * 1024;
/// Prepared-statement names one session may have remembered.
const MAX_PREPARED: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
    Hold,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Deny => "deny",
            Action::Hold => "hold",
        }
    }
}

/// The decision about one statement (or a whole string) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub action: Action,
    /// Dotted path of the rule that decided, e.g. `roles.readonly.tables`.
    pub rule: String,
    pub class: Class,
    pub reason: String,
    /// For holds: who may approve.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// For denials: what the role does allow, and where the class is
    /// allowed instead, in the user's words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

/// Classes remembered for the session's prepared statements (`PREPARE`
/// and named `Parse`), for `EXECUTE`. A name only ever gets more severe:
/// a re-`PREPARE` that PostgreSQL refuses must not lower it.
#[derive(Debug, Default, Clone)]
pub struct Prepared {
    classes: HashMap<String, Class>,
}

/// Where `EXECUTE name` finds the class of `name`: a session's model of
/// its prepared statements, or a [`Prepared`] map (`veilctl check`).
pub trait PreparedClasses {
    /// `None`: no statement of that name exists.
    fn class_of(&self, name: &str) -> Option<Class>;
}

impl PreparedClasses for Prepared {
    fn class_of(&self, name: &str) -> Option<Class> {
        self.get(name)
    }
}

impl Prepared {
    pub fn get(&self, name: &str) -> Option<Class> {
        self.classes.get(name).copied()
    }

    /// Take over everything `other` remembers.
    pub fn merge(&mut self, other: &Prepared) {
        for (name, class) in &other.classes {
            self.remember(name, *class);
        }
    }

    /// Remember `name`. Past the cap nothing new is remembered, so
    /// `EXECUTE` of it is `unknown` (fail closed).
    pub fn remember(&mut self, name: &str, class: Class) {
        if let Some(c) = self.classes.get_mut(name) {
            *c = (*c).max(class);
        } else if self.classes.len() < MAX_PREPARED {
            self.classes.insert(name.to_owned(), class);
        }
    }
}

/// A role's table scope, compiled.
pub(crate) struct Scope {
    globs: Vec<(GlobMatcher, GlobMatcher)>,
}

impl Scope {
    /// Compile `schema.table` globs; the error names the bad pattern.
    pub(crate) fn compile(patterns: &[String]) -> Result<Scope, String> {
        let mut globs = Vec::new();
        for p in patterns {
            let Some((s, t)) = p.split_once('.') else {
                return Err(format!(
                    "tables: {p:?} must be schema.table (globs allowed, e.g. \"public.*\")"
                ));
            };
            let compile = |x: &str| {
                Glob::new(x)
                    .map(|g| g.compile_matcher())
                    .map_err(|e| format!("tables: {p:?}: {e}"))
            };
            globs.push((compile(s)?, compile(t)?));
        }
        Ok(Scope { globs })
    }

    pub(crate) fn allows(&self, t: &TableName) -> bool {
        // The catalogs are never out of scope: drivers and ORMs read them to
        // work at all, and PostgreSQL's privileges guard the sensitive ones.
        // Except the views that show other tables' contents (column
        // statistics hold their most common values) or other sessions'
        // statements: PostgreSQL shows them for every table the upstream
        // login can read, which is more than the scope.
        if t.schema == "pg_catalog" || t.schema == "information_schema" {
            return !REVEALING_CATALOGS.contains(&t.name.as_str())
                || self
                    .globs
                    .iter()
                    .any(|(s, n)| s.is_match(&t.schema) && n.is_match(&t.name));
        }
        // Schema and table are matched separately, so a quoted name with a
        // dot in it cannot straddle the two.
        self.globs
            .iter()
            .any(|(s, n)| s.is_match(&t.schema) && n.is_match(&t.name))
    }
}

/// Catalog views that reveal data beyond their own: only a role whose
/// `tables` names them (e.g. `"pg_catalog.pg_stats"`) may read them.
const REVEALING_CATALOGS: &[&str] = &[
    "pg_stats",
    "pg_stats_ext",
    "pg_stats_ext_exprs",
    "pg_statistic",
    "pg_statistic_ext_data",
    "pg_stat_activity",
    "pg_largeobject",
];

/// The names of a role's class rules, as verdicts give them.
#[derive(Clone)]
struct RuleNames {
    deny: String,
    allow: String,
    approve: String,
}

impl RuleNames {
    fn of(role: &str) -> RuleNames {
        RuleNames {
            deny: format!("roles.{role}.deny"),
            allow: format!("roles.{role}.allow"),
            approve: format!("roles.{role}.approve"),
        }
    }
}

/// Compiled policies plus the classification cache. Built whole and swapped
/// on reload, which also empties the cache.
pub struct Engine {
    set: Arc<PolicySet>,
    scopes: HashMap<String, Scope>,
    /// Each role's rule names, made once (formatting them per statement
    /// showed in profiles).
    rules: HashMap<String, RuleNames>,
    cache: Option<quick_cache::sync::Cache<String, Arc<Analysis>>>,
}

impl Engine {
    pub fn new(set: Arc<PolicySet>) -> Result<Engine, PolicyError> {
        Self::build(set, true)
    }

    /// Without the cache (benchmarks, `veilctl check`).
    pub fn uncached(set: Arc<PolicySet>) -> Result<Engine, PolicyError> {
        Self::build(set, false)
    }

    fn build(set: Arc<PolicySet>, cache: bool) -> Result<Engine, PolicyError> {
        let mut scopes = HashMap::new();
        for (name, role) in &set.roles {
            if !role.tables.is_empty() {
                let scope = Scope::compile(&role.tables)
                    .map_err(|message| set.err_at(&format!("roles.{name}"), message))?;
                scopes.insert(name.clone(), scope);
            }
        }
        let rules = set
            .roles
            .keys()
            .map(|name| (name.clone(), RuleNames::of(name)))
            .collect();
        Ok(Engine {
            set,
            scopes,
            rules,
            cache: cache.then(|| quick_cache::sync::Cache::new(CACHE_ENTRIES)),
        })
    }

    pub fn policies(&self) -> &Arc<PolicySet> {
        &self.set
    }

    /// Classify `sql`, from the cache when it has been seen.
    pub fn analyze(&self, sql: &str) -> Arc<Analysis> {
        let Some(cache) = &self.cache else {
            return Arc::new(crate::classify::classify(sql));
        };
        if sql.len() > CACHE_MAX_STATEMENT {
            return Arc::new(crate::classify::classify(sql));
        }
        // The same statement with other numbers classifies alike: one entry
        // serves them all (see `number_shape_key` for why that is sound).
        // The plainest texts get their key without the lexer, and are looked
        // up by it first (their exact text is kept only when unknown).
        let quick = crate::classify::quick_shape_key(sql);
        if let Some(k) = &quick
            && let Some(a) = cache.get(k)
        {
            return a;
        }
        if let Some(a) = cache.get(sql) {
            return a;
        }
        let key = quick.or_else(|| crate::classify::number_shape_key(sql));
        if let Some(k) = &key
            && let Some(a) = cache.get(k)
        {
            return a;
        }
        let a = Arc::new(crate::classify::classify(sql));
        // A parse error's reason quotes the literal (`trailing junk after
        // numeric literal at or near "0.x"`): such text is kept exact.
        let key = key.filter(|_| a.class() != crate::classify::Class::Unknown);
        cache.insert(key.unwrap_or_else(|| sql.to_owned()), a.clone());
        a
    }

    /// Judge every statement of `analysis` for `identity` acting in `role`.
    /// `prepared` resolves `EXECUTE`; prepares earlier in the same string
    /// count for executes later in it.
    pub fn judge(
        &self,
        identity: &str,
        role: &str,
        analysis: &Analysis,
        prepared: &dyn PreparedClasses,
    ) -> Judgement {
        self.judge_in(identity, role, analysis, prepared, &UserObjects::default())
    }

    /// [`Engine::judge`] in a database whose user-defined `objects` are
    /// known: a statement whose names they could take over is `unknown`.
    pub fn judge_in(
        &self,
        identity: &str,
        role: &str,
        analysis: &Analysis,
        prepared: &dyn PreparedClasses,
        objects: &UserObjects,
    ) -> Judgement {
        let mut pending = Prepared::default();
        let mut verdicts = Vec::with_capacity(analysis.statements.len());
        let r = self.set.role(role);
        for s in &analysis.statements {
            let (mut class, mut reason) = self.effective_class(role, s, prepared, &pending);
            if let Some(why) =
                objects.hijack(&s.names, &s.tables, |f| r.is_some_and(|r| is_safe(r, f)))
            {
                (class, reason) = (Class::Unknown, why);
            }
            if let Some(name) = &s.prepares {
                pending.remember(name, class);
            }
            verdicts.push(self.decide(identity, role, class, reason, &s.tables));
        }
        let overall = verdicts
            .iter()
            .find(|v| v.action == Action::Deny)
            .or_else(|| verdicts.iter().find(|v| v.action == Action::Hold))
            .cloned()
            .unwrap_or_else(|| Verdict {
                action: Action::Allow,
                rule: verdicts
                    .iter()
                    .max_by_key(|v| v.class)
                    .map(|v| v.rule.clone())
                    .unwrap_or_else(|| "empty".into()),
                class: analysis.class(),
                reason: "every statement is allowed".into(),
                approvers: Vec::new(),
                advice: None,
            });
        Judgement {
            verdicts,
            overall,
            prepared: pending,
        }
    }

    /// The class that counts for this role: functions the role declares
    /// safe are forgiven, and `EXECUTE` takes the prepared statement's class.
    fn effective_class(
        &self,
        role: &str,
        s: &StatementClass,
        prepared: &dyn PreparedClasses,
        pending: &Prepared,
    ) -> (Class, String) {
        let (mut class, mut reason) = (s.class, s.reason.clone());
        if !s.functions.is_empty()
            && let Some(r) = self.set.role(role)
            && s.functions.iter().all(|f| is_safe(r, f))
        {
            (class, reason) = (s.base_class, s.base_reason.clone());
        }
        if let Some(name) = &s.executes {
            match pending.get(name).or_else(|| prepared.class_of(name)) {
                Some(c) => {
                    class = c.max(s.execute_args);
                    reason = format!("EXECUTE {name}: prepared as a {c} statement");
                }
                None => {
                    class = Class::Unknown;
                    reason = format!(
                        "EXECUTE {name}: no statement of that name was prepared through infraveil in this session"
                    );
                }
            }
        }
        (class, reason)
    }

    /// The decision for a statement of `class` touching `tables`, by the
    /// same rules as [`Engine::judge`] (for the inventory, which asks per
    /// class and per table rather than per statement).
    pub fn decide_class(
        &self,
        identity: &str,
        role: &str,
        class: Class,
        tables: &[TableName],
    ) -> Verdict {
        self.decide(
            identity,
            role,
            class,
            format!("a {class} statement"),
            tables,
        )
    }

    fn decide(
        &self,
        identity: &str,
        role_name: &str,
        class: Class,
        reason: String,
        tables: &[TableName],
    ) -> Verdict {
        let verdict = |action, rule: String, reason: String| Verdict {
            action,
            rule,
            class,
            reason,
            approvers: Vec::new(),
            advice: None,
        };
        let Some(ident) = self.set.identity(identity) else {
            return verdict(
                Action::Deny,
                "identities".into(),
                format!("identity {identity} is not defined in the policies"),
            );
        };
        let Some(role) = self.set.role(role_name) else {
            return verdict(
                Action::Deny,
                "roles".into(),
                format!("role {role_name} is not defined in the policies"),
            );
        };
        let rule = |pick: fn(&RuleNames) -> &String| match self.rules.get(role_name) {
            Some(names) => pick(names).clone(),
            None => pick(&RuleNames::of(role_name)).clone(),
        };
        let (action, rule) = if role.deny.contains(&class) {
            (Action::Deny, rule(|n| &n.deny))
        } else if role.allow.contains(&class) {
            (Action::Allow, rule(|n| &n.allow))
        } else if role.approve.contains(&class) {
            (Action::Hold, rule(|n| &n.approve))
        } else {
            (
                kind_default(ident.kind, class),
                format!("kinds.{}", kind_name(ident.kind)),
            )
        };
        if action != Action::Deny
            && let Some(scope) = self.scopes.get(role_name)
        {
            let outside: Vec<String> = tables
                .iter()
                .filter(|t| !scope.allows(t))
                .map(|t| t.to_string())
                .collect();
            if !outside.is_empty() {
                return verdict(
                    Action::Deny,
                    format!("roles.{role_name}.tables"),
                    format!(
                        "touches {} outside role {role_name}'s tables ({})",
                        outside.join(", "),
                        role.tables.join(", ")
                    ),
                );
            }
        }
        if action == Action::Hold && role.approvers.is_empty() {
            return verdict(
                Action::Deny,
                format!("roles.{role_name}.approvers"),
                format!("{reason}; it needs approval but role {role_name} names no approvers"),
            );
        }
        let mut v = verdict(action, rule, reason);
        if action == Action::Hold {
            v.approvers = role.approvers.clone();
        }
        if action == Action::Deny {
            v.advice = Some(self.advice(identity, ident, role_name, role, class));
        }
        v
    }

    /// Why a class is denied in the user's terms: what the role allows
    /// and holds, and which of the identity's other roles would take it.
    fn advice(
        &self,
        identity: &str,
        ident: &super::Identity,
        role_name: &str,
        role: &Role,
        class: Class,
    ) -> String {
        let list = |c: &[Class]| c.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ");
        // What the kind's defaults add for classes the role does not list.
        let by_kind = |want: Action| -> Vec<Class> {
            Class::ALL
                .iter()
                .copied()
                .filter(|c| {
                    !role.allow.contains(c)
                        && !role.approve.contains(c)
                        && !role.deny.contains(c)
                        && kind_default(ident.kind, *c) == want
                })
                .collect()
        };
        let mut allows: Vec<Class> = role.allow.clone();
        allows.extend(by_kind(Action::Allow));
        allows.sort();
        let mut holds: Vec<Class> = role.approve.clone();
        if !role.approvers.is_empty() {
            holds.extend(by_kind(Action::Hold));
        }
        holds.sort();
        let mut out = if allows.is_empty() {
            format!("role {role_name} allows no class of statement")
        } else {
            format!("role {role_name} allows only {}", list(&allows))
        };
        if !holds.is_empty() {
            out.push_str(&format!(
                " and holds {} for approval by {}",
                list(&holds),
                role.approvers.join(", ")
            ));
        }
        let others: Vec<&str> = ident
            .roles
            .iter()
            .chain(ident.standing.iter())
            .filter(|r| r.as_str() != role_name)
            .filter(|r| {
                self.set.role(r).is_some_and(|o| {
                    o.allow.contains(&class)
                        || (o.approve.contains(&class) && !o.approvers.is_empty())
                })
            })
            .map(String::as_str)
            .collect();
        if !others.is_empty() {
            out.push_str(&format!(
                "; {class} statements need a grant in role {} (ask an admin: veilctl grants issue --identity {identity} --role {} --ttl 1h --reason TICKET)",
                others.join(" or "),
                others[0]
            ));
        } else {
            out.push_str(&format!(
                "; no role {identity} may be granted runs {class} statements: ask whoever maintains the infraveil policies"
            ));
        }
        out
    }
}

fn is_safe(role: &Role, function: &str) -> bool {
    let bare = function.strip_prefix("public.").unwrap_or(function);
    role.safe_functions
        .iter()
        .any(|f| f == function || f == bare)
}

/// What a kind may do with a class no role lists. Privileged and unknown
/// are denied for every kind: only an explicit role entry admits them.
pub fn kind_default(kind: Kind, class: Class) -> Action {
    use Action::*;
    use Class as C;
    match (kind, class) {
        (_, C::Read) => Allow,
        (_, C::Privileged | C::Unknown) => Deny,
        (Kind::Agent, C::Write | C::Ddl | C::Destructive) => Hold,
        (Kind::Human, _) => Deny,
        (Kind::Ci, C::Write | C::Ddl) => Allow,
        (Kind::Ci, C::Destructive) => Hold,
        (Kind::Service, C::Write) => Allow,
        (Kind::Service, _) => Deny,
    }
}

pub fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Human => "human",
        Kind::Ci => "ci",
        Kind::Service => "service",
        Kind::Agent => "agent",
    }
}

/// Verdicts for each statement of a string and for the string as a whole.
#[derive(Debug, Clone)]
pub struct Judgement {
    pub verdicts: Vec<Verdict>,
    pub overall: Verdict,
    /// Prepared statements this string defines, to remember if it runs.
    pub prepared: Prepared,
}

#[cfg(test)]
mod tests;
