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
    /// Relations whose writes run code or outlive a rollback (`w`), and the
    /// parents and views that reach them.
    writes_outlive: HashSet<String>,
}

/// One row per fact: kind, name, and for dependencies a third column.
/// Every function and operator here is one PostgreSQL resolves exactly in
/// `pg_catalog` (schema-qualified, or an exact built-in signature): the
/// objects being looked for must not be able to answer this query.
///
/// - `f` user functions, `o` user operators: outside `pg_catalog` and
///   `information_schema`, and not members of an extension a superuser owns
///   (the owner of a trusted extension can add objects of their own to it).
/// - `t` risky types: domains with constraints, types a user cast function
///   converts, and everything built on them (domains over them, their
///   arrays, composite types and ranges holding them).
/// - `r` relations reading which runs code: foreign tables, and tables with
///   a column of a risky type.
/// - `c` a view or a table's row-security policy depends on a user function,
///   operator, risky type or a sequence; `v` … on another relation (the
///   third column: running code spreads along these).
/// - `p` a view's definition or a row-security policy's condition calls the
///   built-in named in the third column (dependencies on built-ins are not
///   recorded, so the stored tree is read): one the reviewed list does not
///   know to be read-only means reading the relation runs code.
/// - `s` a schema named after the login holds objects: `"$user"` comes
///   before `public` on the default path.
/// - `w` writing the relation runs code or has effects a rollback does not
///   undo: it has user triggers or rules, a column default that draws on
///   a sequence or calls a user function, an identity column, or it is a
///   foreign table. `i` a relation inherits from (or is a partition of)
///   the third column: writes reach it through its parent.
pub const QUERY: &str = "\
WITH RECURSIVE trusted AS ( \
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d \
  JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid \
  JOIN pg_catalog.pg_roles r ON r.oid = e.extowner \
  WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e' AND r.rolsuper), \
sys AS (SELECT 'pg_catalog'::pg_catalog.regnamespace AS oid \
        UNION ALL SELECT 'information_schema'::pg_catalog.regnamespace), \
ufn AS (SELECT p.oid, p.proname FROM pg_catalog.pg_proc p \
        WHERE p.pronamespace NOT IN (SELECT oid FROM sys) \
          AND (p.tableoid, p.oid) NOT IN (SELECT classid, objid FROM trusted)), \
uop AS (SELECT o.oid, o.oprname FROM pg_catalog.pg_operator o \
        WHERE o.oprnamespace NOT IN (SELECT oid FROM sys) \
          AND (o.tableoid, o.oid) NOT IN (SELECT classid, objid FROM trusted)), \
utype AS (SELECT t.oid, t.typbasetype, t.typelem, t.typrelid FROM pg_catalog.pg_type t \
          WHERE t.typnamespace NOT IN (SELECT oid FROM sys) \
            AND (t.tableoid, t.oid) NOT IN (SELECT classid, objid FROM trusted)), \
edges AS ( \
  SELECT oid AS child, typbasetype AS parent FROM utype WHERE typbasetype <> 0 \
  UNION ALL SELECT oid, typelem FROM utype WHERE typelem <> 0 \
  UNION ALL SELECT t.oid, a.atttypid FROM utype t \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = t.typrelid WHERE t.typrelid <> 0 AND a.attnum > 0 \
  UNION ALL SELECT rngtypid, rngsubtype FROM pg_catalog.pg_range WHERE rngtypid IN (SELECT oid FROM utype) \
  UNION ALL SELECT rngmultitypid, rngtypid FROM pg_catalog.pg_range WHERE rngtypid IN (SELECT oid FROM utype)), \
risky(oid) AS ( \
  SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typtype = 'd' AND t.oid IN (SELECT oid FROM utype) \
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.contypid = t.oid) \
  UNION SELECT x.oid FROM pg_catalog.pg_cast c JOIN pg_catalog.pg_type x ON x.oid IN (c.castsource, c.casttarget) \
   WHERE c.castfunc IN (SELECT oid FROM ufn) AND x.oid IN (SELECT oid FROM utype) \
  UNION SELECT e.child FROM edges e JOIN risky r ON e.parent = r.oid), \
rels AS (SELECT c.oid, c.relkind, pg_catalog.concat(n.nspname, '.', c.relname) AS name FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.oid NOT IN (SELECT oid FROM sys)), \
deps AS ( \
  SELECT coalesce(w.ev_class, y.polrelid) AS rel, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d \
  LEFT JOIN pg_catalog.pg_rewrite w ON d.classid = 'pg_catalog.pg_rewrite'::pg_catalog.regclass AND w.oid = d.objid \
  LEFT JOIN pg_catalog.pg_policy y ON d.classid = 'pg_catalog.pg_policy'::pg_catalog.regclass AND y.oid = d.objid \
  WHERE d.deptype = 'n' AND (w.oid IS NOT NULL OR y.oid IS NOT NULL)) \
SELECT 'f', proname, '' FROM ufn \
UNION SELECT 'o', oprname, '' FROM uop \
UNION SELECT 't', t.typname, '' FROM pg_catalog.pg_type t WHERE t.oid IN (SELECT oid FROM risky) \
UNION SELECT 'r', name, '' FROM rels WHERE relkind = 'f' \
UNION SELECT 'r', r.name, '' FROM rels r JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid \
 WHERE a.attnum > 0 AND a.atttypid IN (SELECT oid FROM risky) \
UNION SELECT 'c', r.name, '' FROM deps d JOIN rels r ON r.oid = d.rel \
 WHERE d.refobjid IN (SELECT oid FROM ufn UNION ALL SELECT oid FROM uop UNION ALL SELECT oid FROM risky) \
    OR d.refobjid IN (SELECT oid FROM rels WHERE relkind = 'S') \
UNION SELECT 'v', r.name, o.name FROM deps d JOIN rels r ON r.oid = d.rel \
  JOIN rels o ON d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND o.oid = d.refobjid AND o.oid <> r.oid \
UNION SELECT 'p', r.name, p.proname FROM ( \
    SELECT w.ev_class AS rel, w.ev_action::text AS tree FROM pg_catalog.pg_rewrite w \
    UNION ALL SELECT y.polrelid, y.polqual::text FROM pg_catalog.pg_policy y WHERE y.polqual IS NOT NULL) d \
  JOIN rels r ON r.oid = d.rel \
  CROSS JOIN LATERAL pg_catalog.regexp_matches(d.tree, ':(?:funcid|aggfnoid|winfnoid) (\\d+)', 'g') m \
  JOIN pg_catalog.pg_proc p ON p.oid = m[1]::pg_catalog.oid \
 WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace \
UNION SELECT 'w', r.name, '' FROM rels r WHERE r.relkind = 'f' \
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger g WHERE g.tgrelid = r.oid AND NOT g.tgisinternal) \
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_rewrite w WHERE w.ev_class = r.oid AND w.rulename <> '_RETURN') \
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = r.oid AND a.attnum > 0 \
              AND NOT a.attisdropped AND a.attidentity <> '') \
   OR EXISTS (SELECT 1 FROM pg_catalog.pg_attrdef ad JOIN pg_catalog.pg_depend d \
                ON d.classid = 'pg_catalog.pg_attrdef'::pg_catalog.regclass AND d.objid = ad.oid \
              WHERE ad.adrelid = r.oid AND (d.refobjid IN (SELECT oid FROM ufn) \
                OR d.refobjid IN (SELECT oid FROM rels WHERE relkind = 'S'))) \
UNION SELECT 'i', c.name, p.name FROM pg_catalog.pg_inherits h \
  JOIN rels c ON c.oid = h.inhrelid JOIN rels p ON p.oid = h.inhparent \
UNION SELECT 's', n.nspname, '' FROM pg_catalog.pg_namespace n \
 WHERE n.nspname = current_user \
   AND (EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = n.oid) \
        OR EXISTS (SELECT 1 FROM pg_catalog.pg_proc p WHERE p.pronamespace = n.oid))";

