//! The NixOS module's `services.vaultfs.bundle` and `identity`: evaluated as tests/nixos.rs
//! does (nix-instantiate over nixos/tests/eval.nix), then run as systemd would: ExecStartPre=
//! applies the bundle before ExecStart= serves the mounts (Type=notify), and ExecReload= of a
//! newer generation applies a newer bundle that the running mount follows without a restart. An
//! older bundle at start is a warning, not a failed start.
//! `systemd_applies_the_bundle_before_serving_and_reloads_without_a_restart` renders the unit
//! evaluated with the real nixpkgs `lib` and runs it under a real systemd 252 (PID 1) in a
//! throwaway container (tests/support/systemd-boot).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{require_tool, TestStore};
use crate::hostkeys::ssh_key;
use crate::mounts::{can_mount, is_mounted, wait_until};

fn eval(settings: &Value, package: &Path, files: &Path) -> Value {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/tests/eval.nix"))
        .arg("--argstr")
        .arg("packageDir")
        .arg(package)
        .arg("--argstr")
        .arg("fileDir")
        .arg(files)
        .args(["--argstr", "utilLinux", ""])
        .args(["--argstr", "settingsJSON", &settings.to_string()])
        .env("NIX_REMOTE", "dummy://")
        .output()
        .expect("nix-instantiate");
    assert!(
        out.status.success(),
        "evaluation failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn s<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what}: {v}"))
}

/// The first command of an Exec*= setting, a string or a list of them (ExecStartPre= is a list
/// when templates are written after the bundle is applied).
fn first<'a>(v: &'a Value, what: &str) -> &'a str {
    match v {
        Value::Array(items) => s(items.first().unwrap_or(v), what),
        other => s(other, what),
    }
}

/// An Exec*= line with %d expanded as LoadCredential= makes it, split into argv.
fn argv(line: &str, creds: &Path) -> Vec<String> {
    let line = line.replace("%d", creds.to_str().unwrap());
    assert!(!line.contains(['%', '$', '"', '\'', '\\']), "{line}");
    line.split_whitespace().map(str::to_owned).collect()
}

