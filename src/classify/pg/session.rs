//! Statements that steer the session rather than touch data: `EXPLAIN`
//! (without ANALYZE nothing in it runs), prepared statements, transaction
//! control, cursors, `LISTEN`/`NOTIFY`, `DISCARD`, `LOCK`, and `SET`/`RESET`
//! (judged by `settings`).

use pg_query::protobuf::{TransactionStmtKind, VariableSetKind};
use serde_json::{Map, Value};

use super::json::{constant, def_bool, int_of, node_of, str_of};
use super::{Reader, Seen};
use crate::classify::{Class, settings};

impl Reader {
    /// The class of a statement of this family; `Seen::Other` if it is not one.
    pub(super) fn session_statement(&mut self, kind: &str, m: &Map<String, Value>) -> Seen {
        use Class::*;
        match kind {
            "ExplainStmt" => {
                // The last ANALYZE option wins, as in explain.c.
                let mut analyze = false;
                for o in m
                    .get("options")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(("DefElem", d)) = node_of(o)
                        && let Some(d) = d.as_object()
                        && str_of(d, "defname").starts_with("analy")
                    {
                        analyze = def_bool(d);
                    }
                }
                self.raise(Read, "EXPLAIN");
                if !analyze {
                    self.not_run += 1;
                    self.fields(m, &[]);
                    self.not_run -= 1;
                    return Seen::Walked;
                }
            }
            "PrepareStmt" => {
                self.out.prepares = Some(str_of(m, "name").to_owned());
                self.raise(Read, "PREPARE");
            }
            "TransactionStmt" => {
                let k = TransactionStmtKind::try_from(int_of(m, "kind") as i32)
                    .map(|k| k.as_str_name())
                    .unwrap_or("");
                if k.ends_with("PREPARE") || k.ends_with("_PREPARED") {
                    self.raise(
                        Write,
                        "two-phase commit: a prepared transaction outlives the session",
                    );
                } else {
                    self.raise(Read, "transaction control");
                }
            }
            "ExecuteStmt" | "DeallocateStmt" | "VariableShowStmt" | "ListenStmt"
            | "UnlistenStmt" | "DeclareCursorStmt" | "FetchStmt" | "ClosePortalStmt"
            | "ConstraintsSetStmt" | "ReturnStmt" => self.raise(Read, kind),
            // Both only return the session to its vetted start-up state.
            "DiscardStmt" => self.raise(Read, "DISCARD"),
            "NotifyStmt" => self.raise(Write, "NOTIFY signals other sessions"),
            "LockStmt" => self.raise(Write, "LOCK TABLE blocks other sessions"),
            "VariableSetStmt" => self.set(m),
            _ => return Seen::Other,
        }
        Seen::Judged
    }

    fn set(&mut self, m: &Map<String, Value>) {
        let name = str_of(m, "name");
        let kind = VariableSetKind::try_from(int_of(m, "kind") as i32)
            .unwrap_or(VariableSetKind::Undefined);
        match kind {
            VariableSetKind::VarResetAll => self.raise(
                Class::Read,
                "RESET ALL returns the session to its vetted start-up settings",
            ),
            VariableSetKind::VarSetMulti => self.raise(Class::Read, "SET TRANSACTION"),
            VariableSetKind::VarReset | VariableSetKind::VarSetDefault => {
                let (class, why) = settings::classify(name, None);
                self.raise(class, format!("RESET: {why}"));
            }
            VariableSetKind::VarSetValue => {
                let values: Vec<String> = m
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .map(|v| constant(v).unwrap_or_else(|| "\u{fffd}".into()))
                            .collect()
                    })
                    .unwrap_or_default();
                let (class, why) = settings::classify(name, Some(&values));
                self.raise(class, format!("SET: {why}"));
            }
            _ => {
                let (class, why) = settings::classify(name, Some(&["\u{fffd}".to_owned()]));
                self.raise(class, format!("SET: {why}"));
            }
        }
    }
}
