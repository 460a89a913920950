//! Is a `DELETE`/`UPDATE`/`MERGE` condition bounded? It is only if every way
//! a row can satisfy it (every `OR` branch, after pushing `NOT` inwards) goes
//! through a test that restricts the target's own columns: `WHERE true`,
//! `WHERE 2 > 1`, `WHERE EXISTS (SELECT 1)`, `WHERE id = 3 OR true`,
//! `WHERE x = x` and `WHERE id IS NOT NULL` are all unbounded.
//!
//! Disguised tautologies count as what they are: `(id = id) IS TRUE`,
//! `x = true` over `x`, `IS DISTINCT FROM NULL` (= `IS NOT NULL`), `LIKE '%'`,
//! a column compared with a subquery that has no table of its own
//! (`id = (SELECT id)` is the row's own id) or that reads the target table
//! unfiltered (`id IN (SELECT id FROM same_table)`), and a comparison with a
//! second alias of the target (`USING t t2 WHERE t.id = t2.id`).
//!
//! This is syntax, not data: `WHERE id > 0` passes although it may match
//! every row. The planner's estimate (blast-radius preview) is the check on
//! that; this one catches the statements that are unbounded by construction.

use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, Expr, InTarget, Query, SelectItem, SetExpr, TableFactor, UnaryOperator, Value,
    Visit, Visitor,
};

use super::TableName;
use super::names::{dotted, normalize_ident, string_literal, table_name};

/// How column references can name the target table.
pub(crate) struct Target {
    /// Qualifiers that mean the target: its name, `schema.name`, its alias,
    /// and the aliases of other FROM/USING items that are the same table.
    pub qualifiers: Vec<String>,
    /// The target table, to spot it in subqueries.
    pub table: Option<TableName>,
    /// Whether an unqualified column must be the target's. False when other
    /// relations are in scope (`USING`, `FROM`), where it may be theirs.
    pub unqualified_is_target: bool,
}

/// True if `cond` restricts the target's rows on every branch.
pub(crate) fn bounded(cond: &Expr, target: &Target) -> bool {
    restricts(cond, false, target)
}

fn restricts(e: &Expr, neg: bool, t: &Target) -> bool {
    use BinaryOperator as B;
    match e {
        Expr::Nested(inner) => restricts(inner, neg, t),
        Expr::UnaryOp {
            op: UnaryOperator::Not,
            expr,
        } => restricts(expr, !neg, t),
        Expr::BinaryOp {
            left,
            op: B::And,
            right,
        } => {
            if neg {
                restricts(left, true, t) && restricts(right, true, t)
            } else {
                restricts(left, false, t) || restricts(right, false, t)
            }
        }
        Expr::BinaryOp {
            left,
            op: B::Or,
            right,
        } => {
            if neg {
                restricts(left, true, t) || restricts(right, true, t)
            } else {
                restricts(left, false, t) && restricts(right, false, t)
            }
        }
        // `IS NOT NULL` keeps (nearly) every row of a NOT NULL column.
        Expr::IsNotNull(x) => neg && refs(x, t),
        Expr::IsNull(x) => !neg && refs(x, t),
        // `p IS TRUE` / `p IS NOT FALSE` hold where `p` does (nearly: not
        // where it is null); `IS FALSE` / `IS NOT TRUE` where `NOT p` does.
        Expr::IsTrue(x) | Expr::IsNotFalse(x) => restricts(x, neg, t),
        Expr::IsFalse(x) | Expr::IsNotTrue(x) => restricts(x, !neg, t),
        Expr::IsUnknown(x) => !neg && refs(x, t),
        Expr::IsNotUnknown(x) => neg && refs(x, t),
        // `x IS DISTINCT FROM NULL` is `x IS NOT NULL`.
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) if is_null(a) || is_null(b) => {
            let x = if is_null(a) { b } else { a };
            let not_null = matches!(e, Expr::IsDistinctFrom(..));
            refs(x, t) && (not_null == neg)
        }
        // `p = true` is `p`; `p = false` and `p <> true` are `NOT p`.
        Expr::BinaryOp { left, op, right }
            if matches!(op, B::Eq | B::NotEq)
                && (boolean(left).is_some() || boolean(right).is_some()) =>
        {
            let (b, other) = match boolean(left) {
                Some(b) => (b, right),
                None => (boolean(right).unwrap_or(true), left),
            };
            let positive = b == matches!(op, B::Eq);
            restricts(other, if positive { neg } else { !neg }, t)
        }
        // "Every row but these": `id <> 5`, `NOT (id = 5)`, `id NOT IN (…)`,
        // `id IS DISTINCT FROM 5` keep the table's rows nearly whole.
        Expr::BinaryOp { op: B::NotEq, .. } | Expr::IsDistinctFrom(..) if !neg => false,
        Expr::BinaryOp { op: B::Eq, .. } | Expr::IsNotDistinctFrom(..) if neg => false,
        // `name ~ ''` and friends match every non-null value.
        Expr::BinaryOp {
            left,
            op: B::PGRegexMatch | B::PGRegexIMatch,
            right,
        } => one_sided(left, right, t) && !regex_matches_everything(right),
        Expr::BinaryOp { left, right, .. }
        | Expr::IsDistinctFrom(left, right)
        | Expr::IsNotDistinctFrom(left, right)
        | Expr::AnyOp { left, right, .. }
        | Expr::AllOp { left, right, .. } => one_sided(left, right, t),
        Expr::Like { expr, pattern, .. }
        | Expr::ILike { expr, pattern, .. }
        | Expr::SimilarTo { expr, pattern, .. } => {
            one_sided(expr, pattern, t) && !matches_everything(pattern)
        }
        Expr::In {
            negated: true,
            target: InTarget::List(_),
            ..
        } if !neg => false,
        Expr::In {
            negated: false,
            target: InTarget::List(_),
            ..
        } if neg => false,
        Expr::In { expr, target, .. } => match target {
            InTarget::List(list) => refs(expr, t) && !list.iter().any(|x| refs(x, t)),
            InTarget::Unnest(x) => refs(expr, t) && !refs(x, t),
            InTarget::Subquery(q) => refs(expr, t) && independent(q, t),
            InTarget::Table { .. } => false,
        },
        Expr::Between {
            expr, low, high, ..
        } => refs(expr, t) && !refs(low, t) && !refs(high, t),
        // A bare boolean column.
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => refs(e, t),
        // Anything else (functions, CASE, constants, EXISTS) is not shown to
        // restrict: fail closed.
        _ => false,
    }
}

