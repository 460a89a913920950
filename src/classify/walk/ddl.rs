//! Statements that change the schema: `CREATE`, `ALTER`, `DROP`,
//! `COMMENT`, `GRANT`/`REVOKE`, rules and routines. A SQL routine's body is
//! classified as the statements it runs; other languages cannot be seen
//! into.

use sqlparser::ast::{AlterTableOperation, CreateFunctionBody, Ident, ObjectType, Statement};

use super::{MAX_BODY_DEPTH, Walker};
use crate::classify::Class;
use crate::classify::names::{normalize_ident, string_literal};

impl Walker {
    /// The class of a statement of this family; `false` if it is not one.
    pub(super) fn ddl_statement(&mut self, s: &Statement) -> bool {
        use Class::*;
        match s {
            Statement::Drop {
                object_type, names, ..
            } => {
                if matches!(
                    object_type,
                    ObjectType::Table | ObjectType::View | ObjectType::MaterializedView
                ) {
                    for n in names {
                        self.table(n);
                    }
                }
                self.raise(Destructive, format!("DROP {object_type}"));
            }
            Statement::DropFunction(_)
            | Statement::DropProcedure { .. }
            | Statement::DropTrigger(_)
            | Statement::DropPolicy(_)
            | Statement::DropRule(_)
            | Statement::DropDomain(_)
            | Statement::DropExtension(_)
            | Statement::DropOperator(_)
            | Statement::DropOperatorFamily(_)
            | Statement::DropOperatorClass(_) => self.raise(Destructive, "DROP"),
            Statement::AlterTable(a) => {
                self.table(&a.name);
                for op in &a.operations {
                    self.alter_table(op);
                }
            }
            Statement::CreateTable(c) => {
                self.table(&c.name);
                self.raise(Ddl, "CREATE TABLE");
            }
            Statement::CreateView(v) => {
                self.table(&v.name);
                self.raise(Ddl, "CREATE VIEW");
            }
            Statement::CreateIndex(i) => {
                self.table(&i.table_name);
                self.raise(Ddl, "CREATE INDEX");
            }
            Statement::CreateSchema { .. }
            | Statement::CreateDatabase { .. }
            | Statement::CreateSequence { .. }
            | Statement::CreateDomain(_)
            | Statement::CreateType { .. }
            | Statement::CreateTrigger(_)
            | Statement::CreatePolicy(_)
            | Statement::CreateOperator(_)
            | Statement::CreateOperatorFamily(_)
            | Statement::CreateOperatorClass(_)
            | Statement::CreateTextSearch(_)
            | Statement::CreateAggregate(_)
            | Statement::CreateCollation(_)
            | Statement::Comment { .. }
            | Statement::Grant(_)
            | Statement::Revoke(_)
            | Statement::AlterDefaultPrivileges(_)
            | Statement::AlterSchema(_)
            | Statement::AlterIndex { .. }
            | Statement::AlterView(_)
            | Statement::AlterType(_)
            | Statement::AlterCollation(_)
            | Statement::AlterOperator(_)
            | Statement::AlterOperatorFamily(_)
            | Statement::AlterOperatorClass(_)
            | Statement::AlterTextSearch(_)
            | Statement::AlterPolicy(_)
            | Statement::AlterTrigger(_)
            | Statement::AlterFunction(_) => self.raise(Ddl, "schema change"),
            Statement::CreateRule(_) => self.raise(
                Destructive,
                "CREATE RULE rewrites later statements into ones infraveil never sees",
            ),
            Statement::CreateFunction(f) => {
                self.create_function("FUNCTION", f.language.as_ref(), f.function_body.as_ref())
            }
            Statement::CreateProcedure { language, .. } => {
                // Procedure bodies are quoted text in PostgreSQL; sqlparser
                // parses them as its own dialect's blocks, so judge by
                // language alone (a SQL procedure can do anything CALL can).
                self.create_function("PROCEDURE", language.as_ref(), None);
                self.raise(
                    Destructive,
                    "CREATE PROCEDURE: the body runs whatever it contains when called",
                );
            }
            _ => return false,
        }
        true
    }

