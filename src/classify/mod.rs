//! Statement classes. Every statement is put in exactly one [`Class`]; the
//! policy engine decides per class. (The SQL walk that assigns classes lives
//! here too; it has no I/O so `veilctl check` can use it offline.)

use serde::{Deserialize, Serialize};

/// The risk class of a statement, least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Read,
    Write,
    Ddl,
    Destructive,
    Privileged,
    Unknown,
}

impl Class {
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Read => "read",
            Class::Write => "write",
            Class::Ddl => "ddl",
            Class::Destructive => "destructive",
            Class::Privileged => "privileged",
            Class::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Class {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