impl UserObjects {
    /// From the rows of [`QUERY`]; rows of another shape are ignored.
    pub fn from_rows<'a>(
        rows: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>,
    ) -> UserObjects {
        let mut o = UserObjects::default();
        let mut spreads: Vec<(String, String)> = Vec::new();
        // (parent, child)
        let mut inherits: Vec<(String, String)> = Vec::new();
        for (kind, name, other) in rows {
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
                "r" | "c" => {
                    o.running_code.insert(name.to_owned());
                }
                "p" if !matches!(functions::lookup(other), Call::ReadOnly) => {
                    o.running_code.insert(name.to_owned());
                }
                "v" => spreads.push((name.to_owned(), other.to_owned())),
                "w" => {
                    o.writes_outlive.insert(name.to_owned());
                }
                "i" => inherits.push((other.to_owned(), name.to_owned())),
                _ => {}
            }
        }
        // A write through a parent or a view reaches what is under it.
        loop {
            let before = o.writes_outlive.len();
            for (above, below) in inherits.iter().chain(&spreads) {
                if o.writes_outlive.contains(below) {
                    o.writes_outlive.insert(above.clone());
                }
            }
            if o.writes_outlive.len() == before {
                break;
            }
        }
        // A view over a view that runs code runs it too.
        loop {
            let before = o.running_code.len();
            for (view, dep) in &spreads {
                if o.running_code.contains(dep) {
                    o.running_code.insert(view.clone());
                }
            }
            if o.running_code.len() == before {
                break;
            }
        }
        o
    }

    /// Whether writing any of `tables` (`schema.name`) may run code or have
    /// effects a rollback does not undo.
    pub fn write_outlives_rollback(&self, tables: &[String]) -> bool {
        !self.writes_outlive.is_empty() && tables.iter().any(|t| self.writes_outlive.contains(t))
    }

    fn nothing(&self) -> bool {
        self.functions.is_empty()
            && self.operators.is_empty()
            && self.types.is_empty()
            && self.running_code.is_empty()
            && self.own_schema.is_none()
    }

    /// Why user code may answer to one of `names`, if it may. `is_safe`
    /// says whether the role lists a function in `safe_functions`.
    pub fn hijack(
        &self,
        names: &Names,
        tables: &[TableName],
        is_safe: impl Fn(&str) -> bool,
    ) -> Option<String> {
        // Most databases have nothing to check: the hot path stays a branch.
        if self.nothing() {
            return None;
        }
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
        let o = UserObjects::from_rows([
            ("r", "public.v", ""),
            ("v", "public.v2", "public.v"),
            ("v", "public.v3", "public.v2"),
            ("p", "public.killer", "pg_terminate_backend"),
            ("p", "public.nexts", "nextval"),
            ("p", "public.harmless", "lower"),
        ]);
        let reads = |t: &str| {
            let (s, n) = t.split_once('.').unwrap();
            o.hijack(&Names::default(), &[TableName::new(s, n)], |_| false)
                .is_some()
        };
        assert!(reads("public.v3"), "through two views");
        assert!(reads("public.killer"), "a built-in with effects");
        assert!(reads("public.nexts"), "a policy that writes");
        assert!(!reads("public.harmless"));
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
            ("f", "lower", ""),
            ("f", "evil_row", ""),
            ("f", "my_func", ""),
            ("o", "=", ""),
            ("t", "dom", ""),
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
        let own = UserObjects::from_rows([("s", "app_read", "")]);
        assert!(own.hijack_t(&names(&[], &[], &[], &[]), never).is_some());
    }
}
