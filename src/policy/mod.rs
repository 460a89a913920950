//! Policy files (`policies/*.toml`): roles (named bundles of scope, each with
//! the least-privilege PostgreSQL user it logs in as) and identities (a name and
//! a kind). Loading validates everything up front and names the file, the key
//! and the fix, so a typo never silently widens or narrows access.
//!
//! The decision, from the engine to the audit record, is one [`Action`]
//! (allow, deny, hold) carried with more or less around it:
//! - the engine gives each statement a [`Verdict`] (the action, its rule,
//!   class and reason) and a whole string a [`Judgement`] (each verdict and
//!   the one that stands);
//! - the inspector ([`inspect`]) turns that into an
//!   [`inspect::Inspection`]: an [`inspect::Decision`] (the action with
//!   what acting on it needs: the client's error for a denial, an
//!   [`inspect::Held`] for a hold) and the facts the proxy and the log use;
//! - the proxy's trail moves the inspection's action, rule and tables into
//!   the `statement` record, where the action is `decision`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::classify::Class;

pub mod check;
mod enforce;
pub mod engine;
pub mod inspect;
pub mod limits;

pub use enforce::PolicyInspector;
pub use engine::{Action, Engine, Judgement, Prepared, PreparedClasses, Verdict};

/// Why policies could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("no policy files (*.toml) in {0}")]
    Empty(PathBuf),
}

/// The kind of an identity; it picks defaults (an agent gets the narrowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Human,
    Ci,
    Service,
    Agent,
}

/// How a held statement waits for its approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalMode {
    /// The session blocks until the decision.
    Wait,
    /// The statement errors at once; re-sent after approval it runs once.
    Defer,
}

/// The approval mode when the role does not set one: people at a terminal
/// wait for their colleague; agents, CI and services get an answer at once
/// and re-send after approval.
pub fn default_mode(kind: Kind) -> ApprovalMode {
    match kind {
        Kind::Human => ApprovalMode::Wait,
        Kind::Ci | Kind::Service | Kind::Agent => ApprovalMode::Defer,
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    /// PostgreSQL role the firewall logs in as for this role.
    pub upstream_user: String,
    #[serde(default)]
    pub allow: Vec<Class>,
    #[serde(default)]
    pub approve: Vec<Class>,
    #[serde(default)]
    pub deny: Vec<Class>,
    /// `schema.table` globs; statements touching other tables are denied.
    #[serde(default)]
    pub tables: Vec<String>,
    #[serde(default)]
    pub approvers: Vec<String>,
    #[serde(default)]
    pub mode: Option<ApprovalMode>,
    /// Longest grant of this role, e.g. `8h`.
    #[serde(default)]
    pub max_ttl: Option<String>,
    /// Functions this role may call that the classifier does not know as safe.
    #[serde(default)]
    pub safe_functions: Vec<String>,
    /// Row-estimate holds: a `write` DELETE, UPDATE or MERGE the planner
    /// expects to change more rows than this counts as `destructive`.
    #[serde(default)]
    pub max_rows: Option<u64>,
    /// The same, as a share of the changed table's rows (0 < f ≤ 1).
    #[serde(default)]
    pub max_rows_fraction: Option<f64>,
}

impl Role {
    /// Whether writes of this role are planned before they run.
    pub fn limits_rows(&self) -> bool {
        self.max_rows.is_some() || self.max_rows_fraction.is_some()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    pub kind: Kind,
    /// Roles this identity may be granted.
    #[serde(default)]
    pub roles: Vec<String>,
    /// A role held without a grant; only for `service` identities.
    #[serde(default)]
    pub standing: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    roles: BTreeMap<String, Role>,
    #[serde(default)]
    identities: BTreeMap<String, Identity>,
}

/// All loaded policy files, merged and validated.
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    pub roles: BTreeMap<String, Role>,
    pub identities: BTreeMap<String, Identity>,
    /// The file each role and identity came from, for error messages.
    origin: BTreeMap<String, PathBuf>,
}

impl PolicySet {
    /// Load every `*.toml` in `dir` (sorted by name) and validate the result.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        let read_err = |source| PolicyError::ReadDir {
            path: dir.to_owned(),
            source,
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(PolicyError::Empty(dir.to_owned()));
        }
        let mut set = PolicySet::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| PolicyError::File {
                path: path.clone(),
                message: e.to_string(),
            })?;
            set.add_file(&path, &text)?;
        }
        set.validate()?;
        Ok(set)
    }

    /// Parse one file's text into the set (used by tests and `load_dir`).
    pub fn add_file(&mut self, path: &Path, text: &str) -> Result<(), PolicyError> {
        let file_err = |message: String| PolicyError::File {
            path: path.to_owned(),
            message,
        };
        let file: PolicyFile = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
        add_unique(&mut self.origin, &mut self.roles, "roles", file.roles, path)
            .map_err(file_err)?;
        add_unique(
            &mut self.origin,
            &mut self.identities,
            "identities",
            file.identities,
            path,
        )
        .map_err(file_err)?;
        Ok(())
    }

    pub(crate) fn err_at(&self, key: &str, message: String) -> PolicyError {
        PolicyError::File {
            path: self.origin.get(key).cloned().unwrap_or_default(),
            message: format!("[{key}] {message}"),
        }
    }

    /// Cross-references: roles named by identities exist, approvers exist,
    /// standing access only for services, TTLs parse.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (name, role) in &self.roles {
            let key = format!("roles.{name}");
            if role.upstream_user.trim().is_empty() {
                return Err(self.err_at(&key, "upstream_user must not be empty".into()));
            }
            for a in &role.approvers {
                if !self.identities.contains_key(a) {
                    return Err(self.err_at(
                        &key,
                        format!("approver {a:?} is not a defined identity; add [identities.{a}]"),
                    ));
                }
            }
            engine::Scope::compile(&role.tables).map_err(|m| self.err_at(&key, m))?;
            if let Some(ttl) = &role.max_ttl {
                crate::config::parse_duration(ttl)
                    .map_err(|e| self.err_at(&key, format!("max_ttl: {e}")))?;
            }
            if let Some(f) = role.max_rows_fraction
                && !(f > 0.0 && f <= 1.0)
            {
                return Err(self.err_at(
                    &key,
                    format!("max_rows_fraction must be above 0 and at most 1, not {f}"),
                ));
            }
            for c in &role.approve {
                if role.allow.contains(c) || role.deny.contains(c) {
                    return Err(self.err_at(
                        &key,
                        format!("class {c} is listed in more than one of allow/approve/deny"),
                    ));
                }
            }
            if !role.approve.is_empty() && role.approvers.is_empty() {
                return Err(self.err_at(
                    &key,
                    "approve is set but approvers is empty; name who may approve".into(),
                ));
            }
        }
        for (name, ident) in &self.identities {
            let key = format!("identities.{name}");
            for r in ident.roles.iter().chain(ident.standing.iter()) {
                if !self.roles.contains_key(r) {
                    return Err(self.err_at(
                        &key,
                        format!("role {r:?} is not defined; add [roles.{r}] or fix the name"),
                    ));
                }
            }
            if ident.standing.is_some() && ident.kind != Kind::Service {
                return Err(self.err_at(
                    &key,
                    "standing access is only for kind = \"service\"; others need a grant".into(),
                ));
            }
        }
        Ok(())
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.get(name)
    }

    /// Whether `name` is a defined identity named among some role's
    /// approvers.
    pub fn is_approver(&self, name: &str) -> bool {
        self.identities.contains_key(name)
            && self
                .roles
                .values()
                .any(|r| r.approvers.iter().any(|a| a == name))
    }

    pub fn identity(&self, name: &str) -> Option<&Identity> {
        self.identities.get(name)
    }
}

