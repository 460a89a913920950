//! Plain-text tables for terminal output (the library's, shared with the
//! text renderers of the inventory).

pub use infraveil::cli::Table;
