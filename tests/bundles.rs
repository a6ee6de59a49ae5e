//! Bundles: two "hosts" (two stores unlocked by different scoped host keys) fed from one
//! source store. Round trip, determinism, rollback refusal (also after the host store is
//! wiped), tamper of every line kind, truncated and foreign bundles, running mounts following
//! an applied bundle, and the size and apply time figures.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{assert_fails, assert_success, code, run_command, TestStore};
use crate::hostkeys::{age_key, ssh_key};
use crate::mounts::{can_mount, is_mounted, wait_until, MountGuard};

/// A host: its own store file and state dir, unlocked only by its host key.
struct Host {
    store: PathBuf,
    state: PathBuf,
    identity: PathBuf,
}

impl Host {
    fn new(ts: &TestStore, name: &str, identity: PathBuf) -> Host {
        let dir = ts.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        Host {
            store: dir.join("store.db"),
            state: dir.join("state"),
            identity,
        }
    }

    fn run(&self, ts: &TestStore, args: &[&str]) -> Output {
        let mut cmd = ts.cmd_without_key();
        cmd.env("VAULTFS_STORE", &self.store)
            .env("VAULTFS_STATE_DIR", &self.state)
            .env("VAULTFS_IDENTITY", &self.identity)
            .args(args);
        run_command(&mut cmd, b"")
    }

    fn ok(&self, ts: &TestStore, args: &[&str]) -> Vec<u8> {
        let out = self.run(ts, args);
        assert_success(&out, args);
        out.stdout
    }

    fn apply(&self, ts: &TestStore, bundle: &Path) -> Output {
        self.run(ts, &["bundle", "apply", bundle.to_str().unwrap()])
    }

    /// Everything the store file holds, to show a failed apply changed nothing.
    fn fingerprint(&self) -> Vec<u8> {
        let db = rusqlite::Connection::open(&self.store).unwrap();
        let mut out = Vec::new();
        for table in [
            "generation",
            "head",
            "key_slots",
            "vaults",
            "entries",
            "deleted",
            "meta",
        ] {
            let mut stmt = db
                .prepare(&format!("SELECT * FROM {table} ORDER BY rowid"))
                .unwrap();
            let n = stmt.column_count();
            let rows = stmt
                .query_map([], |r| {
                    let mut row = Vec::new();
                    for i in 0..n {
                        let v: rusqlite::types::Value = r.get(i)?;
                        row.extend_from_slice(format!("{v:?}|").as_bytes());
                    }
                    Ok(row)
                })
                .unwrap();
            for r in rows {
                out.extend(r.unwrap());
            }
        }
        out
    }
}

/// The source store (vaults nix, web, app) and two hosts: web1 (age key, vault web) and db1
/// (ssh host key, vaults nix and app).
fn fleet() -> (TestStore, Host, Host) {
    let ts = TestStore::new();
    for v in ["nix", "web", "app"] {
        ts.vault(v, &["--owner", "root", "--group", "root"]);
    }
    ts.write("nix:/token", b"nix-token-value");
    ts.write("web:/db/password", b"web-password-value");
    ts.write("web:/api-key", b"web-api-key-value");
    ts.write("app:/config", b"app-config-value");
    let (age_id, age_pub) = age_key(ts.dir.path(), "web1.key");
    let (ssh_id, ssh_pub) = ssh_key(ts.dir.path(), "ssh_host_ed25519_key", "ed25519");
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &age_pub,
        "--label",
        "web1",
        "--vault",
        "web",
    ]);
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &ssh_pub,
        "--label",
        "db1",
        "--vault",
        "nix",
        "--vault",
        "app",
    ]);
    let web1 = Host::new(&ts, "web1", age_id);
    let db1 = Host::new(&ts, "db1", ssh_id);
    (ts, web1, db1)
}

