//! Who *could* touch production: the inventory half of "audit everything".
//!
//! - [`radius`] — `veilctl blast-radius`: what one identity may do right now
//!   and at most, per role (held, standing or grantable), per class, and
//!   per table once intersected with what PostgreSQL itself grants the
//!   role's upstream user.
//! - [`catalog`] — the read-only look at PostgreSQL that feeds it: role
//!   attributes, memberships, per-table and per-column privileges,
//!   ownership, row estimates and sizes (one `READ ONLY` transaction with a
//!   statement timeout, logged in as the upstream user itself).
//! - [`compare`] — the flags: where PostgreSQL allows more than the policy
//!   (defence in depth is thinner than it looks) and where the policy allows
//!   what PostgreSQL will refuse. Pure logic over the two views.
//! - [`usage`] — one pass over the audit log: last login and last
//!   statement per identity, which grants and roles were used, which
//!   tables and classes an identity ran.
//! - [`review`] — `veilctl access review`: every identity, its roles,
//!   standing access, grants and last use, with the findings a compliance
//!   job can fail on.
//! - [`guard`] — `veilctl policy init`: a least-privilege guard config for
//!   a kind of identity, or the narrowest one that covers what an identity
//!   actually ran.
//! - [`text`] — the blast radius and the access review as text, for
//!   `veilctl` and the web console alike.
//!
//! The module sits above the policy engine, grants, the store and the
//! audit log, and below the admin API; it only reads them.

pub mod catalog;
pub mod compare;
pub mod guard;
pub mod radius;
pub mod review;
pub mod text;
pub mod usage;

/// Why an inventory could not be made.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("identity {0:?} is not defined in the policies")]
    UnknownIdentity(String),
    #[error(
        "identity {identity} neither holds nor may be granted role {role:?} (its roles: {roles})"
    )]
    NotItsRole {
        identity: String,
        role: String,
        roles: String,
    },
    #[error("the audit log could not be read: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("{0}")]
    Invalid(String),
}