/// Move `entries` into `into`, refusing a name another file already defined.
fn add_unique<T>(
    origin: &mut BTreeMap<String, PathBuf>,
    into: &mut BTreeMap<String, T>,
    section: &str,
    entries: BTreeMap<String, T>,
    path: &Path,
) -> Result<(), String> {
    for (name, value) in entries {
        let key = format!("{section}.{name}");
        if let Some(prev) = origin.get(&key) {
            return Err(format!(
                "[{key}] is already defined in {}; define each one once",
                prev.display()
            ));
        }
        origin.insert(key, path.to_owned());
        into.insert(name, value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<PolicySet, PolicyError> {
        let mut s = PolicySet::default();
        s.add_file(Path::new("p.toml"), text)?;
        s.validate()?;
        Ok(s)
    }

    #[test]
    fn example_policies_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        let set = PolicySet::load_dir(&dir).unwrap();
        for id in ["alice", "oncall", "deploy-bot", "billing-svc", "ops-agent"] {
            assert!(set.identity(id).is_some(), "{id}");
        }
        for r in ["readonly", "writer", "deployer", "agent"] {
            assert!(set.role(r).is_some(), "{r}");
        }
    }

    #[test]
    fn unknown_keys_and_bad_references_name_the_problem() {
        let e = load("[roles.r]\nupstream_user='u'\nalow=['read']").unwrap_err();
        assert!(e.to_string().contains("alow"), "{e}");
        let e = load("[identities.a]\nkind='human'\nroles=['nope']").unwrap_err();
        assert!(e.to_string().contains("[roles.nope]"), "{e}");
        let e = load("[roles.r]\nupstream_user='u'\n[identities.a]\nkind='human'\nstanding='r'")
            .unwrap_err();
        assert!(e.to_string().contains("only for kind"), "{e}");
        let e = load("[roles.r]\nupstream_user='u'\nallow=['reed']").unwrap_err();
        assert!(e.to_string().contains("reed"), "{e}");
        let mut set = PolicySet::default();
        set.add_file(Path::new("a.toml"), "[roles.r]\nupstream_user='u'")
            .unwrap();
        let e = set
            .add_file(Path::new("b.toml"), "[roles.r]\nupstream_user='v'")
            .unwrap_err();
        assert!(e.to_string().contains("already defined in a.toml"), "{e}");
    }
}
