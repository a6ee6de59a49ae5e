//! The NixOS module's on-change actions, templates and credential socket (issue 14), evaluated
//! with the real nixpkgs `lib` (`lib.evalModules`) through `nixos/tests/real-lib.nix`. The lib
//! is found at `$NIXPKGS_LIB`, as `<nixpkgs/lib>` on NIX_PATH, or unpacked from the vendored
//! `tests/fixtures/nixpkgs-lib/nixpkgs-lib.tar.gz`; under CI=true it must be found.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::common::{random_name, requirement, TestStore};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The nixpkgs `lib` directory, found or unpacked once per run: `$NIXPKGS_LIB`, `<nixpkgs/lib>`
/// on NIX_PATH, or the vendored `tests/fixtures/nixpkgs-lib/nixpkgs-lib.tar.gz`.
pub(crate) fn nixpkgs_lib() -> Option<PathBuf> {
    static LIB: OnceLock<Option<PathBuf>> = OnceLock::new();
    LIB.get_or_init(|| {
        if let Some(p) = std::env::var_os("NIXPKGS_LIB").map(PathBuf::from) {
            return p.join("default.nix").exists().then_some(p);
        }
        let found = Command::new("nix-instantiate")
            .args(["--find-file", "nixpkgs/lib"])
            .env("NIX_REMOTE", "dummy://")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        if let Some(p) = found.filter(|p| p.join("default.nix").exists()) {
            return Some(p);
        }
        let tarball = repo().join("tests/fixtures/nixpkgs-lib/nixpkgs-lib.tar.gz");
        // Unpacked once under target/ (into a fresh dir, then renamed into place, so two runs
        // at once never see half a tree).
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let unpacked = tmp.join("nixpkgs-lib");
        if !unpacked.join("lib/default.nix").exists() {
            let dir = tmp.join(format!("nixpkgs-lib-{}", random_name()));
            std::fs::create_dir_all(&dir).ok()?;
            let ok = Command::new("tar")
                .arg("xzf")
                .arg(&tarball)
                .arg("-C")
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            if !ok || std::fs::rename(&dir, &unpacked).is_err() {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        let lib = unpacked.join("lib");
        lib.join("default.nix").exists().then_some(lib)
    })
    .clone()
}

/// The package path the stand-in `pkgs` of `nixos/tests/real-lib.nix` gives vaultfs.
pub const PACKAGE: &str = "/nix/store/00000000000000000000000000000000-vaultfs";

/// Whether the module can be evaluated here (nix-instantiate and a nixpkgs lib).
pub fn can_eval() -> bool {
    let nix = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok();
    requirement(
        nix,
        "nix",
        "nix-instantiate (Debian package nix-bin) is not available",
    ) && requirement(
        nixpkgs_lib().is_some(),
        "nix",
        "the nixpkgs lib was not found ($NIXPKGS_LIB, <nixpkgs/lib>, nixpkgs-lib.tar.gz)",
    )
}

/// Evaluates the module with `settings` as `services.vaultfs`, on a system that also defines
/// `services` (systemd.services names).
pub fn eval(settings: &Value, services: &[&str]) -> Result<Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(repo().join("nixos/tests/real-lib.nix"))
        .arg("--arg")
        .arg("libPath")
        .arg(nixpkgs_lib().unwrap())
        .args(["--argstr", "settingsJSON", &settings.to_string()])
        .args(["--argstr", "servicesJSON", &json!(services).to_string()])
        .env("NIX_REMOTE", "dummy://")
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
}

fn sample(store: &str) -> Value {
    json!({
        "enable": true,
        "keyFile": "/etc/vaultfs/key",
        "storePath": store,
        "mounts": {
            "web": { "source": "web", "restartUnits": ["web-worker.service"] },
            "other": { "source": "other:/x" }
        },
        "templates": {
            "netrc": {
                "path": "web:/netrc",
                "content": "machine github.com login x password {{ web:/gh | trim }}\n",
                "mode": "0400",
                "reloadUnits": ["nginx.service"]
            }
        },
        "credentials": {
            "socket": "/run/vaultfs/credentials.sock",
            "rules": [{ "unit": "app.service", "id": "tok", "source": "web:/gh" }]
        }
    })
}

#[test]
fn module_turns_actions_templates_and_credentials_into_a_config_serve_accepts() {
    if !can_eval() {
        return;
    }
    let ts = TestStore::new();
    let store = ts.store.to_str().unwrap().to_owned();
    let v = eval(&sample(&store), &["nginx", "web-worker"]).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let text = v["configText"].as_str().unwrap();
    for want in [
        "[[mount]]\nsource = \"web\"\nmountpoint = \"/run/keys/web\"\nread_only = true\nrestart_units = [\"web-worker.service\"]\n",
        "# services.vaultfs.templates.netrc\n[[mount.on_change]]\npath = \"/netrc\"\nreload_units = [\"nginx.service\"]\n",
        "[credentials]\nsocket = \"/run/vaultfs/credentials.sock\"\n[[credentials.rule]]\nunit = \"app.service\"\nid = \"tok\"\nsource = \"web:/gh\"\nuid = 0\n",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The template's actions go to the mount that serves it, not to the other one.
    assert_eq!(text.matches("[[mount.on_change]]").count(), 1, "{text}");
    let cfg = ts.path("serve.toml");
    std::fs::write(&cfg, text).unwrap();
    let out = ts.run(
        &[
            "serve",
            "--check",
            "--offline",
            "--config",
            cfg.to_str().unwrap(),
        ],
        b"",
    );
    assert!(out.status.success(), "{out:?}\n{text}");
    assert!(
        crate::common::contains(
            &out.stderr,
            b"ok (2 mount(s), 2 on-change action(s), 1 credential rule(s))"
        ),
        "{out:?}"
    );

    // ExecStartPre writes the template into the store: run it as systemd would, with the
    // paths of this test (the key credential, the package, the template's store file).
    ts.vault("web", &[]);
    ts.write("web:/gh", b"ghp_x\n");
    let pre = v["execStartPre"].as_array().unwrap();
    assert_eq!(pre.len(), 2, "{pre:?}");
    let template_file = ts.path("netrc.template");
    std::fs::write(
        &template_file,
        "machine github.com login x password {{ web:/gh | trim }}\n",
    )
    .unwrap();
    for line in pre {
        let line = line.as_str().unwrap();
        let line = line
            .strip_prefix('-')
            .expect("a `-` line: a missing input never stops the mounts");
        let args: Vec<String> = line
            .split(' ')
            .map(|a| {
                a.replace("%d/vaultfs-key", ts.key.to_str().unwrap())
                    .replace(
                        "/nix/store/00000000000000000000000000000000-vaultfs-template-netrc",
                        template_file.to_str().unwrap(),
                    )
            })
            .collect();
        assert_eq!(
            args[0],
            "/nix/store/00000000000000000000000000000000-vaultfs/bin/vaultfs"
        );
        let out = ts.cmd().args(&args[1..]).output().unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
    }
    assert_eq!(
        ts.cat("web:/netrc"),
        b"machine github.com login x password ghp_x\n"
    );
    let acl = ts.ok_text(&["acl", "show", "web:/netrc"]);
    assert!(acl.contains("0400"), "{acl}");
}

#[test]
fn module_refuses_a_misspelled_unit_at_evaluation() {
    if !can_eval() {
        return;
    }
    let v = eval(&sample("/var/lib/vaultfs/store.db"), &["nginx"]).unwrap();
    let failed = v["failedAssertions"].to_string();
    assert!(
        failed.contains(
            "services.vaultfs.mounts.web: web-worker.service is not a unit of this system"
        ),
        "{failed}"
    );
    let v = eval(&sample("/var/lib/vaultfs/store.db"), &["web-worker"]).unwrap();
    let failed = v["failedAssertions"].to_string();
    assert!(
        failed.contains("services.vaultfs.templates.netrc: nginx.service is not a unit"),
        "{failed}"
    );
    // A template instance is known through its template unit.
    let mut s = sample("/var/lib/vaultfs/store.db");
    s["mounts"]["web"]["restartUnits"] = json!(["worker@1.service"]);
    let v = eval(&s, &["nginx", "worker@"]).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
}

#[test]
fn module_refuses_template_actions_no_mount_would_fire() {
    if !can_eval() {
        return;
    }
    let mut s = sample("/var/lib/vaultfs/store.db");
    s["templates"]["netrc"]["path"] = json!("elsewhere:/netrc");
    let v = eval(&s, &["nginx", "web-worker"]).unwrap();
    let failed = v["failedAssertions"].to_string();
    assert!(
        failed.contains("no mount serves elsewhere:/netrc"),
        "{failed}"
    );
    s["credentials"]["socket"] = json!("/run/a b.sock");
    let v = eval(&s, &["nginx", "web-worker"]).unwrap();
    assert!(
        v["failedAssertions"]
            .to_string()
            .contains("credentials.socket must be"),
        "{v}"
    );
    let err = eval(&json!({"enable": true, "keyFile": "/k", "templates": {"t": {"path": "v:/t", "content": "", "format": "yaml"}}}), &[]).unwrap_err();
    assert!(err.contains("format"), "{err}");
}
