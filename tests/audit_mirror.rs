//! The audit mirror: records copied, as they commit, to the journal (native protocol, read
//! back with `journalctl -o json` under a real systemd) or to stderr (one logfmt line), with
//! paths only when the admin opts in, and never a value.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{random_bytes, random_name, require_tool, TestStore};
use crate::mounts::{can_mount, cat_as, is_mounted, user, wait_until, within};

const EVE: &str = "vfs-mir-eve";

/// A `vaultfs serve` child with its stderr in a file; SIGTERM and reaped on drop.
struct Served {
    child: Child,
}

impl Drop for Served {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

fn serve_toml(source: &str, mountpoint: &Path, audit: &str) -> String {
    format!(
        "[[mount]]\nsource = \"{source}\"\nmountpoint = \"{}\"\n\n{audit}",
        mountpoint.display()
    )
}

#[test]
fn the_stderr_mirror_is_one_logfmt_line_per_record_without_paths_unless_asked() {
    if !can_mount() {
        return;
    }
    let uid = user(EVE, None);
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &["--mode", "0400"]);
    let secret = random_bytes(32);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    ts.write(&format!("{vault}:/dir/tok"), hex.as_bytes());
    // A grant widens the shown mode, so another user's open reaches the daemon and is denied
    // there, audited (a denial by the kernel's mode check never is).
    ts.ok(&[
        "acl",
        "grant",
        &format!("{vault}:/dir/tok"),
        "--user",
        "4242",
    ]);
    let mnt = ts.path("mnt");
    let cfg = ts.path("serve.toml");
    std::fs::write(
        &cfg,
        serve_toml(&vault, &mnt, "[audit]\nmirror = \"stderr\"\n"),
    )
    .unwrap();
    let log = ts.path("serve.log");
    let served = Served {
        child: ts
            .cmd()
            .args(["serve", "--config", cfg.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    };
    wait_until(Duration::from_secs(10), "the mount", || is_mounted(&mnt));
    assert_eq!(std::fs::read(mnt.join("dir/tok")).unwrap(), hex.as_bytes());
    assert!(cat_as(EVE, &mnt.join("dir/tok")).is_err());
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(5), "the mirrored deny", || {
        text().contains(&format!("decision=deny vault={vault}"))
    });
    let lines: Vec<String> = text()
        .lines()
        .filter(|l| l.starts_with("vaultfs-audit "))
        .map(str::to_owned)
        .collect();
    let allow = lines
        .iter()
        .find(|l| l.contains("event=open decision=allow"))
        .unwrap_or_else(|| panic!("no allowed open in {lines:#?}"));
    assert!(
        allow.contains(" uid=0 ") && allow.contains(" version="),
        "{allow}"
    );
    let deny = lines.iter().find(|l| l.contains("decision=deny")).unwrap();
    assert!(deny.contains(&format!(" uid={uid} ")), "{deny}");
    assert!(
        lines.iter().any(|l| l.contains("event=start")),
        "{lines:#?}"
    );
    let all = text();
    assert!(
        !all.contains("dir/tok") && !all.contains(" path="),
        "a path without opting in: {all}"
    );
    assert!(!all.contains(&hex), "the value in the log");
    drop(served);

    // Opted in (here through the environment of a CLI command): the path is there.
    let out = ts
        .cmd()
        .env("VAULTFS_AUDIT_MIRROR", "stderr")
        .env("VAULTFS_AUDIT_MIRROR_PATHS", "1")
        .args([
            "acl",
            "limit",
            &format!("{vault}:/dir/tok"),
            "--max-opens",
            "9",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "vaultfs-audit event=acl decision=allow vault={vault} "
        )) && err.contains(&format!(" path={vault}:/dir/tok ")),
        "{err}"
    );
    // Off by default: no variable, no config, no line.
    let out = ts.run(
        &[
            "acl",
            "limit",
            &format!("{vault}:/dir/tok"),
            "--max-opens",
            "8",
        ],
        b"",
    );
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("vaultfs-audit"));
    // A mirror setting that means nothing is refused with one line.
    std::fs::write(
        &cfg,
        serve_toml(&vault, &mnt, "[audit]\nmirror = \"loud\"\n"),
    )
    .unwrap();
    let err = ts.fails(
        &[
            "serve",
            "--check",
            "--offline",
            "--config",
            cfg.to_str().unwrap(),
        ],
        2,
    );
    assert!(err.contains("[audit] mirror = \"loud\""), "{err}");
}

