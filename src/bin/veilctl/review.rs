//! `veilctl access review`: every identity, its roles, standing access,
//! grants and last use, from the daemon; `--fail-on` makes it a gate for a
//! compliance job.

use anyhow::{Context, bail};
use clap::Subcommand;
use infraveil::inventory::review::{AccessReview, FAIL_ON, csv};
use serde::de::DeserializeOwned;

use crate::api::Api;

#[derive(Subcommand)]
pub enum AccessCommand {
    /// The inventory for a periodic access review. Exits 1 when a
    /// `--fail-on` finding is present.
    Review {
        /// Fail (exit 1) on these findings: `standing` (standing access),
        /// `unused` (grants never used), `idle` (roles nobody used and
        /// identities that never logged in within --days).
        #[arg(long, value_delimiter = ',')]
        fail_on: Vec<String>,
        /// The audit window: roles unused this long are idle.
        #[arg(long, default_value_t = 90)]
        days: u64,
    },
}

/// A GET with query parameters, decoded from JSON.
pub fn get_json<T: DeserializeOwned>(
    api: &Api,
    path: &str,
    query: &[(&str, String)],
) -> anyhow::Result<T> {
    api.get_stream(path, query)?
        .json()
        .context("the admin API answered something veilctl does not understand (version mismatch?)")
}

/// Returns the exit code.
pub fn run(api: &Api, command: &AccessCommand, format: crate::Output) -> anyhow::Result<i32> {
    let AccessCommand::Review { fail_on, days } = command;
    let keys: Vec<&str> = fail_on
        .iter()
        .map(|k| k.trim())
        .filter(|k| !k.is_empty())
        .collect();
    if let Some(bad) = keys.iter().find(|k| !FAIL_ON.contains(k)) {
        bail!(
            "--fail-on {bad:?}: use one or more of {}",
            FAIL_ON.join(", ")
        );
    }
    let review: AccessReview = get_json(
        api,
        "/v1/inventory/access-review",
        &[("days", days.to_string())],
    )?;
    match format {
        crate::Output::Json => println!("{}", serde_json::to_string_pretty(&review)?),
        crate::Output::Csv => print!("{}", csv(&review)),
        crate::Output::Text => print!("{}", infraveil::inventory::text::access_review(&review)),
    }
    let tripped = review.findings.tripped(&keys);
    if tripped.is_empty() {
        return Ok(0);
    }
    eprintln!("access review fails on: {}", tripped.join(", "));
    Ok(1)
}