    fn alter_table(&mut self, op: &AlterTableOperation) {
        use AlterTableOperation as A;
        use Class::*;
        match op {
            A::DropColumn { .. } => self.raise(Destructive, "ALTER TABLE … DROP COLUMN loses data"),
            A::DropConstraint { .. } | A::DropPrimaryKey { .. } | A::DropForeignKey { .. } => {
                self.raise(Destructive, "ALTER TABLE … DROP CONSTRAINT")
            }
            A::DropIndex { .. }
            | A::DropPartitions { .. }
            | A::DetachPartition { .. }
            | A::DetachPartitionOf { .. } => self.raise(Destructive, "ALTER TABLE … DROP/DETACH"),
            A::OwnerTo { .. } => self.raise(Privileged, "ALTER TABLE … OWNER TO"),
            A::DisableRowLevelSecurity | A::NoForceRowLevelSecurity => {
                self.raise(Privileged, "ALTER TABLE … weakens row-level security")
            }
            A::AddConstraint { .. }
            | A::AddColumn { .. }
            | A::DisableRule { .. }
            | A::DisableTrigger { .. }
            | A::AttachPartition { .. }
            | A::AttachPartitionOf { .. }
            | A::EnableAlwaysRule { .. }
            | A::EnableAlwaysTrigger { .. }
            | A::EnableReplicaRule { .. }
            | A::EnableReplicaTrigger { .. }
            | A::EnableRowLevelSecurity
            | A::ForceRowLevelSecurity
            | A::EnableRule { .. }
            | A::EnableTrigger { .. }
            | A::ReplicaIdentity { .. }
            | A::RenameColumn { .. }
            | A::RenameTable { .. }
            | A::RenameConstraint { .. }
            | A::AlterColumn { .. }
            | A::SetLogged
            | A::SetUnlogged
            | A::ValidateConstraint { .. }
            | A::Inherit { .. }
            | A::NoInherit { .. }
            | A::SetOptionsParens { .. }
            | A::ResetOptions { .. } => self.raise(Ddl, "ALTER TABLE"),
            _ => self.raise(
                Unknown,
                "ALTER TABLE with an operation infraveil does not classify",
            ),
        }
    }

    fn create_function(
        &mut self,
        what: &str,
        language: Option<&Ident>,
        body: Option<&CreateFunctionBody>,
    ) {
        let lang = language
            .map(normalize_ident)
            .unwrap_or_else(|| "sql".into());
        self.raise(Class::Ddl, format!("CREATE {what}"));
        match lang.as_str() {
            "sql" => {
                // A quoted body is parsed here; a BEGIN ATOMIC body is part
                // of the tree and the visitor walks it.
                if let Some(
                    CreateFunctionBody::AsBeforeOptions { body, .. }
                    | CreateFunctionBody::AsAfterOptions(body),
                ) = body
                    && let Some(text) = string_literal(body)
                {
                    self.body(what, &text);
                }
            }
            "plpgsql" | "pltcl" | "plperl" | "plv8" => self.raise(
                Class::Destructive,
                format!("CREATE {what} in {lang}: the body can run any SQL, including dynamic SQL, when called; infraveil cannot see inside it"),
            ),
            _ => self.raise(
                Class::Privileged,
                format!("CREATE {what} in language {lang} (untrusted or native code)"),
            ),
        }
    }

    /// Classify the text of a SQL-language function body; the function is
    /// at least as dangerous as what it runs.
    fn body(&mut self, what: &str, text: &str) {
        if self.depth >= MAX_BODY_DEPTH {
            return self.raise(Class::Unknown, "function bodies nested too deeply");
        }
        let inner = crate::classify::classify_at(text, self.depth + 1);
        for s in inner.statements {
            for t in s.tables {
                self.tables.insert(t);
            }
            for f in s.functions {
                self.unlisted_function(f);
            }
            self.raise(s.base_class, format!("{what} body: {}", s.base_reason));
        }
    }
}
