//! Statements that change the schema or who may use it: `DROP` (and
//! `TRUNCATE`), `ALTER TABLE` and its commands, renames, rules, policies,
//! ownership, grants and routines. A SQL routine's quoted body is handed to
//! `reconcile` to classify; other languages cannot be seen into.

use pg_query::protobuf::{AlterTableType, ObjectType};
use serde_json::{Map, Value};

use super::json::{bool_of, def_bool, int_of, names, node_of, str_of};
use super::{Reader, Seen};
use crate::classify::Class;

/// Object types that hold rows under a name programs use.
const TABLE_LIKE: &[&str] = &[
    "OBJECT_TABLE",
    "OBJECT_VIEW",
    "OBJECT_MATVIEW",
    "OBJECT_FOREIGN_TABLE",
];

impl Reader {
    /// The class of a statement of this family; `Seen::Other` if it is not one.
    pub(super) fn ddl_statement(&mut self, kind: &str, m: &Map<String, Value>) -> Seen {
        use Class::*;
        match kind {
            "DropStmt"
            | "TruncateStmt"
            | "DropdbStmt"
            | "DropOwnedStmt"
            | "DropTableSpaceStmt"
            | "DropSubscriptionStmt"
            | "DropUserMappingStmt" => {
                self.raise(Destructive, format!("{kind}: removes objects or rows"))
            }
            "RuleStmt" => self.raise(
                Destructive,
                "CREATE RULE rewrites later statements into ones infraveil never sees",
            ),
            "AlterTableStmt" => self.raise(Ddl, "ALTER TABLE"),
            "AlterTableCmd" => self.alter_table_cmd(m),
            "RenameStmt" | "AlterObjectSchemaStmt" => {
                let key = if kind == "RenameStmt" {
                    "rename_type"
                } else {
                    "object_type"
                };
                let t = ObjectType::try_from(int_of(m, key) as i32)
                    .map(|t| t.as_str_name())
                    .unwrap_or("");
                let schema = kind == "RenameStmt" && t == "OBJECT_SCHEMA";
                if schema || TABLE_LIKE.contains(&t) {
                    self.raise(
                        Destructive,
                        "renaming or moving a table or schema breaks every program that uses its name",
                    );
                } else {
                    self.raise(Ddl, "RENAME / SET SCHEMA");
                }
            }
            "CreatePolicyStmt" | "AlterPolicyStmt" => self.raise(
                Privileged,
                "a row-level security policy decides which rows every role sees",
            ),
            "AlterOwnerStmt" | "ReassignOwnedStmt" => self.raise(
                Privileged,
                "OWNER TO hands an object and its privileges to another role",
            ),
            "GrantStmt" => {
                if grantees_public(m) {
                    self.raise(
                        Privileged,
                        "GRANT … TO PUBLIC gives every role, present and future, the privilege",
                    );
                } else {
                    self.raise(Ddl, "GRANT/REVOKE");
                }
            }
            "AlterDefaultPrivilegesStmt" => self.raise(Ddl, "ALTER DEFAULT PRIVILEGES"),
            "CreateFunctionStmt" => {
                self.create_function(m);
                self.security_definer(m);
            }
            "AlterFunctionStmt" => {
                self.raise(Ddl, "ALTER FUNCTION");
                self.security_definer(m);
            }
            _ => return Seen::Other,
        }
        Seen::Judged
    }

    fn security_definer(&mut self, m: &Map<String, Value>) {
        let opts = m
            .get("options")
            .or_else(|| m.get("actions"))
            .and_then(Value::as_array);
        for o in opts.into_iter().flatten() {
            if let Some(("DefElem", d)) = node_of(o)
                && let Some(d) = d.as_object()
                && str_of(d, "defname") == "security"
                && def_bool(d)
            {
                self.raise(
                    Class::Privileged,
                    "SECURITY DEFINER runs the function with its owner's privileges",
                );
            }
        }
    }