/// A comparison restricts if exactly one side reads the target's columns:
/// `id = 3` does, `x = x` and `a + 0 = a` do not.
fn one_sided(a: &Expr, b: &Expr, t: &Target) -> bool {
    let side = |x: &Expr| match subquery(x) {
        // A subquery that may yield the row's own value counts as the
        // target's side.
        Some(q) => !independent(q, t),
        None => refs(x, t),
    };
    side(a) != side(b)
}

fn subquery(e: &Expr) -> Option<&Query> {
    match e {
        Expr::Subquery(q) => Some(q),
        Expr::Nested(x) => subquery(x),
        _ => None,
    }
}

fn is_null(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if v.value == Value::Null)
}

fn boolean(e: &Expr) -> Option<bool> {
    match e {
        Expr::Value(v) => match v.value {
            Value::Boolean(b) => Some(b),
            _ => None,
        },
        Expr::Nested(x) => boolean(x),
        _ => None,
    }
}

/// A string constant pattern, through parentheses.
fn pattern(e: &Expr) -> Option<String> {
    match e {
        Expr::Nested(x) => pattern(x),
        other => string_literal(other),
    }
}

/// `LIKE '%'`, `LIKE '%%'`: every non-null value matches.
fn matches_everything(p: &Expr) -> bool {
    pattern(p).is_some_and(|p| p.chars().all(|c| c == '%'))
}

/// `~ ''`, `~ '.*'` and the like: every non-null value matches.
fn regex_matches_everything(p: &Expr) -> bool {
    pattern(p).is_some_and(|p| {
        matches!(
            p.as_str(),
            "" | ".*" | "^" | "$" | "^.*" | ".*$" | "^.*$" | "()"
        )
    })
}

