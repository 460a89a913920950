//! Is a `DELETE`/`UPDATE`/`MERGE` condition bounded? It is only if every way
//! a row can satisfy it (every `OR` branch, after pushing `NOT` inwards) goes
//! through a test that restricts the target's own columns: `WHERE true`,
//! `WHERE 2 > 1`, `WHERE EXISTS (SELECT 1)`, `WHERE id = 3 OR true`,
//! `WHERE x = x` and `WHERE id IS NOT NULL` are all unbounded.
//!
//! This is syntax, not data: `WHERE id > 0` passes although it may match
//! every row. The planner's estimate (blast-radius preview) is the check on
//! that; this one catches the statements that are unbounded by construction.

use std::ops::ControlFlow;

use sqlparser::ast::{BinaryOperator, Expr, InTarget, Query, UnaryOperator, Visit, Visitor};

use super::walk::normalize_ident;

/// How column references can name the target table.
pub(crate) struct Target {
    /// Qualifiers that mean the target: its name, `schema.name`, its alias.
    pub qualifiers: Vec<String>,
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
        Expr::IsTrue(x)
        | Expr::IsFalse(x)
        | Expr::IsNotTrue(x)
        | Expr::IsNotFalse(x)
        | Expr::IsUnknown(x)
        | Expr::IsNotUnknown(x) => refs(x, t),
        Expr::BinaryOp { left, right, .. }
        | Expr::IsDistinctFrom(left, right)
        | Expr::IsNotDistinctFrom(left, right)
        | Expr::AnyOp { left, right, .. }
        | Expr::AllOp { left, right, .. } => one_sided(left, right, t),
        Expr::Like { expr, pattern, .. }
        | Expr::ILike { expr, pattern, .. }
        | Expr::SimilarTo { expr, pattern, .. } => one_sided(expr, pattern, t),
        Expr::In { expr, target, .. } => match target {
            InTarget::List(list) => refs(expr, t) && !list.iter().any(|x| refs(x, t)),
            InTarget::Unnest(x) => refs(expr, t) && !refs(x, t),
            // A subquery's own columns are not the target's.
            _ => refs(expr, t),
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
    refs(a, t) != refs(b, t)
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
