//! What the upstream database's own objects can make of a statement's
//! names. The classifier reads text: `lower(v)` is the reviewed built-in
//! unless a `public.lower(varchar)` exists, `t.fn` is a column unless `t`
//! has none and a function `fn(t)` exists, `x::dom` is a cast unless `dom`
//! is a domain whose CHECK calls a function. So each session reads the
//! user-defined objects of its database once (functions, operators, risky
//! types, a schema named after the login) and every statement's names are
//! held against them: a name user code can answer to makes it `unknown`.
//!
//! Pure: the query text and the rows it returns in, a verdict out.

use std::collections::HashSet;

use serde::Serialize;

use super::TableName;
use super::functions::{self, Call};

/// Names a statement reaches that a user object of the same name could
/// take over, as PostgreSQL's reading gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Names {
    /// Functions called without a schema (the search path picks them).
    pub functions: Vec<String>,
    /// Operators applied without `OPERATOR(pg_catalog.…)`.
    pub operators: Vec<String>,
    /// Types cast to or declared, without `pg_catalog.`.
    pub types: Vec<String>,
    /// Last names of `a.b` references and `(x).b` selections: attribute
    /// notation calls a function `b(a)` when `a` has no column `b`.
    pub fields: Vec<String>,
    /// Relations named without a schema.
    pub unqualified_relations: bool,
}

/// The user-defined objects of one database, as one upstream login sees it.
#[derive(Debug, Clone, Default)]
pub struct UserObjects {
    functions: HashSet<String>,
    operators: HashSet<String>,
    types: HashSet<String>,
    /// A schema named after the login holds objects: `"$user"` comes before
    /// `public` on the default path, so unqualified names may mean it.
    own_schema: Option<String>,
    /// Views and row-security policies that call user functions: reading
    /// the relation runs them (`schema.name`).
    running_code: HashSet<String>,
}

/// One row per object: kind (`f`, `o`, `t`, `s`) and name. Extension
/// members are left out: they are installed by an administrator and the
/// reviewed list judges the ones people call. Operators count only when
/// both operands are built-in types: one on a user type is picked only for
/// values of that type, which come from user objects already judged.
pub const QUERY: &str = "\
SELECT 'f', p.proname FROM pg_catalog.pg_proc p \
 JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                   WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass \
                     AND d.objid = p.oid AND d.deptype = 'e') \
UNION SELECT 'o', o.oprname FROM pg_catalog.pg_operator o \
 WHERE o.oprnamespace <> 'pg_catalog'::pg_catalog.regnamespace \
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
                   WHERE d.classid = 'pg_catalog.pg_operator'::pg_catalog.regclass \
                     AND d.objid = o.oid AND d.deptype = 'e') \
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type t \
                   WHERE t.oid IN (o.oprleft, o.oprright) \
                     AND t.typnamespace <> 'pg_catalog'::pg_catalog.regnamespace) \
UNION SELECT 't', t.typname FROM pg_catalog.pg_type t \
 WHERE t.typtype = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.contypid = t.oid) \
UNION SELECT 't', t.typname FROM pg_catalog.pg_cast c \
 JOIN pg_catalog.pg_proc p ON p.oid = c.castfunc \
 JOIN pg_catalog.pg_type t ON t.oid IN (c.castsource, c.casttarget) \
 WHERE p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace \
UNION SELECT 'r', c.relnamespace::pg_catalog.regnamespace::text || '.' || c.relname \
  FROM pg_catalog.pg_depend d \
  JOIN pg_catalog.pg_proc p ON d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND p.oid = d.refobjid \
  LEFT JOIN pg_catalog.pg_rewrite w ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND w.oid = d.objid \
  LEFT JOIN pg_catalog.pg_policy y ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND y.oid = d.objid \
  JOIN pg_catalog.pg_class c ON c.oid = coalesce(w.ev_class, y.polrelid) \
 WHERE p.pronamespace <> 'pg_catalog'::pg_catalog.regnamespace \
UNION SELECT 's', n.nspname FROM pg_catalog.pg_namespace n \
 WHERE n.nspname = current_user \
   AND (EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid) \
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid))";

impl UserObjects {
    /// From the rows of [`QUERY`]; rows of another shape are ignored.
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> UserObjects {
        let mut o = UserObjects::default();
        for (kind, name) in rows {
            match kind {
                "f" => {
                    o.functions.insert(name.to_owned());
                }
                "o" => {
                    o.operators.insert(name.to_owned());
                }
                "t" => {
                    o.types.insert(name.to_owned());
                }
                "s" => o.own_schema = Some(name.to_owned()),
                "r" => {
                    o.running_code.insert(name.to_owned());
                }
                _ => {}
            }
        }
        o
    }