fn run(line: &str, creds: &Path, state: &Path) -> std::process::Output {
    let a = argv(line, creds);
    Command::new(&a[0])
        .args(&a[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CREDENTIALS_DIRECTORY", creds)
        .env("VAULTFS_STATE_DIR", state)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

struct Serve {
    child: Child,
    mountpoint: PathBuf,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .output();
    }
}

#[test]
fn module_applies_the_bundle_before_serving_and_on_reload() {
    if !require_tool("nix-instantiate") || !can_mount() {
        return;
    }
    let ts = TestStore::new();
    let t = ts.dir.path();
    ts.vault("web", &["--owner", "root", "--group", "root"]);
    ts.write("web:/token", b"first");
    let (host_key, public) = ssh_key(t, "ssh_host_ed25519_key", "ed25519");
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &public,
        "--label",
        "web1",
        "--vault",
        "web",
    ]);
    let b1 = t.join("web1-gen1.vfsb");
    fs::write(&b1, ts.ok(&["bundle", "export", "--for", "web1"])).unwrap();

    let package = t.join("package");
    fs::create_dir_all(package.join("bin")).unwrap();
    std::os::unix::fs::symlink(crate::common::vaultfs_bin(), package.join("bin/vaultfs")).unwrap();
    let files = t.join("files");
    fs::create_dir_all(&files).unwrap();
    let host_store = t.join("host/store.db");
    fs::create_dir_all(host_store.parent().unwrap()).unwrap();
    let mountpoint = ts.path("keys").join("token");
    fs::create_dir_all(mountpoint.parent().unwrap()).unwrap();
    let settings = |bundle: &Path| {
        json!({
            "enable": true,
            "identity": host_key,
            "bundle": bundle,
            "storePath": host_store,
            "mounts": { "token": { "source": "web:/token", "mountPoint": mountpoint } },
        })
    };
    let v = eval(&settings(&b1), &package, &files);
    assert_eq!(v["failedAssertions"], json!([]));
    let sc = &v["service"]["serviceConfig"];
    let pre = first(&sc["ExecStartPre"], "ExecStartPre");
    let reload = s(&sc["ExecReload"], "ExecReload");
    assert!(
        pre.contains("bundle apply --keep-newer") && pre.contains(b1.to_str().unwrap()),
        "{pre}"
    );
    assert_eq!(pre, reload);
    assert!(s(&sc["ExecStart"], "ExecStart").contains("--identity %d/vaultfs-identity"));
    let (cred_name, cred_src) = s(&sc["LoadCredential"], "LoadCredential")
        .split_once(':')
        .unwrap();
    assert_eq!(cred_src, host_key.to_str().unwrap());

    // The unit, rendered as NixOS writes it (a trivial attrs-to-INI step), passes systemd's own
    // checks with the added ExecStartPre= and ExecReload=.
    if require_tool("systemd-analyze") {
        let mut unit = String::from("[Unit]\nDescription=vaultfs\n\n[Service]\n");
        for (k, val) in sc.as_object().unwrap() {
            let vals: Vec<String> = match val {
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or(i.to_string(), str::to_owned))
                    .collect(),
                Value::String(x) => vec![x.clone()],
                other => vec![other.to_string()],
            };
            for x in vals {
                unit.push_str(&format!("{k}={x}\n"));
            }
        }
        unit.push_str("\n[Install]\nWantedBy=multi-user.target\n");
        let unit_path = t.join("vaultfs.service");
        fs::write(&unit_path, &unit).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&unit_path)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}\n{unit}");
        let complaints: Vec<&str> = err
            .lines()
            .filter(|l| l.contains("vaultfs.service"))
            .collect();
        assert!(complaints.is_empty(), "{complaints:?}\n{unit}");
    }

    // Mistakes are caught at evaluation.
    let failed = |extra: Value| -> Vec<String> {
        let mut st = settings(&b1);
        for (k, v) in extra.as_object().unwrap() {
            st[k] = v.clone();
        }
        let v = eval(&st, &package, &files);
        serde_json::from_value(v["failedAssertions"].clone()).unwrap()
    };
    assert!(failed(json!({ "identity": null }))
        .iter()
        .any(|m| m.contains("bundle needs")));
    assert!(failed(json!({ "identity": "/nix/store/x-key" }))
        .iter()
        .any(|m| m.contains("identity must be")));
    assert!(failed(json!({ "keyFile": "/etc/k" }))
        .iter()
        .any(|m| m.contains("exactly one")));

    // LoadCredential=: the identity copied into a private directory.
    let creds = t.join("credentials");
    fs::DirBuilder::new().mode(0o700).create(&creds).unwrap();
    fs::copy(cred_src, creds.join(cred_name)).unwrap();
    let config = &v["configFile"];
    fs::write(
        s(&config["path"], "config path"),
        s(&config["text"], "config text"),
    )
    .unwrap();
    let state = t.join("state");

    // Start: ExecStartPre= (the host has no store yet), then ExecStart= until READY=1.
    let out = run(pre, &creds, &state);
    assert!(
        out.status.success(),
        "ExecStartPre: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let notify_path = t.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let a = argv(s(&sc["ExecStart"], "ExecStart"), &creds);
    let mut serve = Serve {
        child: Command::new(&a[0])
            .args(&a[1..])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CREDENTIALS_DIRECTORY", &creds)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("VAULTFS_STATE_DIR", &state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
        mountpoint: mountpoint.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        assert!(
            serve.child.try_wait().unwrap().is_none(),
            "serve exited before READY=1"
        );
        assert!(Instant::now() < deadline, "no READY=1 after 30 s");
    }
    assert!(is_mounted(&mountpoint));
    assert_eq!(fs::read(&mountpoint).unwrap(), b"first");

    // A new generation with a newer bundle; `systemctl reload` runs its ExecReload=.
    ts.write("web:/token", b"second");
    let b2 = t.join("web1-gen2.vfsb");
    fs::write(&b2, ts.ok(&["bundle", "export", "--for", "web1"])).unwrap();
    let v2 = eval(&settings(&b2), &package, &files);
    let reload2 = s(&v2["service"]["serviceConfig"]["ExecReload"], "ExecReload").to_owned();
    let out = run(&reload2, &creds, &state);
    assert!(
        out.status.success(),
        "ExecReload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(
        Duration::from_secs(1),
        "the mount to follow the reload",
        || fs::read(&mountpoint).ok().as_deref() == Some(&b"second"[..]),
    );
    assert!(
        serve.child.try_wait().unwrap().is_none(),
        "reload restarted the daemon"
    );

    // Rolling back to generation 1 starts with its older bundle: a warning, exit 0, and the
    // newer secret keeps serving.
    let out = run(pre, &creds, &state);
    assert!(
        out.status.success(),
        "ExecStartPre with an older bundle failed the start"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("warning"));
    assert_eq!(fs::read(&mountpoint).unwrap(), b"second");
    let _ = serve.child.kill();
}

