//! `veilctl blast-radius`: what an identity could do right now and at
//! most, from the daemon (which reads PostgreSQL's privileges for each
//! role's upstream user). A one-screen summary first, details below.

use anyhow::bail;
use infraveil::inventory::radius::BlastRadius;

use crate::api::Api;

pub struct Args {
    pub identity: String,
    pub role: Option<String>,
    pub database: Option<String>,
}

/// Returns the exit code: 1 when PostgreSQL's side could not be read for
/// some role (the policy side is still printed).
pub fn run(api: &Api, args: &Args, json_out: bool) -> anyhow::Result<i32> {
    if args.identity.trim().is_empty() {
        bail!("--identity must not be empty");
    }
    let mut query = vec![("identity", args.identity.clone())];
    if let Some(r) = &args.role {
        query.push(("role", r.clone()));
    }
    if let Some(d) = &args.database {
        query.push(("database", d.clone()));
    }
    let report: BlastRadius = crate::review::get_json(api, "/v1/inventory/blast-radius", &query)?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", infraveil::inventory::text::blast_radius(&report));
    }
    let failed: Vec<&str> = report
        .roles
        .iter()
        .filter_map(|r| r.postgres_error.as_deref())
        .collect();
    if let Some(first) = failed.first() {
        eprintln!("error: {first}");
        return Ok(1);
    }
    Ok(0)
}
