//! The README's CLI tour, run exactly as written on a "fresh host": a private mount namespace
//! with empty tmpfs over /etc/vaultfs, /var/lib/vaultfs and /run/keys, and the built binary
//! first on PATH. A tour command that fails (or an edit that breaks one) fails this test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{contains, require_tool, vaultfs_bin};
use crate::mounts::{can_mount, within};

/// The first ```sh block after the "## CLI tour" heading.
fn tour_script(readme: &str) -> String {
    let tour = &readme[readme.find("\n## CLI tour").expect("README has a CLI tour")..];
    let start = tour.find("```sh\n").expect("the tour has a sh block") + "```sh\n".len();
    let len = tour[start..].find("\n```").expect("the sh block ends");
    tour[start..start + len + 1].to_owned()
}

#[test]
fn the_readme_tour_runs_top_to_bottom_as_written() {
    if !can_mount() || !require_tool("unshare") || !require_tool("bash") {
        return;
    }
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("read README.md");
    let tour = tour_script(&readme);
    assert!(tour.contains("vaultfs mount"), "the tour block: {tour}");

    let dir = tempfile::Builder::new()
        .prefix("vaultfs-tour-")
        .tempdir()
        .unwrap();
    let script = dir.path().join("tour.sh");
    std::fs::write(&script, &tour).unwrap();
    // The harness around the tour, not part of it: fresh, private state directories, and on
    // exit (pass or fail) every mount under /run/keys detached so no daemon outlives the test.
    let wrapper = format!(
        r#"set -eu
for d in /etc/vaultfs /var/lib/vaultfs /run/keys; do
  mkdir -p "$d"; mount -t tmpfs -o mode=0755 vaultfs-tour "$d"
done
cleanup() {{ for m in /run/keys/nix /run/keys/nix-tokens; do umount -l "$m" 2>/dev/null || true; done; }}
trap cleanup EXIT
bash -euo pipefail '{script}'
"#,
        script = script.display()
    );
    let bin_dir = vaultfs_bin().parent().unwrap().to_owned();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c", &wrapper])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("HOME", dir.path())
        .env("TMPDIR", dir.path())
        .env_remove("VAULTFS_STORE")
        .env_remove("VAULTFS_KEY_FILE")
        .env_remove("VAULTFS_LOG")
        .stdin(std::process::Stdio::null());
    let out = within(Duration::from_secs(120), "the README tour", move || {
        cmd.output().unwrap()
    });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the README tour failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    // What the tour promises along the way.
    assert!(
        contains(
            &out.stdout,
            b"extra-access-tokens = github.com=github_pat_example"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("GITHUB_TOKEN has 11 characters"),
        "env drops the trailing newline: {stdout}"
    );
    assert!(stdout.contains("db-password"), "{stdout}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn the_readme_starts_with_the_demo_and_the_test_command() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let first_block = &readme[..readme.find("\n## ").unwrap()];
    assert!(first_block.contains("cargo run --release -- demo"));
    assert!(first_block.contains("cargo test --workspace"));
    let tour = tour_script(&readme);
    // An install step comes before the tour.
    assert!(readme.find("cargo install").unwrap() < readme.find(&tour).unwrap());
}
