//! `vaultfs edit`: $EDITOR on a file in a 0700 directory on a RAM filesystem, written back on
//! save, wiped afterwards; refused when no RAM filesystem is available.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{
    assert_fails, assert_success, is_root, require_tool, requirement, run_command, TestStore,
};

/// An editor script that records where it was run and how, then applies `change` (sh).
fn editor(ts: &TestStore, change: &str) -> std::path::PathBuf {
    let log = ts.dir.path().join("editor.log");
    let script = ts.dir.path().join("editor.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\nf=\"$1\"\nd=$(dirname \"$f\")\n\
             echo \"file=$f\" > '{log}'\n\
             echo \"dirmode=$(stat -c %a \"$d\")\" >> '{log}'\n\
             echo \"fs=$(stat -f -c %T \"$d\")\" >> '{log}'\n\
             echo \"tmpdir=$TMPDIR\" >> '{log}'\n\
             echo \"before=$(cat \"$f\")\" >> '{log}'\n\
             {change}\n",
            log = log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

fn log_field(ts: &TestStore, key: &str) -> String {
    let text = std::fs::read_to_string(ts.dir.path().join("editor.log")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key} not in {text}"))
        .to_owned()
}

fn edit(ts: &TestStore, script: &Path, addr: &str) -> std::process::Output {
    let mut cmd = ts.cmd();
    cmd.env("EDITOR", script)
        .env_remove("VISUAL")
        .args(["edit", addr]);
    run_command(&mut cmd, b"")
}

#[test]
fn edit_writes_back_on_save_from_a_wiped_ram_directory() {
    let ts = TestStore::new();
    ts.vault("app", &["--owner", "root", "--group", "root"]);
    ts.write("app:/config", b"old-value");
    let script = editor(&ts, "printf 'new-value' > \"$f\"");
    let out = edit(&ts, &script, "app:/config");
    assert_success(&out, &["edit"]);
    assert_eq!(ts.cat("app:/config"), b"new-value");
    assert_eq!(log_field(&ts, "before"), "old-value");
    assert_eq!(log_field(&ts, "dirmode"), "700");
    assert!(["tmpfs", "ramfs"].contains(&log_field(&ts, "fs").as_str()));
    let file = log_field(&ts, "file");
    let dir = Path::new(&file).parent().unwrap().to_owned();
    assert_eq!(log_field(&ts, "tmpdir"), dir.display().to_string());
    assert!(
        !dir.exists(),
        "the edit directory {} was left behind",
        dir.display()
    );

    // Unchanged: nothing written (the store head does not move).
    let head = |ts: &TestStore| -> i64 {
        ts.db()
            .query_row("SELECT value FROM generation", [], |r| r.get(0))
            .unwrap()
    };
    let before = head(&ts);
    let out = edit(&ts, &editor(&ts, "true"), "app:/config");
    assert_success(&out, &["edit unchanged"]);
    assert_eq!(head(&ts), before);

    // A failing editor writes nothing and still wipes.
    let out = edit(
        &ts,
        &editor(&ts, "printf 'half' > \"$f\"; exit 1"),
        "app:/config",
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(ts.cat("app:/config"), b"new-value");
    let file = log_field(&ts, "file");
    assert!(!Path::new(&file).parent().unwrap().exists());

    // A missing secret is created.
    let out = edit(&ts, &editor(&ts, "printf 'created' > \"$f\""), "app:/fresh");
    assert_success(&out, &["edit fresh"]);
    assert_eq!(ts.cat("app:/fresh"), b"created");
}

#[test]
fn edit_refuses_without_a_ram_filesystem() {
    if !requirement(is_root(), "root", "hiding /dev/shm needs root") || !require_tool("unshare") {
        return;
    }
    let ts = TestStore::new();
    ts.vault("app", &["--owner", "root", "--group", "root"]);
    ts.write("app:/config", b"value");
    let disk = ts.dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let script = editor(&ts, "printf 'leaked' > \"$f\"");
    // In a private mount namespace, /dev/shm is a directory on disk and XDG_RUNTIME_DIR too.
    let mut cmd = ts.cmd();
    cmd.env("EDITOR", &script)
        .env("XDG_RUNTIME_DIR", &disk)
        .arg0_unshare(&disk);
    let out = run_command(&mut cmd, b"");
    let line = assert_fails(&out, &["edit without RAM"], 2);
    assert!(line.contains("no RAM filesystem"), "{line}");
    assert_eq!(ts.cat("app:/config"), b"value");
    assert_eq!(
        std::fs::read_dir(&disk).unwrap().count(),
        0,
        "something was written to disk"
    );
}

trait Unshare {
    fn arg0_unshare(&mut self, disk: &Path) -> &mut Self;
}

impl Unshare for std::process::Command {
    /// Re-points the command at `unshare -m sh -c 'mount --bind DISK /dev/shm; vaultfs edit'`.
    fn arg0_unshare(&mut self, disk: &Path) -> &mut Self {
        let bin = crate::common::vaultfs_bin();
        let mut c = std::process::Command::new("unshare");
        c.args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "mount --bind '{}' /dev/shm && exec '{}' edit app:/config",
                disk.display(),
                bin.display()
            ));
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        *self = c;
        self
    }
}
