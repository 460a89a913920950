//! Maintenance and server administration: `VACUUM`, `ANALYZE`, `REFRESH`,
//! and what acts beyond one database's tables (extensions, roles, foreign
//! servers, shared libraries), which is privileged.

use sqlparser::ast::Statement;

use super::Walker;
use crate::classify::Class;

impl Walker {
    /// The class of a statement of this family; `false` if it is not one.
    pub(super) fn admin_statement(&mut self, s: &Statement) -> bool {
        use Class::*;
        match s {
            Statement::Vacuum(v) => {
                if let Some(n) = &v.table_name {
                    self.table(n);
                }
                self.raise(Ddl, "VACUUM (maintenance)");
            }
            Statement::Analyze(_) => self.raise(Ddl, "ANALYZE (maintenance)"),
            Statement::RefreshMaterializedView(_) => self.raise(Write, "REFRESH MATERIALIZED VIEW"),
            Statement::CreateExtension(_) => self.raise(
                Privileged,
                "CREATE EXTENSION installs code into the database",
            ),
            Statement::CreateRole(_)
            | Statement::AlterRole { .. }
            | Statement::CreateUser(_)
            | Statement::AlterUser(_)
            | Statement::GrantRole(_)
            | Statement::RevokeRole(_) => self.raise(Privileged, "role or membership change"),
            Statement::CreateServer(_)
            | Statement::CreateForeignTable(_)
            | Statement::CreateForeignDataWrapper(_)
            | Statement::CreateUserMapping(_) => self.raise(
                Privileged,
                "foreign server objects reach outside the database",
            ),
            Statement::Load { .. } => self.raise(Privileged, "LOAD loads a shared library"),
            _ => return false,
        }
        true
    }
}
