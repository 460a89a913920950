//! One pass over the audit log from a point in time: who logged in and
//! ran what, as the review and the guard generator need it. Reads the
//! store only; events it does not know are skipped.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::InventoryError;
use crate::audit::event::parse_time;
use crate::classify::Class;
use crate::store::Store;

/// The last time something happened, and in which role.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    pub at: String,
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<String>,
}

/// What one identity did in the window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct IdentityUse {
    pub logins: u64,
    pub statements: u64,
    pub last_login: Option<Seen>,
    pub last_statement: Option<Seen>,
    /// Statements per class (every decision counted).
    pub classes: BTreeMap<Class, u64>,
    /// Statements that were allowed or held, per class: what a policy
    /// covering what it actually ran needs.
    pub ran_classes: BTreeSet<Class>,
    /// Tables those statements touched.
    pub tables: BTreeSet<String>,
    pub roles: BTreeSet<String>,
}

/// Usage of the whole log from `since`.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub identities: BTreeMap<String, IdentityUse>,
    /// Grant id → first login with it.
    pub grants_used: BTreeMap<String, String>,
    /// Role → last login or statement in it.
    pub roles_used: BTreeMap<String, String>,
}

/// The fields of an event payload the inventory reads.
#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    time: Option<String>,
    identity: Option<String>,
    role: Option<String>,
    grant: Option<String>,
    class: Option<String>,
    decision: Option<String>,
    #[serde(default)]
    tables: Vec<String>,
}

/// Read every record from `since_ms` (Unix ms) on; only `identity`'s when
/// given. Disk-bound: call it off the async workers.
pub fn scan(store: &Store, since_ms: u64, identity: Option<&str>) -> Result<Usage, InventoryError> {
    let mut usage = Usage::default();
    // Every instance's chain (several share a control database), by time.
    for record in crate::audit::chains::merged(store, Some(since_ms))? {
        let record = record?;
        let Ok(p) = serde_json::from_str::<Payload>(&record.payload) else {
            continue;
        };
        let Some(time) = p.time.clone() else {
            continue;
        };
        if parse_time(&time).is_some_and(|t| t < since_ms) {
            continue;
        }
        if identity.is_some_and(|i| p.identity.as_deref() != Some(i)) {
            continue;
        }
        add(&mut usage, p, time);
    }
    Ok(usage)
}

fn add(usage: &mut Usage, p: Payload, time: String) {
    let (Some(identity), Some(role)) = (p.identity, p.role) else {
        return;
    };
    match p.kind.as_str() {
        "auth.succeeded" => {
            let u = usage.identities.entry(identity).or_default();
            u.logins += 1;
            u.last_login = Some(Seen {
                at: time.clone(),
                role: role.clone(),
                class: None,
                decision: None,
            });
            u.roles.insert(role.clone());
            if let Some(g) = p.grant {
                usage.grants_used.entry(g).or_insert_with(|| time.clone());
            }
            usage.roles_used.insert(role, time);
        }
        "statement" => {
            let u = usage.identities.entry(identity).or_default();
            u.statements += 1;
            let class = p
                .class
                .as_deref()
                .and_then(|c| serde_json::from_value::<Class>(c.into()).ok())
                .unwrap_or(Class::Unknown);
            *u.classes.entry(class).or_default() += 1;
            if p.decision.as_deref() != Some("deny") {
                u.ran_classes.insert(class);
                u.tables.extend(p.tables);
            }
            u.last_statement = Some(Seen {
                at: time.clone(),
                role: role.clone(),
                class: p.class,
                decision: p.decision,
            });
            usage.roles_used.insert(role, time);
        }
        _ => {}
    }
}
