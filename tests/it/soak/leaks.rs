//! The card-data search of the soak: every card number (plain, spaced, dashed) and every
//! CVV next to its key, in every output, audit file, response, /metrics snapshot and the
//! contents of Redis, with a positive control on what the upstream received.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use super::check::Evidence;
use crate::support::cards::{context, find_cvvs, find_pans};

/// What a trace-level line of payshim's JSON log holds.
const TRACE: &[u8] = br#""level":"TRACE""#;

/// Every key of the Redis at `url` and its value, whatever its type, as text.
pub fn redis_dump(url: &str) -> Vec<u8> {
    let client = redis::Client::open(url).expect("redis url");
    let mut con = client.get_connection().expect("connect to redis");
    let mut out = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query(&mut con)
            .expect("SCAN");
        for key in keys {
            let kind: String = redis::cmd("TYPE").arg(&key).query(&mut con).expect("TYPE");
            let read = match kind.as_str() {
                "string" => redis::cmd("GET").arg(&key).clone(),
                "hash" => redis::cmd("HGETALL").arg(&key).clone(),
                "zset" => redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES")
                    .clone(),
                "list" => redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).clone(),
                "set" => redis::cmd("SMEMBERS").arg(&key).clone(),
                _ => redis::cmd("TYPE").arg(&key).clone(),
            };
            let value: redis::Value = read.query(&mut con).unwrap_or(redis::Value::Nil);
            out.extend_from_slice(&key);
            out.push(b' ');
            flatten(&value, &mut out);
            out.push(b'\n');
        }
        cursor = next;
        if cursor == 0 {
            return out;
        }
    }
}

fn flatten(value: &redis::Value, out: &mut Vec<u8>) {
    match value {
        redis::Value::BulkString(b) => out.extend_from_slice(b),
        redis::Value::SimpleString(s) => out.extend_from_slice(s.as_bytes()),
        redis::Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            for item in items {
                flatten(item, out);
                out.push(b' ');
            }
        }
        redis::Value::Map(pairs) => {
            for (k, v) in pairs {
                flatten(k, out);
                out.push(b' ');
                flatten(v, out);
                out.push(b' ');
            }
        }
        other => out.extend_from_slice(format!("{other:?}").as_bytes()),
    }
}

/// Searches every haystack for the run's card numbers and CVVs; returns the leaks found
/// and adds the search's figures to `figures`.
pub fn search(
    ev: &Evidence,
    audit_files: &[PathBuf],
    pans_up: &HashMap<String, usize>,
    figures: &mut String,
) -> Vec<String> {
    let pans: HashSet<String> = ev.shots.iter().filter_map(|s| s.pan.clone()).collect();
    let not_pans: HashSet<String> = ev.shots.iter().filter_map(|s| s.not_pan.clone()).collect();
    let cvvs: HashSet<String> = ev.shots.iter().filter_map(|s| s.cvv.clone()).collect();
    let carried = ev
        .shots
        .iter()
        .filter(|s| s.pan.is_some() || s.not_pan.is_some())
        .count();
    let mut leaks = Vec::new();
    if pans.len() + not_pans.len() != carried {
        leaks.push("card numbers were not distinct".to_string());
    }
    if (carried as u64) < ev.min_cards {
        leaks.push(format!(
            "{carried} requests carried a card, fewer than {}",
            ev.min_cards
        ));
    }
    // Positive control: the search finds the forwarded numbers where they belong.
    let mut found_upstream = HashSet::new();
    for req in &ev.upstream {
        found_upstream.extend(find_pans(&req.body, &pans).into_iter().map(|(p, _)| p));
    }
    let forwarded: HashSet<String> = pans_up
        .keys()
        .filter(|p| pans.contains(*p))
        .cloned()
        .collect();
    if found_upstream != forwarded || forwarded.is_empty() {
        leaks.push(format!(
            "positive control: the search found {} of the {} numbers the upstream received",
            found_upstream.len(),
            forwarded.len()
        ));
    }
    let mut bytes = 0usize;
    let mut search = |name: &str, hay: &[u8]| {
        bytes += hay.len();
        for (p, at) in find_pans(hay, &pans)
            .into_iter()
            .chain(find_pans(hay, &not_pans))
        {
            leaks.push(format!("number {p} in {name}: …{}…", context(hay, at)));
        }
        for (c, at) in find_cvvs(hay, &cvvs) {
            leaks.push(format!("CVV {c} in {name}: …{}…", context(hay, at)));
        }
    };
    let mut files: Vec<PathBuf> = audit_files.to_vec();
    for (out, err) in &ev.outputs {
        files.push(out.clone());
        files.push(err.clone());
    }
    let mut trace_lines = false;
    for file in &files {
        let hay = std::fs::read(file).expect("read haystack");
        trace_lines |= hay.windows(TRACE.len()).any(|w| w == TRACE);
        search(&file.display().to_string(), &hay);
    }
    let mut redis_keys = 0;
    for (name, hay) in &ev.haystacks {
        if name.starts_with("redis") {
            redis_keys += hay.iter().filter(|b| **b == b'\n').count();
        }
        search(name, hay);
    }
    for (i, shot) in ev.shots.iter().enumerate() {
        search(&format!("response {i} ({:?})", shot.kind), &shot.seen);
    }
    if redis_keys == 0 {
        leaks.push("no Redis key was searched: is the dump empty?".into());
    }
    if ev.trace && !trace_lines {
        leaks.push("no trace-level line in the output: is the log level in effect?".into());
    }
    let _ = write!(
        figures,
        "{carried} requests with distinct card numbers ({} Luhn-valid, {} Luhn-invalid) and \
         {} distinct CVVs searched in {} bytes ({} files, {} snapshots with {redis_keys} \
         Redis keys, {} responses); positive control: {} forwarded numbers found upstream; \
         leaks {}",
        pans.len(),
        not_pans.len(),
        cvvs.len(),
        bytes,
        files.len(),
        ev.haystacks.len(),
        ev.shots.len(),
        found_upstream.len(),
        leaks.len()
    );
    leaks
}