#[test]
fn real_nixpkgs_lib_takes_a_bundle_path_and_copies_it_to_the_store() {
    if !require_tool("nix-instantiate") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lib = crate::nixos_actions::nixpkgs_lib();
    if !crate::common::requirement(
        lib.is_some(),
        "nixpkgs-lib",
        "nixpkgs' lib/ ($NIXPKGS_LIB, <nixpkgs/lib>, or tests/fixtures/nixpkgs-lib)",
    ) {
        return;
    }
    let bundle = tmp.path().join("web1.vfsb");
    fs::write(&bundle, "vaultfs-bundle 1 00\n").unwrap();
    let eval = |extra: &[&str]| {
        Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--readonly-mode"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/tests/eval-lib.nix"))
            .arg("--argstr")
            .arg("libDir")
            .arg(lib.as_ref().unwrap())
            .arg("--argstr")
            .arg("bundle")
            .arg(&bundle)
            .args(extra)
            .env("NIX_REMOTE", "dummy://")
            .output()
            .unwrap()
    };
    let out = eval(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["failedAssertions"], json!([]));
    let pre = first(&v["serviceConfig"]["ExecStartPre"], "ExecStartPre");
    // The bundle went into the Nix store by content (ciphertext only), not by its host path.
    assert!(
        pre.contains("bundle apply --keep-newer /nix/store/") && pre.ends_with("-web1.vfsb"),
        "{pre}"
    );
    assert!(!pre.contains(tmp.path().to_str().unwrap()), "{pre}");
    assert_eq!(s(&v["serviceConfig"]["ExecReload"], "ExecReload"), pre);
    assert_eq!(
        s(&v["serviceConfig"]["LoadCredential"], "LoadCredential"),
        "vaultfs-identity:/etc/ssh/ssh_host_ed25519_key"
    );
    // The identity must stay out of the world-readable Nix store.
    let out = eval(&["--argstr", "identity", "/nix/store/x-host-key"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["failedAssertions"]
            .to_string()
            .contains("identity must be"),
        "{v}"
    );
}

/// The module evaluated with the real nixpkgs `lib` (stand-ins only for the NixOS options it
/// sets, as in nixos/tests/eval-lib.nix), with the package, the generated files and util-linux
/// at the given paths and `bundle` given as a path value (so it goes into the Nix store).
const EVAL_FOR_SYSTEMD: &str = r#"
{ libDir, module, stub, bundle, identity, packageDir, fileDir, utilLinux }:
let
  lib = import libDir;
  inherit (lib) mkOption types;
  pkgs = (import (/. + stub)).pkgs { inherit fileDir utilLinux; };
  any = mkOption { type = types.listOf types.unspecified; default = [ ]; };
  attrs = mkOption { type = types.attrsOf types.unspecified; default = { }; };
  evaluated = lib.evalModules {
    modules = [
      {
        options = {
          assertions = any;
          system.checks = any;
          environment.systemPackages = any;
          environment.etc = attrs;
          systemd.services = attrs;
          systemd.timers = attrs;
        };
      }
      (/. + module)
      {
        _module.args.pkgs = pkgs;
        services.vaultfs = {
          enable = true;
          package.outPath = packageDir;
          bundle = /. + bundle;
          inherit identity;
          mounts.web.source = "web";
        };
      }
    ];
  };
  cfg = evaluated.config;
  conf = cfg.environment.etc."vaultfs/serve.toml".source;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
  service = cfg.systemd.services.vaultfs;
  configFile = { path = conf.outPath; inherit (conf) text; };
}
"#;

