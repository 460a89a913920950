//! `veilctl audit public-key|checkpoint|export|verify`: online through the
//! admin API, offline on a stopped daemon's data directory, or on an export
//! file with a public key kept elsewhere.

use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use infraveil::audit::chain::{self, ChainVerifier, Problem, Summary};
use infraveil::audit::{export, key};
use infraveil::store::Store;

use crate::api::Api;

/// Where `verify` and `public-key` look.
pub struct Offline {
    pub data_dir: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Offline {
    fn key_path(&self) -> Option<PathBuf> {
        self.key_file.clone().or_else(|| {
            self.data_dir
                .as_ref()
                .map(|d| d.join(infraveil::daemon::AUDIT_KEY_FILE))
        })
    }
}

pub fn public_key(api: Option<&Api>, offline: &Offline, json_out: bool) -> anyhow::Result<()> {
    let hex = match offline.key_path() {
        Some(path) => key::public_hex(&key::load_or_create(&path, false)?),
        None => {
            let v: serde_json::Value = need(api)?.get("/v1/audit/public-key")?;
            v["public_key"]
                .as_str()
                .context("the admin API sent no public_key")?
                .to_owned()
        }
    };
    if json_out {
        println!("{}", serde_json::json!({ "public_key": hex }));
    } else {
        println!("{hex}");
    }
    Ok(())
}

pub fn checkpoint(api: &Api, json_out: bool) -> anyhow::Result<()> {
    let v: serde_json::Value = api.get("/v1/audit/checkpoint")?;
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    match (v["head"]["seq"].as_u64(), v["head"]["hash"].as_str()) {
        (Some(seq), Some(hash)) => println!("head        {seq}:{hash}"),
        _ => println!("head        (the log is empty)"),
    }
    match (
        v["checkpoint"]["head_seq"].as_u64(),
        v["checkpoint"]["head_hash"].as_str(),
    ) {
        (Some(seq), Some(hash)) => println!(
            "checkpoint  {seq}:{hash} (signed in record {})",
            v["checkpoint"]["seq"]
        ),
        _ => println!("checkpoint  (none since the daemon started)"),
    }
    println!(
        "Keep either line elsewhere; `veilctl audit verify --expect-head SEQ:HASH` then detects a cut tail."
    );
    Ok(())
}

pub struct ExportArgs {
    pub since: Option<String>,
    pub until: Option<String>,
    pub identity: Option<String>,
    pub format: String,
}

/// Stream the export to stdout as it arrives.
pub fn export(api: &Api, args: ExportArgs) -> anyhow::Result<()> {
    let mut query = vec![("format", args.format)];
    for (name, v) in [
        ("since", args.since),
        ("until", args.until),
        ("identity", args.identity),
    ] {
        if let Some(v) = v {
            query.push((name, v));
        }
    }
    let mut resp = api.get_stream("/v1/audit/export", &query)?;
    let mut out = std::io::stdout().lock();
    match std::io::copy(&mut resp, &mut out).and_then(|_| out.flush()) {
        Ok(()) => Ok(()),
        // `veilctl audit export | head` closes the pipe early: not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => bail!("the export was cut off: {e}"),
    }
}

pub struct VerifyArgs {
    pub file: Option<PathBuf>,
    pub public_key: Vec<String>,
    pub expect_head: Option<String>,
    pub allow_gaps: bool,
}

/// Verify and print the verdict; returns the exit code (0 good, 1 bad).
pub fn verify(
    api: Option<&Api>,
    offline: &Offline,
    args: VerifyArgs,
    json_out: bool,
) -> anyhow::Result<i32> {
    let expect = match args.expect_head.as_deref() {
        Some(h) => Some(
            chain::parse_head(h)
                .context("--expect-head must be SEQ:HASH (a record number and its 64-hex hash)")?,
        ),
        None => None,
    };
    // `KEY` pins this log's key; `INSTANCE=KEY` one instance's chain.
    let mut pinned = None;
    let mut per_instance = std::collections::BTreeMap::new();
    for k in &args.public_key {
        match k.split_once('=') {
            Some((instance, k)) => {
                per_instance.insert(instance.to_owned(), read_public_key(k)?);
            }
            None => pinned = Some(read_public_key(k)?),
        }
    }
    let verdict = if let (Some(file), false) = (&args.file, per_instance.is_empty()) {
        verify_chains_file(file, &per_instance, args.allow_gaps)?
    } else if let Some(file) = &args.file {
        let Some(public) = pinned else {
            bail!(
                "--file needs --public-key (the key printed by `veilctl audit public-key`, kept elsewhere)"
            );
        };
        infraveil::audit::verdict(
            &verify_file(file, &public, expect, args.allow_gaps)?,
            &public,
        )
    } else if let Some(dir) = &offline.data_dir {
        let (public, warning) = match pinned {
            Some(k) => (k, None),
            None => {
                let path = offline.key_path().context("no key file")?;
                let k = key::public_hex(&key::load_or_create(&path, false)?);
                (
                    k,
                    Some(
                        "verified against the key in the data directory, which whoever can edit the log can also use; pass --public-key with the key you recorded to rule out re-signing",
                    ),
                )
            }
        };
        let v = infraveil::audit::verdict(&verify_dir(dir, &public, expect)?, &public);
        if let Some(w) = warning
            && !json_out
        {
            eprintln!("note: {w}");
        }
        v
    } else {
        let api = need(api)?;
        let mut path = "/v1/audit/verify".to_owned();
        if let Some((seq, hash)) = &expect {
            path.push_str(&format!("?expect_head={seq}:{hash}"));
        }
        let v: serde_json::Value = api.get_long(&path)?;
        if let Some(k) = &pinned
            && v["public_key"].as_str() != Some(k.as_str())
        {
            bail!(
                "the daemon signs with {} but --public-key is {k}: the key was replaced",
                v["public_key"].as_str().unwrap_or("?")
            );
        }
        // Each chain of a shared store against the key kept for it.
        for c in v["chains"].as_array().into_iter().flatten() {
            let instance = c["instance"].as_str().unwrap_or("?");
            if let Some(k) = per_instance.get(instance)
                && c["public_key"].as_str() != Some(k.as_str())
            {
                bail!(
                    "instance {instance} signs with {} but --public-key {instance}=… is {k}: the key was replaced",
                    c["public_key"].as_str().unwrap_or("?")
                );
            }
        }
        v
    };
    print_verdict(&verdict, json_out)?;
    Ok(if verdict["ok"] == true { 0 } else { 1 })
}

/// A public key given as 64 hex characters or as a file holding them.
fn read_public_key(k: &str) -> anyhow::Result<String> {
    let text = if key::parse_public(k.trim()).is_some() {
        k.trim().to_owned()
    } else {
        std::fs::read_to_string(k)
            .with_context(|| {
                format!("--public-key {k:?} is neither 64 hex characters nor a readable file")
            })?
            .trim()
            .to_owned()
    };
    key::parse_public(&text).context("the public key must be 64 hex characters (32 bytes)")?;
    Ok(text.to_ascii_lowercase())
}

fn verify_dir(
    dir: &Path,
    public: &str,
    expect: Option<(u64, String)>,
) -> anyhow::Result<Result<Summary, Problem>> {
    let store = Store::open(dir).with_context(|| {
        format!(
            "cannot open {} (offline verification needs the daemon stopped)",
            dir.display()
        )
    })?;
    let verifying = key::parse_public(public).context("bad public key")?;
    let result = infraveil::audit::verify_store(&store, verifying, expect);
    match result {
        Ok(s) => Ok(Ok(s)),
        Err(infraveil::audit::VerifyError::Bad(p)) => Ok(Err(p)),
        Err(infraveil::audit::VerifyError::Store(e)) => Err(e.into()),
    }
}

/// `veilctl audit set-aside`: the unsigned tail goes to its own tree.
pub fn set_aside(dir: &Path, json_out: bool) -> anyhow::Result<()> {
    let store = Store::open(dir).with_context(|| {
        format!(
            "cannot open {} (setting records aside needs the daemon stopped)",
            dir.display()
        )
    })?;
    let moved = infraveil::audit::log::AuditLog::open(&store)?.set_aside_unsigned_tail(&store)?;
    if json_out {
        let v = match moved {
            Some((first, last)) => serde_json::json!({"moved": true, "first": first, "last": last}),
            None => serde_json::json!({"moved": false}),
        };
        println!("{v}");
    } else {
        match moved {
            Some((first, last)) => println!(
                "Moved records {first} to {last} (after the last signature) to the audit-set-aside tree; the log now ends at a signed record."
            ),
            None => println!("Nothing to set aside: the log ends at a signed record."),
        }
    }
    Ok(())
}

fn verify_file(
    file: &Path,
    public: &str,
    expect: Option<(u64, String)>,
    allow_gaps: bool,
) -> anyhow::Result<Result<Summary, Problem>> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let verifying = key::parse_public(public).context("bad public key")?;
    let mut verifier: Option<ChainVerifier> = None;
    let mut last_seq = 0;
    for r in export::read(BufReader::new(f)) {
        let r = match r {
            Ok(r) => r,
            Err(e) => {
                return Ok(Err(Problem {
                    seq: last_seq + 1,
                    fault: chain::Fault::Malformed,
                    detail: e,
                }));
            }
        };
        last_seq = r.seq;
        let v = verifier.get_or_insert_with(|| {
            // An export from the start links to the genesis; one from
            // `--since` starts wherever it starts.
            let v = if r.seq == 1 {
                ChainVerifier::from_genesis(verifying)
            } else {
                ChainVerifier::from_anywhere(verifying, allow_gaps)
            };
            match &expect {
                Some((seq, hash)) => v.expect_head(*seq, hash),
                None => v,
            }
        });
        if let Err(p) = v.check(&r) {
            return Ok(Err(p));
        }
    }
    let Some(v) = verifier else {
        bail!("{} holds no records", file.display());
    };
    Ok(v.finish())
}

