//! Maintenance and what acts beyond one database's tables: extensions,
//! `ALTER SYSTEM`, libraries, event triggers, foreign servers,
//! publications and subscriptions, languages, tablespaces, roles and
//! databases, which are privileged.

use serde_json::{Map, Value};

use super::{Reader, Seen};
use crate::classify::Class;

impl Reader {
    /// The class of a statement of this family; `Seen::Other` if it is not one.
    /// The kind alone decides (the node's fields are walked after, as in
    /// every family), so the node goes unread here.
    pub(super) fn admin_statement(&mut self, kind: &str, _: &Map<String, Value>) -> Seen {
        use Class::*;
        match kind {
            "RefreshMatViewStmt" => self.raise(Write, "REFRESH MATERIALIZED VIEW"),
            "CreateExtensionStmt"
            | "AlterExtensionStmt"
            | "AlterExtensionContentsStmt"
            | "AlterSystemStmt"
            | "LoadStmt"
            | "CheckPointStmt"
            | "CreateEventTrigStmt"
            | "AlterEventTrigStmt"
            | "CreateFdwStmt"
            | "AlterFdwStmt"
            | "CreateForeignServerStmt"
            | "AlterForeignServerStmt"
            | "CreateUserMappingStmt"
            | "AlterUserMappingStmt"
            | "CreateForeignTableStmt"
            | "ImportForeignSchemaStmt"
            | "CreatePublicationStmt"
            | "AlterPublicationStmt"
            | "CreateSubscriptionStmt"
            | "AlterSubscriptionStmt"
            | "CreatePLangStmt"
            | "CreateAmStmt"
            | "CreateTransformStmt"
            | "SecLabelStmt"
            | "CreateTableSpaceStmt"
            | "AlterTableSpaceOptionsStmt"
            | "AlterTableMoveAllStmt"
            | "CreateRoleStmt"
            | "AlterRoleStmt"
            | "AlterRoleSetStmt"
            | "GrantRoleStmt"
            | "DropRoleStmt"
            | "AlterDatabaseSetStmt"
            | "AlterDatabaseStmt" => self.raise(
                Privileged,
                format!("{kind} acts on the server, roles or code"),
            ),
            _ => return Seen::Other,
        }
        Seen::Judged
    }
}