#[test]
fn the_journal_mirror_under_systemd_carries_structured_fields() {
    if !can_mount() || !require_tool("systemd-nspawn") {
        return;
    }
    let ts = TestStore::new();
    let vault = random_name();
    ts.vault(&vault, &["--mode", "0400"]);
    let secret = random_bytes(32);
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    ts.write(&format!("{vault}:/dir/tok"), hex.as_bytes());
    // A grant, so that another uid's open reaches the daemon (see the stderr test).
    ts.ok(&[
        "acl",
        "grant",
        &format!("{vault}:/dir/tok"),
        "--user",
        "4242",
    ]);

    let stage = ts.path("stage");
    std::fs::create_dir_all(&stage).unwrap();
    std::fs::copy(crate::common::vaultfs_bin(), stage.join("vaultfs")).unwrap();
    std::fs::copy(&ts.key, stage.join("key")).unwrap();
    std::fs::write(
        stage.join("serve.toml"),
        format!(
            "store = \"/var/lib/vaultfs-test/store.db\"\n{}",
            serve_toml(
                &vault,
                Path::new("/run/vfs-mirror/mnt"),
                "[audit]\nmirror = \"journal\"\n"
            )
        ),
    )
    .unwrap();
    let units = ts.path("units");
    std::fs::create_dir_all(&units).unwrap();
    let unit = |name: &str, text: &str| {
        let path = units.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    // The shipped, hardened unit: the journal socket must be reachable through its filters.
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/vaultfs.service"),
    )
    .unwrap();
    let server = unit(
        "vaultfs.service",
        &shipped
            .replace("/usr/local/bin/vaultfs", "/opt/vaultfs/vaultfs")
            .replace("/etc/vaultfs/", "/opt/vaultfs/"),
    );
    let cli =
        "/opt/vaultfs/vaultfs --key-file /opt/vaultfs/key --store /var/lib/vaultfs-test/store.db";
    let script = stage.join("probe.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             cat /run/vfs-mirror/mnt/dir/tok >/dev/null; echo $? >/out/root.rc\n\
             setpriv --reuid 65534 --regid 65534 --clear-groups cat /run/vfs-mirror/mnt/dir/tok >/dev/null 2>&1; echo $? >/out/nobody.rc\n\
             VAULTFS_AUDIT_MIRROR=journal VAULTFS_AUDIT_MIRROR_PATHS=1 {cli} acl limit {vault}:/dir/tok --max-opens 7\n\
             sleep 2\n\
             journalctl -b --no-pager -o json -t vaultfs-audit >/out/audit.json\n\
             journalctl -b --no-pager >/out/journal.txt\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let probe = unit(
        "probe.service",
        "[Unit]\nAfter=vaultfs.service\nRequires=vaultfs.service\n[Service]\nType=oneshot\nExecStart=/opt/vaultfs/probe.sh\n",
    );
    let out = ts.path("out");
    let mut cmd =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/systemd-boot"));
    cmd.args(["--run", "probe.service", "--out", out.to_str().unwrap()]);
    for u in [&server, &probe] {
        cmd.args(["--unit", u.to_str().unwrap()]);
    }
    cmd.args([
        "--ro",
        &format!("{}:/opt/vaultfs", stage.display()),
        "--bind",
        &format!(
            "{}:/var/lib/vaultfs-test",
            ts.store.parent().unwrap().display()
        ),
        "--timeout",
        "60",
    ]);
    let status = within(Duration::from_secs(90), "systemd-boot", move || {
        cmd.status()
    })
    .expect("run tests/support/systemd-boot");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap_or_default();
    let context = || {
        format!(
            "status {status:?}\nboot.log:\n{}\njournal:\n{}",
            read("boot.log"),
            read("journal.txt")
        )
    };
    assert_eq!(read("root.rc").trim(), "0", "{}", context());
    assert_ne!(read("nobody.rc").trim(), "0", "{}", context());
    let entries: Vec<Value> = read("audit.json")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|e: &Value| e.get("VAULTFS_EVENT").is_some())
        .collect();
    let find = |pred: &dyn Fn(&Value) -> bool| -> Value {
        entries
            .iter()
            .find(|e| pred(e))
            .cloned()
            .unwrap_or_else(|| panic!("not in {entries:#?}\n{}", context()))
    };
    let field = |e: &Value, k: &str| e[k].as_str().unwrap_or_default().to_owned();
    let allow =
        find(&|e| field(e, "VAULTFS_EVENT") == "open" && field(e, "VAULTFS_DECISION") == "allow");
    assert_eq!(field(&allow, "VAULTFS_UID"), "0");
    assert_eq!(field(&allow, "VAULTFS_VAULT"), vault);
    assert_eq!(field(&allow, "PRIORITY"), "6");
    assert_eq!(field(&allow, "SYSLOG_IDENTIFIER"), "vaultfs-audit");
    assert!(
        field(&allow, "VAULTFS_PID").parse::<u32>().is_ok(),
        "{allow}"
    );
    assert!(
        allow.get("VAULTFS_PATH").is_none(),
        "a path without opting in: {allow}"
    );
    assert!(!field(&allow, "MESSAGE").contains("tok"), "{allow}");
    let deny = find(&|e| field(e, "VAULTFS_DECISION") == "deny");
    assert_eq!(field(&deny, "VAULTFS_UID"), "65534");
    assert_eq!(field(&deny, "PRIORITY"), "5");
    assert!(deny.get("VAULTFS_PATH").is_none(), "{deny}");
    find(&|e| field(e, "VAULTFS_EVENT") == "start");
    // The CLI, opted in to paths.
    let cli_entry = find(&|e| field(e, "VAULTFS_EVENT") == "acl");
    assert_eq!(
        field(&cli_entry, "VAULTFS_PATH"),
        format!("{vault}:/dir/tok")
    );
    assert_eq!(field(&cli_entry, "VAULTFS_RULE"), "limit --max-opens 7");
    assert!(
        !read("journal.txt").contains(&hex),
        "the value in the journal"
    );
    assert!(
        !read("audit.json").contains(&hex),
        "the value in the journal"
    );
}
