//! The SQLSTATE codes Infraveil sends, named once so every error path agrees.

pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
pub const SYNTAX_ERROR: &str = "42601";
pub const INVALID_PASSWORD: &str = "28P01";
pub const INVALID_AUTHORIZATION_SPECIFICATION: &str = "28000";
pub const PROTOCOL_VIOLATION: &str = "08P01";
pub const CONNECTION_FAILURE: &str = "08006";
pub const SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION: &str = "08001";
pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
pub const QUERY_CANCELED: &str = "57014";
pub const ADMIN_SHUTDOWN: &str = "57P01";
pub const CANNOT_CONNECT_NOW: &str = "57P03";
pub const TOO_MANY_CONNECTIONS: &str = "53300";
pub const CHARACTER_NOT_IN_REPERTOIRE: &str = "22021";
pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
pub const IN_FAILED_SQL_TRANSACTION: &str = "25P02";
pub const INTERNAL_ERROR: &str = "XX000";
pub const IO_ERROR: &str = "58030";
pub const INVALID_CATALOG_NAME: &str = "3D000";
pub const INVALID_SQL_STATEMENT_NAME: &str = "26000";
pub const INVALID_CURSOR_NAME: &str = "34000";