/// Whether a subquery's rows are shown not to be the outer row's own: it
/// has a FROM of its own, names no outer target column in its select list,
/// and reads the target table only filtered (a WHERE or a LIMIT).
fn independent(q: &Query, t: &Target) -> bool {
    let SetExpr::Select(s) = &*q.body else {
        return false;
    };
    if s.from.is_empty() {
        return false;
    }
    let outer = Target {
        qualifiers: t.qualifiers.clone(),
        table: None,
        unqualified_is_target: false,
    };
    let names_outer = s.projection.iter().any(|p| match p {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => refs(e, &outer),
        _ => true,
    });
    if names_outer {
        return false;
    }
    let mut own = Vec::new();
    let mut reads_target = false;
    for r in s
        .from
        .iter()
        .flat_map(|f| std::iter::once(&f.relation).chain(f.joins.iter().map(|j| &j.relation)))
    {
        match r {
            TableFactor::Table { name, alias, .. } => {
                let n = dotted(name);
                reads_target |= t.table.is_none() || table_name(name) == t.table;
                own.push(n.rsplit('.').next().unwrap_or(&n).to_owned());
                own.push(n);
                if let Some(a) = alias {
                    own.push(normalize_ident(&a.name));
                }
            }
            // A derived table or function may read the target: fail closed.
            _ => reads_target = true,
        }
    }
    if !reads_target || q.limit_clause.is_some() || q.fetch.is_some() {
        return true;
    }
    let inner = Target {
        qualifiers: own,
        table: None,
        unqualified_is_target: true,
    };
    // Within the subquery, `IS NOT NULL` on its own column is a real filter
    // (ORMs write `id IN (SELECT id FROM t WHERE paid_at IS NOT NULL)`).
    s.selection
        .as_ref()
        .is_some_and(|w| bounded(w, &inner) || matches!(w, Expr::IsNotNull(x) if refs(x, &inner)))
}

/// Does `e` reference a target column directly (not inside a subquery)?
fn refs(e: &Expr, t: &Target) -> bool {
    struct Refs<'a> {
        t: &'a Target,
        depth: usize,
    }
    impl Visitor for Refs<'_> {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth > 0 {
                return ControlFlow::Continue(());
            }
            let hit = match e {
                Expr::Identifier(_) => self.t.unqualified_is_target,
                Expr::CompoundIdentifier(parts) if parts.len() >= 2 => {
                    let q = parts[..parts.len() - 1]
                        .iter()
                        .map(normalize_ident)
                        .collect::<Vec<_>>()
                        .join(".");
                    let last = normalize_ident(&parts[parts.len() - 2]);
                    self.t.qualifiers.iter().any(|x| *x == q || *x == last)
                }
                _ => false,
            };
            if hit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        }
    }
    e.visit(&mut Refs { t, depth: 0 }).is_break()
}

#[cfg(test)]
mod tests {
    use crate::classify::{Class, classify};

    #[test]
    fn constant_true_and_self_comparisons_are_unbounded() {
        for w in [
            "true",
            "1=1",
            "'a'='a'",
            "id = 3 OR true",
            "NOT false",
            "2 > 1",
            "EXISTS (SELECT 1)",
            "x = x",
            "id IS NOT NULL",
            "NOT (id IS NULL)",
            "(id = 1) OR (1 = 1)",
            "NOT (id = 3 AND false)",
            "id + 0 = id",
            "$1",
            "coalesce(id = id, true)",
        ] {
            let sql = format!("DELETE FROM t WHERE {w}");
            assert_eq!(classify(&sql).class(), Class::Destructive, "{sql}");
            let sql = format!("UPDATE t SET a = 1 WHERE {w}");
            assert_eq!(classify(&sql).class(), Class::Destructive, "{sql}");
        }
    }

    #[test]
    fn ordinary_filters_are_bounded() {
        for w in [
            "id = 3",
            "id = $1",
            "t.id = 3 OR t.id = 4",
            "id IN (1, 2, 3)",
            "id IN (SELECT order_id FROM refunds WHERE day = current_date)",
            "created_at < now() - interval '30 days' AND status = 'done'",
            "true AND id = 7",
            "email ILIKE '%@example.com'",
            "id BETWEEN 1 AND 10",
            "archived",
            "deleted_at IS NULL",
            "NOT (id <> 3)",
        ] {
            let sql = format!("DELETE FROM t WHERE {w}");
            assert_eq!(classify(&sql).class(), Class::Write, "{sql}");
        }
    }

    #[test]
    fn other_relations_make_unqualified_columns_ambiguous() {
        // `k` may be the USING relation's column: the target is unfiltered.
        let sql = "DELETE FROM t USING (SELECT 1 AS k) s WHERE k = 1";
        assert_eq!(classify(sql).class(), Class::Destructive);
        let sql = "DELETE FROM t USING u WHERE t.uid = u.id AND u.banned";
        assert_eq!(classify(sql).class(), Class::Write);
        let sql = "UPDATE orders o SET total = 0 FROM customers c WHERE o.customer_id = c.id";
        assert_eq!(classify(sql).class(), Class::Write);
        let sql = "UPDATE orders o SET total = 0 FROM customers c WHERE c.id = 3";
        assert_eq!(classify(sql).class(), Class::Destructive);
    }
}
