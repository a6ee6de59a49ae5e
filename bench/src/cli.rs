//! `vaultfs cat` of one secret (a new process per call) against `cat` of the same file on
//! tmpfs and on gocryptfs.

use anyhow::Result;

use crate::report::{Metric, Section};
use crate::setup::Env;
use crate::sys::check_stop;
use crate::targets;
use crate::{median, ms, progress, rotated, thousands, BIG};

/// The CLI section.
pub fn cli(env: &mut Env) -> Result<Section> {
    let cfg = env.cfg;
    let (plain, gc_mnt, big_db) = (&env.plain, &env.gc_mnt, &env.big_db);
    let (vfs, vfs_stores) = (&env.vfs, env.vfs_stores);
    let notes = &mut env.notes;
    // ----- CLI: cat of one secret from the 10,000-secret store -----
    progress("CLI: cat of one secret");
    let mut cli = Section::new(
        "cli",
        &format!(
            "CLI: one secret from a {}-secret store, wall time per call (median of {} calls per repetition)",
            thousands(BIG),
            cfg.cat_calls
        ),
        &["cat on tmpfs", "cat on gocryptfs", "vaultfs cat"],
        &[
            ("vaultfs ÷ cat on tmpfs", "vaultfs cat", "cat on tmpfs"),
            ("vaultfs ÷ cat on gocryptfs", "vaultfs cat", "cat on gocryptfs"),
        ],
    );
    let mut m_cat = Metric::new("cat", "cat of one secret", "ms", false);
    let cat_name = "e05000";
    let want = targets::content(cat_name);
    let cat_targets = ["cat on tmpfs", "cat on gocryptfs", "vaultfs cat"];
    let mut cat_failed: Option<String> = None;
    for rep in 0..cfg.reps {
        for t in rotated(&cat_targets, rep) {
            check_stop()?;
            let mut times = Vec::new();
            for _ in 0..cfg.cat_calls {
                let (got, took) = match *t {
                    "cat on tmpfs" => targets::cat_file(&plain.join("big").join(cat_name))?,
                    "cat on gocryptfs" => targets::cat_file(&gc_mnt.join("big").join(cat_name))?,
                    _ => match (&vfs, vfs_stores, &cat_failed) {
                        (Some(v), true, None) => match v.cat(big_db, &format!("big:/{cat_name}")) {
                            Ok(r) => r,
                            Err(e) => {
                                cat_failed = Some(format!("{e:#}"));
                                break;
                            }
                        },
                        _ => break,
                    },
                };
                anyhow::ensure!(got == want, "{t}: wrong value for {cat_name}");
                times.push(ms(took));
            }
            if !times.is_empty() {
                m_cat.push(t, median(times));
            }
        }
        for c in cat_targets {
            m_cat.pad(c, rep + 1);
        }
    }
    if let Some(e) = cat_failed {
        notes.push(format!("vaultfs cat failed: {e}"));
    }
    m_cat.note = Some(
        "each call is a new process; `vaultfs cat` also unlocks the store with the key file".into(),
    );
    cli.metrics.push(m_cat);

    Ok(cli)
}