/// The values of a unit setting: a list is one line per item, a bool `true`/`false`.
fn unit_values(val: &Value) -> Vec<String> {
    match val {
        Value::Array(items) => items.iter().flat_map(unit_values).collect(),
        Value::String(x) => vec![x.clone()],
        other => vec![other.to_string()],
    }
}

/// The trivial attrs-to-INI step: `unitConfig` into [Unit], `environment` and `serviceConfig`
/// into [Service].
fn render_unit(service: &Value) -> String {
    let mut unit = String::from("[Unit]\nDescription=vaultfs\n");
    for (k, val) in service["unitConfig"].as_object().into_iter().flatten() {
        for x in unit_values(val) {
            unit.push_str(&format!("{k}={x}\n"));
        }
    }
    unit.push_str("\n[Service]\n");
    for (k, val) in service["environment"].as_object().into_iter().flatten() {
        unit.push_str(&format!("Environment={k}={}\n", s(val, k)));
    }
    for (k, val) in service["serviceConfig"].as_object().unwrap() {
        for x in unit_values(val) {
            unit.push_str(&format!("{k}={x}\n"));
        }
    }
    unit
}

#[test]
fn systemd_applies_the_bundle_before_serving_and_reloads_without_a_restart() {
    if !require_tool("nix-instantiate") || !can_mount() || !require_tool("systemd-nspawn") {
        return;
    }
    let lib = crate::nixos_actions::nixpkgs_lib();
    if !crate::common::requirement(
        lib.is_some(),
        "nixpkgs-lib",
        "nixpkgs' lib/ ($NIXPKGS_LIB, <nixpkgs/lib>, or tests/fixtures/nixpkgs-lib)",
    ) {
        return;
    }
    let lib = lib.unwrap();
    let ts = TestStore::new();
    let t = ts.dir.path();
    ts.vault("web", &["--owner", "root", "--group", "root"]);
    ts.write("web:/token", b"first");
    let (host_key, public) = ssh_key(t, "ssh_host_ed25519_key", "ed25519");
    ts.ok(&[
        "key",
        "add",
        "--recipient",
        &public,
        "--label",
        "web1",
        "--vault",
        "web",
    ]);
    let b1 = t.join("web1-gen1.vfsb");
    fs::write(&b1, ts.ok(&["bundle", "export", "--for", "web1"])).unwrap();
    ts.write("web:/token", b"second");
    let b2 = t.join("web1-gen2.vfsb");
    fs::write(&b2, ts.ok(&["bundle", "export", "--for", "web1"])).unwrap();

    // Where the Nix store paths of the evaluated unit are inside the container: the package
    // and the generated files are host directories bound there, the bundles are bound at the
    // store paths Nix computed for them. The identity is a host path, as on NixOS.
    let package_dir = "/nix/store/00000000000000000000000000000000-vaultfs";
    let file_dir = "/nix/store/00000000000000000000000000000000-files";
    let identity = "/opt/vaultfs-host/ssh_host_ed25519_key";
    let eval = |bundle: &Path| -> Value {
        let out = Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "--readonly-mode", "-E"])
            .arg(EVAL_FOR_SYSTEMD)
            .arg("--argstr")
            .arg("libDir")
            .arg(&lib)
            .arg("--argstr")
            .arg("module")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/module.nix"))
            .arg("--argstr")
            .arg("stub")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("nixos/tests/stub.nix"))
            .arg("--argstr")
            .arg("bundle")
            .arg(bundle)
            .args(["--argstr", "identity", identity])
            .args(["--argstr", "packageDir", package_dir])
            .args(["--argstr", "fileDir", file_dir])
            .args(["--argstr", "utilLinux", "/usr"])
            .env("NIX_REMOTE", "dummy://")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "evaluation failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["failedAssertions"], json!([]));
        v
    };
    let (v1, v2) = (eval(&b1), eval(&b2));
    let bundle_path = |v: &Value| -> String {
        let reload = s(&v["service"]["serviceConfig"]["ExecReload"], "ExecReload");
        let path = reload.rsplit(' ').next().unwrap().to_owned();
        assert!(path.starts_with("/nix/store/"), "{reload}");
        path
    };
    let (store1, store2) = (bundle_path(&v1), bundle_path(&v2));
    assert_ne!(store1, store2);

    let package = t.join("package");
    fs::create_dir_all(package.join("bin")).unwrap();
    fs::copy(crate::common::vaultfs_bin(), package.join("bin/vaultfs")).unwrap();
    let files = t.join("files");
    fs::create_dir_all(&files).unwrap();
    let config = &v1["configFile"];
    assert_eq!(config, &v2["configFile"]);
    let config_name = s(&config["path"], "config path")
        .strip_prefix(&format!("{file_dir}/"))
        .unwrap()
        .to_owned();
    fs::write(files.join(config_name), s(&config["text"], "config text")).unwrap();

    // Generation 1 and 2 of the unit, as a NixOS switch links them into /etc/systemd/system.
    let gens = t.join("generations");
    fs::create_dir_all(&gens).unwrap();
    fs::write(gens.join("gen1.service"), render_unit(&v1["service"])).unwrap();
    fs::write(gens.join("gen2.service"), render_unit(&v2["service"])).unwrap();
    let units = t.join("units");
    fs::create_dir_all(&units).unwrap();
    // Reads the secret at its start: ordered after vaultfs.service, so after READY=1.
    fs::write(
        units.join("consumer.service"),
        "[Unit]\nWants=vaultfs.service\nAfter=vaultfs.service\n[Service]\nType=oneshot\n\
         ExecStart=/usr/bin/sh -c 'cat /run/keys/web/token >/out/consumer.token'\n",
    )
    .unwrap();
    let probe = "set -x\nexec 2>/out/probe.log\n\
         ms() { echo $(( $(date +%s%N) / 1000000 )); }\n\
         test -e /var/lib/vaultfs/store.db; echo $? >/out/store-before.rc\n\
         ln -sfn /opt/vaultfs-gens/gen1.service /etc/systemd/system/vaultfs.service\n\
         systemctl daemon-reload\n\
         t0=$(ms)\n\
         systemctl start consumer.service; echo $? >/out/consumer.rc\n\
         echo $(( $(ms) - t0 )) >/out/start.ms\n\
         cat /run/keys/web/token >/out/mount.start\n\
         systemctl show -p MainPID --value vaultfs.service >/out/pid.start\n\
         ln -sfn /opt/vaultfs-gens/gen2.service /etc/systemd/system/vaultfs.service\n\
         systemctl daemon-reload\n\
         t0=$(ms)\n\
         systemctl reload vaultfs.service; echo $? >/out/reload.rc\n\
         echo $(( $(ms) - t0 )) >/out/reload.ms\n\
         for i in $(seq 200); do [ \"$(cat /run/keys/web/token)\" = second ] && break; sleep 0.01; done\n\
         echo $(( $(ms) - t0 )) >/out/follow.ms\n\
         cat /run/keys/web/token >/out/mount.reload\n\
         systemctl show -p MainPID --value vaultfs.service >/out/pid.reload\n\
         systemctl show -p NRestarts --value vaultfs.service >/out/restarts\n\
         systemctl show -p ActiveState --value vaultfs.service >/out/state\n\
         journalctl -b --no-pager -o short-monotonic >/out/journal.txt\n";
    let stage = t.join("stage");
    fs::create_dir_all(&stage).unwrap();
    fs::write(stage.join("probe.sh"), probe).unwrap();
    fs::write(
        units.join("probe.service"),
        "[Service]\nType=oneshot\nExecStart=/usr/bin/sh /opt/vaultfs-stage/probe.sh\n",
    )
    .unwrap();

    let out = t.join("out");
    let mut cmd =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/systemd-boot"));
    cmd.args(["--run", "probe.service", "--out", out.to_str().unwrap()]);
    for u in ["consumer.service", "probe.service"] {
        cmd.arg("--unit").arg(units.join(u));
    }
    let ro = |host: &Path, inside: &str| format!("{}:{inside}", host.display());
    cmd.arg("--ro").arg(ro(&package, package_dir));
    cmd.arg("--ro").arg(ro(&files, file_dir));
    cmd.arg("--ro").arg(ro(&b1, &store1));
    cmd.arg("--ro").arg(ro(&b2, &store2));
    cmd.arg("--ro").arg(ro(&host_key, identity));
    cmd.arg("--ro").arg(ro(&gens, "/opt/vaultfs-gens"));
    cmd.arg("--ro").arg(ro(&stage, "/opt/vaultfs-stage"));
    cmd.args(["--timeout", "90"]);
    let began = Instant::now();
    let status = crate::mounts::within(Duration::from_secs(120), "systemd-boot", move || {
        cmd.status()
    })
    .expect("run tests/support/systemd-boot");
    let boot_time = began.elapsed();
    let read = |name: &str| {
        fs::read_to_string(out.join(name))
            .unwrap_or_default()
            .trim()
            .to_owned()
    };
    let context = || {
        format!(
            "status {status:?}\nunit gen1:\n{}\nprobe.log:\n{}\nboot.log:\n{}\njournal:\n{}",
            fs::read_to_string(gens.join("gen1.service")).unwrap_or_default(),
            read("probe.log"),
            read("boot.log"),
            read("journal.txt")
        )
    };
    // Start: the host had no store; ExecStartPre= applied generation 1's bundle before READY=1,
    // so a unit ordered after vaultfs.service reads its secret from the mount at once.
    assert_eq!(read("store-before.rc"), "1", "{}", context());
    assert_eq!(read("consumer.rc"), "0", "{}", context());
    assert_eq!(read("consumer.token"), "first", "{}", context());
    assert_eq!(read("mount.start"), "first", "{}", context());
    // Reload: generation 2's ExecReload= applied the newer bundle; the same daemon serves it.
    assert_eq!(read("reload.rc"), "0", "{}", context());
    assert_eq!(read("mount.reload"), "second", "{}", context());
    let pid = read("pid.start");
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "{}", context());
    assert_eq!(
        read("pid.reload"),
        pid,
        "reload restarted the daemon\n{}",
        context()
    );
    assert_eq!(read("restarts"), "0", "{}", context());
    assert_eq!(read("state"), "active", "{}", context());
    let journal = read("journal.txt");
    let at = |what: &str| {
        journal
            .find(what)
            .unwrap_or_else(|| panic!("{what:?} not in the journal\n{}", context()))
    };
    assert!(
        at(&format!("applied {store1}")) < at("Started vaultfs.service"),
        "{}",
        context()
    );
    assert!(
        at(&format!("applied {store2}")) > at("Reloading vaultfs"),
        "{}",
        context()
    );
    let follow: u64 = read("follow.ms").parse().unwrap_or(u64::MAX);
    assert!(
        follow < 2000,
        "the mount followed in {follow} ms\n{}",
        context()
    );
    eprintln!(
        "systemd 252: start (apply + mount) {} ms, reload {} ms, mount followed {} ms after \
         `systemctl reload`, MainPID {pid} before and after; whole boot {boot_time:?}",
        read("start.ms"),
        read("reload.ms"),
        follow
    );
}
