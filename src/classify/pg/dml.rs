//! Statements that read or change rows, and those that run code that may:
//! queries, `INSERT`, `UPDATE`, `DELETE`, `MERGE`, `COPY`, `CALL` and
//! `DO`. Where a class depends on how a condition bounds the rows, the
//! statement `needs_walk`: only sqlparser's walk has the bounds analysis.

use serde_json::{Map, Value};

use super::json::{bool_of, int_of, names, node_of, str_of};
use super::{Reader, Seen};
use crate::classify::Class;

impl Reader {
    /// The class of a statement of this family; `Seen::Other` if it is not one.
    pub(super) fn dml_statement(&mut self, kind: &str, m: &Map<String, Value>) -> Seen {
        use Class::*;
        match kind {
            "SelectStmt" => {
                self.raise(Read, "query (reads only)");
                if matches!(m.get("into_clause"), Some(Value::Object(_))) {
                    self.raise(Ddl, "SELECT … INTO creates a table");
                }
                if m.get("locking_clause")
                    .and_then(Value::as_array)
                    .is_some_and(|l| !l.is_empty())
                {
                    self.raise(Write, "SELECT … FOR UPDATE/SHARE locks rows");
                }
            }
            "InsertStmt" => {
                let upsert = self.not_run == 0
                    && matches!(m.get("on_conflict_clause"), Some(Value::Object(_)));
                self.out.needs_walk |= upsert;
                self.out.changes_rows |= upsert;
                self.raise(Write, "INSERT");
            }
            "UpdateStmt" | "DeleteStmt" => {
                self.out.needs_walk |= self.not_run == 0;
                self.out.changes_rows |= self.not_run == 0;
                let verb = if kind == "UpdateStmt" {
                    "UPDATE"
                } else {
                    "DELETE"
                };
                match m.get("where_clause") {
                    None | Some(Value::Null) => {
                        self.raise(Destructive, format!("{verb} has no WHERE: every row"))
                    }
                    Some(w) if !mentions_columns(w) => self.raise(
                        Destructive,
                        format!("{verb} has a WHERE that names no column: every row or none"),
                    ),
                    Some(_) => self.raise(Write, verb),
                }
            }
            "MergeStmt" => {
                self.out.needs_walk |= self.not_run == 0;
                self.out.changes_rows |= self.not_run == 0;
                let deletes = m
                    .get("merge_when_clauses")
                    .and_then(Value::as_array)
                    .is_some_and(|cs| {
                        cs.iter().any(|c| {
                            node_of(c)
                                .and_then(|(_, b)| b.as_object())
                                .is_some_and(|b| int_of(b, "command_type") == 5)
                        })
                    });
                if deletes {
                    self.raise(Destructive, "MERGE … THEN DELETE removes rows");
                } else {
                    self.raise(Write, "MERGE");
                }
            }
            "CopyStmt" => {
                // The tree cannot tell `TO STDOUT` from `TO ''` (both leave
                // the file name empty): only the walk's reading decides.
                self.out.needs_walk = true;
                if bool_of(m, "is_program") {
                    self.raise(
                        Destructive,
                        "COPY … PROGRAM runs a shell command on the server",
                    );
                } else if !str_of(m, "filename").is_empty() {
                    self.raise(Privileged, "COPY to or from a file on the database server");
                } else if bool_of(m, "is_from") {
                    self.raise(Write, "COPY FROM STDIN loads rows");
                } else {
                    self.raise(Read, "COPY TO STDOUT");
                }
            }
            "CallStmt" => {
                // A procedure's body is never visible here: the call is
                // unknown unless the role lists the procedure.
                self.raise(Write, "CALL runs a procedure");
                if let Some(Value::Object(f)) = m.get("funccall") {
                    let n = names(f.get("funcname")).join(".");
                    self.out.unlisted.insert(n.clone());
                    self.out.called.insert(n);
                    self.fields(f, &["funcname"]);
                }
                return Seen::Walked;
            }
            "DoStmt" => self.raise(Destructive, "DO runs a procedural block: any SQL"),
            _ => return Seen::Other,
        }
        Seen::Judged
    }
}

/// Whether an expression names a column (or `CURRENT OF` a cursor) at all.
fn mentions_columns(v: &Value) -> bool {
    match v {
        Value::Array(a) => a.iter().any(mentions_columns),
        Value::Object(m) => {
            if let Some((kind, _)) = node_of(v)
                && matches!(kind, "ColumnRef" | "CurrentOfExpr")
            {
                return true;
            }
            m.values().any(mentions_columns)
        }
        _ => false,
    }
}