fn export(ts: &TestStore, args: &[&str], name: &str) -> PathBuf {
    let mut all = vec!["bundle", "export"];
    all.extend_from_slice(args);
    let text = ts.ok(&all);
    let path = ts.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_hosts_round_trip_with_their_own_vaults() {
    let (ts, web1, db1) = fleet();
    let b_web1 = export(&ts, &["--for", "web1"], "web1.vfsb");
    let b_db1 = export(&ts, &["--for", "db1"], "db1.vfsb");
    // Ciphertext only: no value, no name, no vault name in the file.
    for b in [&b_web1, &b_db1] {
        let text = std::fs::read_to_string(b).unwrap();
        for needle in [
            "value", "password", "api-key", "token", "config", "web", "nix",
        ] {
            assert!(
                !text.contains(needle),
                "{needle:?} is readable in the bundle"
            );
        }
    }
    assert_success(&web1.apply(&ts, &b_web1), &["apply web1"]);
    assert_success(&db1.apply(&ts, &b_db1), &["apply db1"]);
    assert_eq!(
        web1.ok(&ts, &["cat", "web:/db/password"]),
        b"web-password-value"
    );
    assert_eq!(db1.ok(&ts, &["cat", "nix:/token"]), b"nix-token-value");
    assert_eq!(db1.ok(&ts, &["cat", "app:/config"]), b"app-config-value");
    for (host, other) in [(&web1, "nix:/token"), (&db1, "web:/api-key")] {
        let out = host.run(&ts, &["cat", other]);
        assert_fails(&out, &["cat", other], 2);
    }
    // Each host holds only its own vaults' rows and only its own slot; same store id.
    let src: Vec<u8> = ts
        .db()
        .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let host = rusqlite::Connection::open(&web1.store).unwrap();
    let id: Vec<u8> = host
        .query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(src, id);
    let (vaults, slots): (i64, i64) = host
        .query_row(
            "SELECT (SELECT count(*) FROM vaults), (SELECT count(*) FROM key_slots)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((vaults, slots), (1, 1));
    // The host cannot write to its replica (its key is scoped; a whole-store key is refused too).
    let out = web1.run(&ts, &["rm", "web:/api-key"]);
    assert_fails(&out, &["rm"], 2);
    // `bundle show` with the host key names what it opens and writes nothing.
    let shown =
        String::from_utf8(web1.ok(&ts, &["bundle", "show", b_web1.to_str().unwrap()])).unwrap();
    assert!(shown.contains("web: 3 entr"), "{shown}");
    assert!(shown.contains("opens with the key given"), "{shown}");

    // A local table the bundle does not carry (read counts, audit) is kept.
    host.execute_batch("CREATE TABLE local_audit (x); INSERT INTO local_audit VALUES (42);")
        .unwrap();
    drop(host);

    // Changes: rotate one, remove one, add one. Exactly one entry line changes for the rotation.
    let before = std::fs::read_to_string(&b_web1).unwrap();
    assert_eq!(
        before,
        String::from_utf8(ts.ok(&["bundle", "export", "--for", "web1"])).unwrap(),
        "export is not deterministic"
    );
    ts.write("web:/api-key", b"rotated-api-key");
    let after = export(&ts, &["--for", "web1"], "web1-2.vfsb");
    let after_text = std::fs::read_to_string(&after).unwrap();
    let changed: Vec<&str> = after_text
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    let entries_changed = changed.iter().filter(|l| l.starts_with("entry ")).count();
    assert_eq!(entries_changed, 1, "{changed:#?}");
    assert!(changed.iter().all(|l| ["entry ", "head ", "mac ", "check "]
        .iter()
        .any(|p| l.starts_with(p))));
    ts.ok(&["rm", "web:/db/password"]);
    ts.write("web:/new", b"new-value");
    let third = export(&ts, &["--for", "web1"], "web1-3.vfsb");
    assert_success(&web1.apply(&ts, &third), &["apply 3"]);
    assert_eq!(web1.ok(&ts, &["cat", "web:/api-key"]), b"rotated-api-key");
    assert_eq!(web1.ok(&ts, &["cat", "web:/new"]), b"new-value");
    let out = web1.run(&ts, &["cat", "web:/db/password"]);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let host = rusqlite::Connection::open(&web1.store).unwrap();
    let kept: i64 = host
        .query_row("SELECT x FROM local_audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, 42);
}

#[test]
fn an_older_bundle_is_refused_even_after_the_store_is_wiped() {
    let (ts, web1, _) = fleet();
    let old = export(&ts, &["--for", "web1"], "old.vfsb");
    // The secret is revoked (removed) in the source; the new bundle carries that.
    ts.ok(&["rm", "web:/api-key"]);
    let new = export(&ts, &["--for", "web1"], "new.vfsb");
    assert_success(&web1.apply(&ts, &new), &["apply new"]);
    let before = web1.fingerprint();
    let out = web1.apply(&ts, &old);
    let line = assert_fails(&out, &["apply old"], 3);
    assert!(
        line.contains("line 2") && line.contains("older than this host's"),
        "{line}"
    );
    assert_eq!(
        before,
        web1.fingerprint(),
        "a refused bundle changed the store"
    );
    // At service start: a warning, exit 0, the newer state keeps serving.
    let out = web1.run(
        &ts,
        &["bundle", "apply", "--keep-newer", old.to_str().unwrap()],
    );
    assert_success(&out, &["apply --keep-newer"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    assert_eq!(before, web1.fingerprint());
    // Wiping the host store does not bring the revoked secret back: the state file remembers.
    std::fs::remove_file(&web1.store).unwrap();
    let out = web1.apply(&ts, &old);
    assert_fails(&out, &["apply old on a wiped store"], 3);
    // On purpose, it can.
    let out = web1.run(
        &ts,
        &["--allow-rollback", "bundle", "apply", old.to_str().unwrap()],
    );
    assert_success(&out, &["apply --allow-rollback"]);
    assert_eq!(web1.ok(&ts, &["cat", "web:/api-key"]), b"web-api-key-value");
}

/// Replaces one character in the middle of field `field` of `line` (0-based) with another of
/// the same alphabet, so the field still parses and only authentication can catch it.
fn tamper_field(line: &str, field: usize) -> String {
    let mut fields: Vec<String> = line.split(' ').map(str::to_owned).collect();
    let f = &mut fields[field];
    let mid = f.len() / 2;
    let c = f.as_bytes()[mid];
    let replacement = match c {
        b'0'..=b'8' => c + 1,
        b'9' => b'0',
        b'a'..=b'e' => c + 1,
        b'f' => b'a',
        b'A'..=b'Y' => c + 1,
        _ => b'A',
    };
    f.replace_range(mid..=mid, &(replacement as char).to_string());
    fields.join(" ")
}

#[test]
fn tamper_of_every_line_kind_truncation_and_foreign_bundles_change_nothing() {
    let (ts, web1, _) = fleet();
    let first = export(&ts, &["--for", "web1"], "first.vfsb");
    assert_success(&web1.apply(&ts, &first), &["apply first"]);
    ts.write("web:/api-key", b"second-value");
    let good = export(&ts, &["--for", "web1"], "good.vfsb");
    let text = std::fs::read_to_string(&good).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let before = web1.fingerprint();
    let find = |kind: &str| lines.iter().position(|l| l.starts_with(kind)).unwrap();
    // (line index, field to alter, what it is)
    let cases = [
        (0, 2, "header (store id)"),
        (find("head "), 1, "head"),
        (find("vaults "), 1, "vaults (the vault list)"),
        (find("mac "), 2, "mac"),
        (find("slot "), 6, "slot (wrapped key)"),
        (find("slot "), 5, "slot (params)"),
        (find("vault "), 5, "vault (sealed record)"),
        (find("vault "), 4, "vault (wrapped key)"),
        (find("entry "), 7, "entry (meta)"),
        (
            lines
                .iter()
                .rposition(|l| l.starts_with("entry ") && !l.ends_with(" -"))
                .unwrap(),
            8,
            "entry (value)",
        ),
        (find("entry "), 6, "entry (name tag)"),
        (find("check "), 2, "check"),
    ];
    for (i, field, what) in cases {
        let mut altered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        altered[i] = tamper_field(lines[i], field);
        assert_ne!(altered[i], lines[i]);
        let path = ts.dir.path().join("tampered.vfsb");
        std::fs::write(&path, altered.join("\n") + "\n").unwrap();
        let out = web1.apply(&ts, &path);
        let line = assert_fails(&out, &["apply", what], 3);
        assert!(line.contains("tampered.vfsb, line "), "{what}: {line}");
        assert_eq!(
            before,
            web1.fingerprint(),
            "{what}: a tampered bundle changed the store"
        );
    }
    let outer: Vec<&str> = lines
        .iter()
        .filter(|l| {
            !["vault ", "entry ", "check "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .copied()
        .collect();
    // A removed entry line (rows dropped to hide a change), a truncated file, a bundle cut down
    // to no vault at all (which would empty the host).
    let entry = find("entry ");
    let check = find("check ");
    for (what, kept, named) in [
        (
            "removed entry",
            lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != entry)
                .map(|(_, l)| *l)
                .collect::<Vec<_>>(),
            check,
        ),
        (
            "truncated",
            lines[..lines.len() - 1].to_vec(),
            lines.len() - 1,
        ),
        (
            "every vault, entry and check line removed",
            outer.clone(),
            outer.len(),
        ),
    ] {
        let path = ts.dir.path().join("cut.vfsb");
        std::fs::write(&path, kept.join("\n") + "\n").unwrap();
        let out = web1.apply(&ts, &path);
        let line = assert_fails(&out, &["apply", what], 3);
        assert!(line.contains(&format!("line {}", named)), "{what}: {line}");
        assert_eq!(before, web1.fingerprint(), "{what}");
    }
    // A bundle of another store, made for the same host key.
    let other = TestStore::new();
    other.vault("web", &["--owner", "root", "--group", "root"]);
    other.write("web:/x", b"y");
    let age_pub = std::process::Command::new("age-keygen")
        .arg("-y")
        .arg(&web1.identity)
        .output()
        .unwrap();
    let age_pub = String::from_utf8(age_pub.stdout).unwrap();
    other.ok(&[
        "key",
        "add",
        "--recipient",
        age_pub.trim(),
        "--label",
        "web1",
        "--vault",
        "web",
    ]);
    let foreign = export(&other, &["--for", "web1"], "foreign.vfsb");
    let out = web1.apply(&ts, &foreign);
    let line = assert_fails(&out, &["apply foreign"], 3);
    assert!(
        line.contains("line 1") && line.contains("foreign"),
        "{line}"
    );
    assert_eq!(before, web1.fingerprint());
    // The untouched bundle still applies.
    assert_success(&web1.apply(&ts, &good), &["apply good"]);
    assert_eq!(web1.ok(&ts, &["cat", "web:/api-key"]), b"second-value");
}

#[test]
fn running_mounts_follow_an_applied_bundle_within_a_second() {
    if !can_mount() {
        return;
    }
    let (ts, web1, _) = fleet();
    let b1 = export(&ts, &["--for", "web1"], "b1.vfsb");
    assert_success(&web1.apply(&ts, &b1), &["apply b1"]);
    let mnt = ts.path("web1-mnt");
    let out = web1.run(&ts, &["mount", "web", mnt.to_str().unwrap()]);
    assert_success(&out, &["mount web"]);
    let _guard = MountGuard { path: mnt.clone() };
    assert!(is_mounted(&mnt));
    assert_eq!(
        std::fs::read(mnt.join("api-key")).unwrap(),
        b"web-api-key-value"
    );
    ts.write("web:/api-key", b"after-apply");
    ts.write("web:/added", b"added-value");
    ts.ok(&["rm", "-r", "web:/db"]);
    let b2 = export(&ts, &["--for", "web1"], "b2.vfsb");
    assert_success(&web1.apply(&ts, &b2), &["apply b2"]);
    let applied = Instant::now();
    wait_until(
        Duration::from_secs(1),
        "the mount to follow the bundle",
        || {
            std::fs::read(mnt.join("api-key")).ok().as_deref() == Some(&b"after-apply"[..])
                && std::fs::read(mnt.join("added")).ok().as_deref() == Some(&b"added-value"[..])
                && !mnt.join("db").exists()
        },
    );
    eprintln!("mount followed the bundle after {:?}", applied.elapsed());
}

#[test]
fn bundle_size_per_thousand_and_apply_time_for_ten_thousand() {
    let (ts, web1, _) = fleet();
    let src = ts.dir.path().join("many");
    std::fs::create_dir(&src).unwrap();
    for i in 0..10_000 {
        // A typical secret: a 40-byte token.
        std::fs::write(
            src.join(format!("s{i:05}")),
            format!("token-{i:05}-{}", "x".repeat(28)),
        )
        .unwrap();
    }
    ts.ok(&["import", src.to_str().unwrap(), "web:/many"]);
    let t = Instant::now();
    let b = export(&ts, &["--for", "web1"], "big.vfsb");
    let export_time = t.elapsed();
    let size = std::fs::metadata(&b).unwrap().len();
    let t = Instant::now();
    assert_success(&web1.apply(&ts, &b), &["apply big"]);
    let apply_time = t.elapsed();
    ts.write("web:/many/s00042", b"changed");
    let b2 = export(&ts, &["--for", "web1"], "big2.vfsb");
    let t = Instant::now();
    assert_success(&web1.apply(&ts, &b2), &["apply big2"]);
    let reapply = t.elapsed();
    assert_eq!(web1.ok(&ts, &["cat", "web:/many/s00042"]), b"changed");
    let per_thousand = size as f64 / 10.003 / 1024.0;
    eprintln!(
        "FIGURES: 10,000 secrets of 40 bytes: bundle {size} bytes ({per_thousand:.0} KiB per 1,000); export {export_time:?}; first apply {apply_time:?}; apply after one change {reapply:?}"
    );
    // Bounded, not benchmarked: a hang or a pathological slowdown fails.
    assert!(apply_time < Duration::from_secs(120), "{apply_time:?}");
}

#[test]
fn a_whole_store_host_key_gets_a_read_only_replica() {
    let (ts, _, _) = fleet();
    let (id, public) = ssh_key(ts.dir.path(), "admin_host_key", "ed25519");
    ts.ok(&["key", "add", "--recipient", &public, "--label", "ops"]);
    let ops = Host::new(&ts, "ops", id);
    let b = export(&ts, &["--for", "ops"], "ops.vfsb");
    assert_success(&ops.apply(&ts, &b), &["apply ops"]);
    assert_eq!(ops.ok(&ts, &["cat", "nix:/token"]), b"nix-token-value");
    assert_eq!(ops.ok(&ts, &["cat", "web:/api-key"]), b"web-api-key-value");
    // It holds the master key, yet the replica refuses writes: the next bundle would undo them.
    let out = ops.run(&ts, &["vault", "create", "local"]);
    let line = assert_fails(&out, &["vault create"], 2);
    assert!(line.contains("replica"), "{line}");
    // Applying a bundle onto the source store (same id, not a replica) is refused: it would
    // replace the admin's key slots with one host's.
    let mut cmd = ts.cmd();
    cmd.env("VAULTFS_IDENTITY", &ops.identity)
        .env_remove("VAULTFS_KEY_FILE")
        .args(["bundle", "apply", b.to_str().unwrap()]);
    let out = run_command(&mut cmd, b"");
    let line = assert_fails(&out, &["apply onto the source"], 1);
    assert!(line.contains("not a replica"), "{line}");
    assert_eq!(ts.cat("nix:/token"), b"nix-token-value");
    // --vault narrows a bundle for a whole-store key.
    let only_nix = export(&ts, &["--for", "ops", "--vault", "nix"], "ops-nix.vfsb");
    assert_success(&ops.apply(&ts, &only_nix), &["apply ops-nix"]);
    let out = ops.run(&ts, &["cat", "web:/api-key"]);
    assert_ne!(code(&out), 0);
    assert_eq!(ops.ok(&ts, &["cat", "nix:/token"]), b"nix-token-value");
}