/// An export merged from several instances' chains: each instance's
/// records (by their `instance`) verified as their own chain, with the key
/// kept for that instance.
fn verify_chains_file(
    file: &Path,
    keys: &std::collections::BTreeMap<String, String>,
    allow_gaps: bool,
) -> anyhow::Result<serde_json::Value> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut chains: std::collections::BTreeMap<String, (Option<ChainVerifier>, Option<Problem>)> =
        std::collections::BTreeMap::new();
    for r in export::read(BufReader::new(f)) {
        let r = r.map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
        let instance = serde_json::from_str::<serde_json::Value>(&r.payload)
            .ok()
            .and_then(|p| p["instance"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let (verifier, problem) = chains.entry(instance.clone()).or_default();
        if problem.is_some() {
            continue;
        }
        let Some(public) = keys.get(&instance).and_then(|k| key::parse_public(k)) else {
            *problem = Some(Problem {
                seq: r.seq,
                fault: chain::Fault::Signature,
                detail: format!(
                    "no --public-key {instance}=KEY was given for instance {instance:?}"
                ),
            });
            continue;
        };
        let v = verifier.get_or_insert_with(|| {
            if r.seq == 1 {
                ChainVerifier::from_genesis(public)
            } else {
                ChainVerifier::from_anywhere(public, allow_gaps)
            }
        });
        if let Err(p) = v.check(&r) {
            *problem = Some(p);
        }
    }
    if chains.is_empty() {
        bail!("{} holds no records", file.display());
    }
    let (mut ok, mut records, mut signatures) = (true, 0u64, 0u64);
    let mut out = Vec::new();
    for (instance, (verifier, problem)) in chains {
        let result = match (problem, verifier) {
            (Some(p), _) => Err(p),
            (None, Some(v)) => v.finish(),
            (None, None) => continue,
        };
        if let Ok(s) = &result {
            records += s.records;
            signatures += s.signatures;
        } else {
            ok = false;
        }
        let public = keys.get(&instance).cloned().unwrap_or_default();
        let mut v = infraveil::audit::verdict(&result, &public);
        v["instance"] = instance.into();
        out.push(v);
    }
    let problem = out.iter().find(|c| c["ok"] != true).map(|c| {
        let mut p = c["problem"].clone();
        p["instance"] = c["instance"].clone();
        p
    });
    let mut v = serde_json::json!({
        "ok": ok,
        "records": records,
        "signatures": signatures,
        "unvouched": out.iter().map(|c| c["unvouched"].as_u64().unwrap_or(0)).sum::<u64>(),
        "chains": out,
    });
    if let Some(p) = problem {
        v["problem"] = p;
    }
    Ok(v)
}

fn print_verdict(v: &serde_json::Value, json_out: bool) -> anyhow::Result<()> {
    if json_out {
        println!("{}", serde_json::to_string_pretty(v)?);
        return Ok(());
    }
    if let Some(chains) = v["chains"].as_array() {
        // Several instances' chains: one line each.
        for c in chains {
            let instance = c["instance"].as_str().unwrap_or("?");
            if c["ok"] == true {
                println!(
                    "{instance}: ok, {} records ({} signatures); head {}:{}",
                    c["records"],
                    c["signatures"],
                    c["head_seq"],
                    c["head_hash"].as_str().unwrap_or("")
                );
            } else {
                let p = &c["problem"];
                println!(
                    "{instance}: FAILED at record {}: {} ({})",
                    p["seq"],
                    p["fault"].as_str().unwrap_or("?"),
                    p["detail"].as_str().unwrap_or("")
                );
            }
        }
        println!(
            "{}: {} chains, {} records",
            if v["ok"] == true { "ok" } else { "FAILED" },
            chains.len(),
            v["records"]
        );
        return Ok(());
    }
    if v["ok"] == true {
        match (v["head_seq"].as_u64(), v["head_hash"].as_str()) {
            (Some(seq), Some(hash)) => {
                println!(
                    "ok: {} records verified ({} signatures); head {seq}:{hash}",
                    v["records"], v["signatures"]
                );
                if v["unvouched"].as_u64().unwrap_or(0) > 0 {
                    println!(
                        "note: {} records of this filtered export are vouched for by signatures on records it leaves out; verify the whole log to vouch for them",
                        v["unvouched"]
                    );
                }
            }
            _ => println!("ok: the log is empty"),
        }
    } else {
        let p = &v["problem"];
        println!(
            "FAILED at record {}: {} ({})",
            p["seq"],
            p["fault"].as_str().unwrap_or("?"),
            p["detail"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

fn need(api: Option<&Api>) -> anyhow::Result<&Api> {
    api.context(
        "no admin API address: set --admin-url or VEIL_ADMIN_URL (or work offline with --data-dir)",
    )
}