    /// A routine is as dangerous as its body: a SQL body is classified
    /// (a `BEGIN ATOMIC` body is part of the tree and walked), other
    /// languages cannot be seen into.
    fn create_function(&mut self, m: &Map<String, Value>) {
        let what = if bool_of(m, "is_procedure") {
            "PROCEDURE"
        } else {
            "FUNCTION"
        };
        self.raise(Class::Ddl, format!("CREATE {what}"));
        let mut language = "sql".to_owned();
        let mut body = Vec::new();
        for o in m
            .get("options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(("DefElem", d)) = node_of(o) else {
                continue;
            };
            let Some(d) = d.as_object() else { continue };
            match str_of(d, "defname") {
                "language" => {
                    if let Some(("String", l)) = d.get("arg").and_then(node_of) {
                        language = l
                            .get("sval")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned();
                    }
                }
                "as" => {
                    if let Some(("List", l)) = d.get("arg").and_then(node_of) {
                        body = names(l.get("items"));
                    }
                }
                _ => {}
            }
        }
        match language.as_str() {
            "sql" => {
                if what == "PROCEDURE" {
                    self.raise(
                        Class::Destructive,
                        "CREATE PROCEDURE: the body runs whatever it contains when called",
                    );
                }
                // Classified only if the walk could not read the statement
                // (it classifies bodies itself): see `reconcile`.
                if let Some(text) = body.first() {
                    self.out.sql_bodies.push((what, text.clone()));
                }
            }
            "plpgsql" | "pltcl" | "plperl" | "plv8" => self.raise(
                Class::Destructive,
                format!("CREATE {what} in {language}: the body can run any SQL when called"),
            ),
            _ => self.raise(
                Class::Privileged,
                format!("CREATE {what} in language {language} (untrusted or native code)"),
            ),
        }
    }

    fn alter_table_cmd(&mut self, m: &Map<String, Value>) {
        use Class::*;
        let sub = AlterTableType::try_from(int_of(m, "subtype") as i32)
            .map(|t| t.as_str_name())
            .unwrap_or("AT_Unknown");
        match sub {
            "AT_DropColumn" => self.raise(Destructive, "ALTER TABLE … DROP COLUMN loses data"),
            "AT_DropConstraint" => self.raise(Destructive, "ALTER TABLE … DROP CONSTRAINT"),
            "AT_DetachPartition" | "AT_DetachPartitionFinalize" => {
                self.raise(Destructive, "ALTER TABLE … DETACH PARTITION")
            }
            "AT_SetUnLogged" => self.raise(
                Destructive,
                "SET UNLOGGED: the table's rows are lost after a crash and not replicated",
            ),
            "AT_AlterColumnType" => {
                let def = m
                    .get("def")
                    .and_then(node_of)
                    .and_then(|(_, d)| d.as_object());
                let using = def
                    .and_then(|d| d.get("raw_default"))
                    .is_some_and(|u| !u.is_null());
                if using || !lossless_type(def.and_then(|d| d.get("type_name"))) {
                    self.raise(
                        Destructive,
                        "ALTER COLUMN … TYPE rewrites every value (USING, or a type that can round or cut values)",
                    );
                } else {
                    self.raise(Ddl, "ALTER COLUMN … TYPE to a lossless type");
                }
            }
            "AT_ChangeOwner" => self.raise(Privileged, "ALTER TABLE … OWNER TO"),
            "AT_DisableTrig" | "AT_DisableTrigAll" | "AT_DisableTrigUser" | "AT_DisableRule" => {
                self.raise(
                    Privileged,
                    "disabling triggers or rules switches off checks and audit the table relies on",
                )
            }
            "AT_DisableRowSecurity" | "AT_NoForceRowSecurity" => {
                self.raise(Privileged, "ALTER TABLE … weakens row-level security")
            }
            _ => self.raise(Ddl, "ALTER TABLE"),
        }
    }
}

/// Whether a GRANT (or the GRANT inside ALTER DEFAULT PRIVILEGES) names PUBLIC.
fn grantees_public(m: &Map<String, Value>) -> bool {
    m.get("is_grant").and_then(Value::as_bool).unwrap_or(false)
        && m.get("grantees")
            .and_then(Value::as_array)
            .is_some_and(|g| {
                g.iter().any(|r| {
                    node_of(r)
                        .and_then(|(_, b)| b.as_object())
                        .is_some_and(|b| int_of(b, "roletype") == 5)
                })
            })
}

/// Types an `ALTER COLUMN … TYPE` may change to without losing any value.
fn lossless_type(type_name: Option<&Value>) -> bool {
    let Some(t) = type_name.and_then(Value::as_object) else {
        return false;
    };
    let n = names(t.get("names"));
    // Only the built-in types: a `public.text` domain is something else.
    let bare = match n.as_slice() {
        [only] => only.as_str(),
        [schema, name] if schema == "pg_catalog" => name.as_str(),
        _ => "",
    };
    let no_typmod = t
        .get("typmods")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    let no_array = t
        .get("array_bounds")
        .and_then(Value::as_array)
        .is_none_or(|m| m.is_empty());
    no_array && no_typmod && matches!(bare, "text" | "varchar")
}
