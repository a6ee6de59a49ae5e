//! `vaultfs fleet status`: which hosts have applied the store's latest write, from the acks
//! their sync tasks record under `PREFIX/acks/HOST`.

use anyhow::Result;

use super::client::{Conn, EtcdOptions};
use super::url::EtcdUrl;

/// One host's ack.
#[derive(Debug, serde::Deserialize)]
struct Ack {
    revision: i64,
    head: i64,
    time: u64,
}

/// Prints one line per host (or JSON): host, applied revision, store revision, converged,
/// last ack time.
pub fn status(url: &EtcdUrl, opts: &EtcdOptions, json: bool) -> Result<()> {
    let mut conn = Conn::open(url, opts)?;
    let head = conn.get(&url.head_key())?;
    let store_rev = head.as_ref().map_or(0, |h| h.mod_revision);
    let store_head = head
        .as_ref()
        .and_then(|h| vaultfs_store::mirror::head_generation(&h.value));
    let (_, acks) = conn.range_all(&url.acks_root())?;
    let mut rows = Vec::new();
    for kv in acks {
        let host = kv.key[url.acks_root().len()..].to_owned();
        let ack: Option<Ack> = serde_json::from_str(&kv.value).ok();
        rows.push((host, ack));
    }
    if json {
        let hosts: Vec<_> = rows
            .iter()
            .map(|(host, ack)| {
                serde_json::json!({
                    "host": host,
                    "applied_revision": ack.as_ref().map(|a| a.revision),
                    "applied_head": ack.as_ref().map(|a| a.head),
                    "store_revision": store_rev,
                    "converged": ack.as_ref().is_some_and(|a| a.revision >= store_rev),
                    "last_ack": ack.as_ref().map(|a| a.time),
                })
            })
            .collect();
        let out = serde_json::json!({
            "store": url.to_string(),
            "store_revision": store_rev,
            "store_head": store_head,
            "hosts": hosts,
        });
        println!("{out}");
        return Ok(());
    }
    println!(
        "store {url} at revision {store_rev} (head {})",
        store_head.map_or("none".into(), |h| h.to_string())
    );
    if rows.is_empty() {
        println!("no host has synced yet");
    }
    for (host, ack) in rows {
        match ack {
            Some(a) => println!(
                "{host} applied={} store={store_rev} converged={} last_ack={}",
                a.revision,
                if a.revision >= store_rev { "yes" } else { "no" },
                crate::output::format_time(
                    i64::try_from(a.time)
                        .unwrap_or(i64::MAX / 1_000_000_000)
                        .saturating_mul(1_000_000_000)
                )
            ),
            None => println!(
                "{host} applied=? store={store_rev} converged=no last_ack=? (unreadable ack)"
            ),
        }
    }
    Ok(())
}