    /// Why user code may answer to one of `names`, if it may. `is_safe`
    /// says whether the role lists a function in `safe_functions`.
    pub fn hijack(
        &self,
        names: &Names,
        tables: &[TableName],
        is_safe: impl Fn(&str) -> bool,
    ) -> Option<String> {
        if let Some(t) = tables
            .iter()
            .find(|t| self.running_code.contains(&t.to_string()))
        {
            return Some(format!(
                "reads {t}, a view or row-security policy that calls a user-defined function"
            ));
        }
        // Unreviewed names are unknown already; a reviewed built-in's name
        // with a user function beside it is the trap.
        if let Some(f) = names.functions.iter().find(|f| {
            self.functions.contains(*f)
                && !matches!(functions::lookup(f), Call::Unlisted)
                && !is_safe(f)
        }) {
            return Some(format!(
                "calls {f}(), and this database has a user-defined function named {f} that PostgreSQL may pick instead of the built-in"
            ));
        }
        if let Some(op) = names.operators.iter().find(|o| self.operators.contains(*o)) {
            return Some(format!(
                "applies {op}, and this database has a user-defined operator {op} that PostgreSQL may pick instead of the built-in"
            ));
        }
        if let Some(t) = names.types.iter().find(|t| self.types.contains(*t)) {
            return Some(format!(
                "casts to or declares {t}, a type whose CHECK constraint or cast runs a function"
            ));
        }
        if let Some(f) = names
            .fields
            .iter()
            .find(|f| self.functions.contains(*f) && !is_safe(f))
        {
            return Some(format!(
                "selects .{f}, and this database has a function {f}(): attribute notation calls it when there is no such column"
            ));
        }
        if names.unqualified_relations
            && let Some(s) = &self.own_schema
        {
            return Some(format!(
                "names a table without a schema, and the schema {s} (named after the upstream login) comes before public on the search path"
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl UserObjects {
        fn hijack_t(&self, n: &Names, is_safe: impl Fn(&str) -> bool) -> Option<String> {
            self.hijack(n, &[], is_safe)
        }
    }

    #[test]
    fn views_and_policies_that_call_user_code_are_not_reads() {
        let o = UserObjects::from_rows([("r", "public.v")]);
        let n = Names::default();
        assert!(
            o.hijack(&n, &[TableName::new("public", "v")], |_| false)
                .is_some()
        );
        assert!(
            o.hijack(&n, &[TableName::new("public", "t")], |_| false)
                .is_none()
        );
    }

    #[test]
    fn user_objects_take_over_only_the_names_they_share() {
        let o = UserObjects::from_rows([
            ("f", "lower"),
            ("f", "evil_row"),
            ("f", "my_func"),
            ("o", "="),
            ("t", "dom"),
        ]);
        let names = |f: &[&str], op: &[&str], t: &[&str], fields: &[&str]| Names {
            functions: f.iter().map(|s| s.to_string()).collect(),
            operators: op.iter().map(|s| s.to_string()).collect(),
            types: t.iter().map(|s| s.to_string()).collect(),
            fields: fields.iter().map(|s| s.to_string()).collect(),
            unqualified_relations: true,
        };
        let never = |_: &str| false;
        assert!(
            o.hijack_t(&names(&["lower"], &[], &[], &[]), never)
                .is_some()
        );
        assert!(
            o.hijack_t(&names(&["upper"], &[], &[], &[]), never)
                .is_none()
        );
        // Unreviewed functions are the policy's business (safe_functions).
        assert!(
            o.hijack_t(&names(&["my_func"], &[], &[], &[]), never)
                .is_none()
        );
        assert!(o.hijack_t(&names(&[], &["="], &[], &[]), never).is_some());
        assert!(o.hijack_t(&names(&[], &["<"], &[], &[]), never).is_none());
        assert!(o.hijack_t(&names(&[], &[], &["dom"], &[]), never).is_some());
        assert!(
            o.hijack_t(&names(&[], &[], &[], &["evil_row"]), never)
                .is_some()
        );
        assert!(
            o.hijack_t(&names(&[], &[], &[], &["my_func"]), |f| f == "my_func")
                .is_none()
        );
        assert!(o.hijack_t(&names(&[], &[], &[], &["id"]), never).is_none());
        assert!(
            UserObjects::default()
                .hijack_t(&names(&["lower"], &["="], &["dom"], &["evil_row"]), never)
                .is_none()
        );
        let own = UserObjects::from_rows([("s", "app_read")]);
        assert!(own.hijack_t(&names(&[], &[], &[], &[]), never).is_some());
    }
}
