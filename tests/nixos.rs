//! The NixOS module (`nixos/module.nix`) and the plain systemd unit
//! (`contrib/systemd/vaultfs.service`), issue #6.
//!
//! The module is evaluated by a bare `nix-instantiate` (Debian: nix-bin) against the stand-ins
//! for nixpkgs' `lib` and `pkgs` in `nixos/tests/stub.nix`, with no store (`NIX_REMOTE=dummy://`).
//! Units are checked with `systemd-analyze verify`. When a tool is missing the test is skipped
//! with a line on stderr, except under `CI=true`, where it fails.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_vaultfs");

/// Options that give a service its own mount namespace. systemd makes that namespace a slave of
/// the host's, so a FUSE mount made inside it is invisible to every other process, whatever
/// MountFlags= says. Neither unit may set any of them.
const MOUNT_NAMESPACE_OPTIONS: &[&str] = &[
    "ProtectSystem",
    "ProtectHome",
    "PrivateTmp",
    "PrivateDevices",
    "PrivateMounts",
    "PrivateNetwork",
    "PrivateIPC",
    "PrivateUsers",
    "DynamicUser",
    "ReadWritePaths",
    "ReadOnlyPaths",
    "InaccessiblePaths",
    "ExecPaths",
    "NoExecPaths",
    "BindPaths",
    "BindReadOnlyPaths",
    "TemporaryFileSystem",
    "ProtectKernelTunables",
    "ProtectKernelModules",
    "ProtectKernelLogs",
    "ProtectControlGroups",
    "ProtectProc",
    "ProcSubset",
    "MountFlags",
    "MountAPIVFS",
    "RootDirectory",
    "RootImage",
    "MountImages",
    "ExtensionImages",
    "ExtensionDirectories",
    "NetworkNamespacePath",
    "IPCNamespacePath",
    "LogNamespace",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn in_path(tool: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(tool))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Whether a test can go on: `what` is there. Under CI=true its absence is a failure.
fn available(ok: bool, what: &str) -> bool {
    crate::common::requirement(
        ok,
        what.split(' ').next().unwrap_or(what),
        &format!("{what} is not available"),
    )
}

fn have(tool: &str, package: &str) -> bool {
    available(
        in_path(tool).is_some(),
        &format!("{tool} (Debian package {package})"),
    )
}

fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    available(
        root && Path::new("/dev/fuse").exists(),
        "root and /dev/fuse (for a real mount)",
    )
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            nix_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "nix") {
            out.push(path);
        }
    }
}

/// Where the evaluated module's package, generated files and util-linux live.
struct Dirs {
    package: PathBuf,
    files: PathBuf,
    util_linux: PathBuf,
}

impl Dirs {
    /// Paths under `root` that exist: `package/bin/vaultfs` is the binary under test, and
    /// util-linux is the host's (`bin/umount`).
    fn real(root: &Path) -> Dirs {
        let package = root.join("package");
        fs::create_dir_all(package.join("bin")).unwrap();
        std::os::unix::fs::symlink(BIN, package.join("bin/vaultfs")).unwrap();
        let files = root.join("files");
        fs::create_dir_all(&files).unwrap();
        let umount = in_path("umount").expect("umount (util-linux) is not on PATH");
        // `${util-linux}/bin/umount`: with umount in /bin, the prefix is empty, not "/".
        let util_linux = match umount.parent().unwrap().parent().unwrap() {
            p if p == Path::new("/") => PathBuf::new(),
            p => p.to_owned(),
        };
        Dirs {
            package,
            files,
            util_linux,
        }
    }

    /// Store-like paths that need not exist.
    fn fake() -> Dirs {
        let store = |name: &str| PathBuf::from(format!("/nix/store/{}-{name}", "0".repeat(32)));
        Dirs {
            package: store("vaultfs"),
            files: store("files"),
            util_linux: store("util-linux"),
        }
    }
}

/// Evaluates the module with `settings` as `services.vaultfs` (None: the two-mount sample in
/// nixos/tests/eval.nix). Err holds nix-instantiate's error message.
fn eval_module(settings: Option<&Value>, dirs: &Dirs) -> Result<Value, String> {
    let mut cmd = Command::new("nix-instantiate");
    cmd.args(["--eval", "--strict", "--json"])
        .arg(repo().join("nixos/tests/eval.nix"))
        .arg("--argstr")
        .arg("packageDir")
        .arg(&dirs.package)
        .arg("--argstr")
        .arg("fileDir")
        .arg(&dirs.files)
        .arg("--argstr")
        .arg("utilLinux")
        .arg(&dirs.util_linux)
        // Evaluation only: no store is opened, so nothing needs root or writes to /nix.
        .env("NIX_REMOTE", "dummy://");
    if let Some(s) = settings {
        cmd.args(["--argstr", "settingsJSON", &s.to_string()]);
    }
    let out = cmd.output().expect("cannot run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("nix-instantiate printed invalid JSON"))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is not a string: {v}"))
}

/// A unit setting's value(s), one per line in the unit file.
fn unit_values(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().flat_map(unit_values).collect(),
        Value::Bool(b) => vec![b.to_string()],
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        other => panic!("not a unit value: {other}"),
    }
}

/// Renders the module's `systemd.services.vaultfs` as NixOS would write vaultfs.service.
fn render_unit(service: &Value) -> String {
    let mut unit = String::from("[Unit]\n");
    let line = |unit: &mut String, key: &str, v: &Value| {
        for value in unit_values(v) {
            unit.push_str(&format!("{key}={value}\n"));
        }
    };
    line(&mut unit, "Description", &service["description"]);
    line(&mut unit, "Before", &service["before"]);
    for (key, v) in service["unitConfig"].as_object().into_iter().flatten() {
        line(&mut unit, key, v);
    }
    unit.push_str("\n[Service]\n");
    for (key, v) in service["environment"].as_object().into_iter().flatten() {
        unit.push_str(&format!("Environment=\"{key}={}\"\n", str_of(v, key)));
    }
    for (key, v) in service["serviceConfig"].as_object().unwrap() {
        line(&mut unit, key, v);
    }
    unit.push_str("\n[Install]\n");
    line(&mut unit, "WantedBy", &service["wantedBy"]);
    line(&mut unit, "RequiredBy", &service["requiredBy"]);
    unit
}

/// `systemd-analyze verify` on `unit`: it must pass and say nothing about the unit.
fn verify_unit(unit: &Path) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(unit)
        .output()
        .expect("cannot run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy();
    assert!(
        out.status.success(),
        "systemd-analyze verify {name} failed:\n{stderr}"
    );
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(name.as_ref()))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains about {name}:\n{}",
        complaints.join("\n")
    );
}

/// `[Service]` settings of a unit file, in order, as (key, value).
fn service_section(text: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
        } else if section == "[Service]" && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').expect("a key=value line");
            settings.push((k.to_owned(), v.to_owned()));
        }
    }
    settings
}

fn assert_no_mount_namespace<'a>(keys: impl IntoIterator<Item = &'a str>, unit: &str) {
    for key in keys {
        assert!(
            !MOUNT_NAMESPACE_OPTIONS.contains(&key),
            "{unit} sets {key}=, which gives it a private mount namespace: its mounts would be \
             invisible to the host"
        );
    }
}

// (a) Every .nix file under nixos/ parses.
#[test]
fn nix_files_parse() {
    if !have("nix-instantiate", "nix-bin") {
        return;
    }
    let mut files = Vec::new();
    nix_files(&repo().join("nixos"), &mut files);
    files.sort();
    for expected in [
        "module.nix",
        "package.nix",
        "tests/vm.nix",
        "tests/eval.nix",
    ] {
        assert!(
            files.contains(&repo().join("nixos").join(expected)),
            "nixos/{expected} is missing"
        );
    }
    for file in &files {
        let out = Command::new("nix-instantiate")
            .arg("--parse")
            .arg(file)
            .env("NIX_REMOTE", "dummy://")
            .output()
            .expect("cannot run nix-instantiate");
        assert!(
            out.status.success(),
            "{} does not parse:\n{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// (b) The sample (two mounts) generates the expected serve config and unit.
#[test]
fn module_generates_config_and_unit() {
    if !have("nix-instantiate", "nix-bin") {
        return;
    }
    let dirs = Dirs::fake();
    let v = eval_module(None, &dirs).unwrap();
    assert_eq!(v["failedAssertions"], json!([]));
    assert!(v["assertionCount"].as_u64().unwrap() >= 4);

    // The serve config: sorted by mount name, the default mountPoint is /run/keys/<name>.
    let config = &v["configFile"];
    let config_path = format!("{}/vaultfs-serve.toml", dirs.files.display());
    assert_eq!(config["path"], json!(config_path));
    let text = str_of(&config["text"], "configFile.text");
    assert_eq!(
        text,
        "# Generated by the vaultfs NixOS module (services.vaultfs). It names secrets but holds none.\n\
         store = \"/var/lib/vaultfs/store.db\"\n\
         \n\
         # services.vaultfs.mounts.alice-netrc\n\
         [[mount]]\n\
         source = \"netrc:/alice\"\n\
         mountpoint = \"/run/keys/alice-netrc\"\n\
         read_only = true\n\
         \n\
         # services.vaultfs.mounts.nix-tokens\n\
         [[mount]]\n\
         source = \"nix:/nix-tokens\"\n\
         mountpoint = \"/run/keys/nix-tokens\"\n\
         read_only = true\n"
    );
    let parsed: toml::Table = text.parse().expect("the generated config is not TOML");
    assert_eq!(parsed["mount"].as_array().unwrap().len(), 2);
    // The key goes to systemd as a credential; it never reaches the world-readable store.
    assert!(!text.contains("/etc/vaultfs/key"));

    // The build-time check runs `serve --check` on exactly that file.
    let pkg = dirs.package.display();
    let checks = v["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 1);
    assert!(
        str_of(&checks[0]["buildCommand"], "buildCommand").contains(&format!(
            "{pkg}/bin/vaultfs serve --check --offline --config {config_path}\n"
        )),
        "{}",
        checks[0]
    );

    let service = &v["service"];
    let sc = &service["serviceConfig"];
    assert_eq!(sc["Type"], "notify");
    assert_eq!(sc["NotifyAccess"], "main");
    assert_eq!(
        sc["ExecStart"],
        json!(format!(
            "{pkg}/bin/vaultfs --key-file %d/vaultfs-key serve --config {config_path}"
        ))
    );
    assert_eq!(sc["LoadCredential"], "vaultfs-key:/etc/vaultfs/key");
    assert_eq!(sc["DeviceAllow"], "/dev/fuse rw");
    assert_eq!(sc["DevicePolicy"], "closed");
    assert_eq!(
        sc["CapabilityBoundingSet"],
        "CAP_SYS_ADMIN CAP_IPC_LOCK CAP_SYS_PTRACE"
    );
    assert_eq!(sc["NoNewPrivileges"], true);
    assert_eq!(sc["RestrictAddressFamilies"], "AF_UNIX");
    assert_eq!(sc["StateDirectory"], "vaultfs");
    assert_eq!(sc["StateDirectoryMode"], "0700");
    assert_eq!(sc["UMask"], "0077");
    assert_eq!(sc["LimitMEMLOCK"], "infinity");
    assert_eq!(sc["LimitCORE"], "0");
    assert_eq!(sc["Restart"], "on-failure");
    let umount = format!("{}/bin/umount", dirs.util_linux.display());
    assert_eq!(
        sc["ExecStopPost"],
        json!([
            format!("-{umount} -l /run/keys/alice-netrc"),
            format!("-{umount} -l /run/keys/nix-tokens"),
        ])
    );
    assert_no_mount_namespace(
        sc.as_object().unwrap().keys().map(String::as_str),
        "the module",
    );
    assert_eq!(
        service["environment"]["FUSERMOUNT_PATH"],
        "/run/wrappers/bin/fusermount3"
    );
    assert_eq!(
        service["before"],
        json!(["nix-daemon.service", "container@web.service"])
    );
    assert_eq!(service["requiredBy"], json!(["container@web.service"]));
    assert_eq!(service["wantedBy"], json!(["multi-user.target"]));
    assert_eq!(v["systemPackages"], json!([pkg.to_string()]));
}

// (b) Mistakes are caught at evaluation, with the option's name.
#[test]
fn module_rejects_bad_settings() {
    if !have("nix-instantiate", "nix-bin") {
        return;
    }
    let dirs = Dirs::fake();
    let with = |mounts: Value, key_file: &str| json!({ "enable": true, "keyFile": key_file, "mounts": mounts });
    let failed = |settings: Value| -> Vec<String> {
        let v = eval_module(Some(&settings), &dirs).unwrap();
        serde_json::from_value(v["failedAssertions"].clone()).unwrap()
    };
    let ok = json!({ "a": { "source": "v" } });
    assert_eq!(
        failed(with(ok.clone(), "/etc/vaultfs/key")),
        Vec::<String>::new()
    );
    let cases = [
        (with(json!({}), "/k"), "mounts is empty"),
        (with(ok.clone(), "/nix/store/x-key"), "keyFile must be"),
        (with(ok.clone(), "etc/key"), "keyFile must be"),
        (with(ok.clone(), "/etc/%i/key"), "keyFile must be"),
        (
            with(
                json!({ "a": { "source": "v", "mountPoint": "run/a" } }),
                "/k",
            ),
            "mounts.a.mountPoint must be",
        ),
        (
            with(
                json!({ "a": { "source": "v", "mountPoint": "/run/a b" } }),
                "/k",
            ),
            "mounts.a.mountPoint must be",
        ),
        (
            with(
                json!({ "a": { "source": "v", "mountPoint": "/k/x" },
                        "b": { "source": "w", "mountPoint": "/k/x" } }),
                "/k",
            ),
            "share a mountPoint",
        ),
        (
            with(json!({ "a": { "source": "v", "readOnly": false } }), "/k"),
            "mounts.a.readOnly",
        ),
        (
            json!({ "enable": true, "mounts": ok }),
            "set exactly one of keyFile and identity",
        ),
    ];
    for (settings, want) in cases {
        let messages = failed(settings.clone());
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "{settings}: expected an assertion containing {want:?}, got {messages:?}"
        );
    }

    let errors = [
        (
            with(json!({ "a": { "source": "v", "mountpoint": "/x" } }), "/k"),
            "The option `services.vaultfs.mounts.a.mountpoint' does not exist",
        ),
        (
            with(json!({ "a": { "source": "v", "readOnly": "yes" } }), "/k"),
            "The option `services.vaultfs.mounts.a.readOnly' is not of type `boolean'",
        ),
    ];
    for (settings, want) in errors {
        let err = eval_module(Some(&settings), &dirs).expect_err("evaluation should fail");
        assert!(err.contains(want), "{settings}: {err}");
    }

    // Disabled, it sets nothing and needs nothing (no keyFile).
    let v = eval_module(Some(&json!({ "enable": false })), &dirs).unwrap();
    assert_eq!(v["service"], Value::Null);
    assert_eq!(v["configFile"], Value::Null);
    assert_eq!(v["checks"], json!([]));
}

// (b) The unit NixOS would write from the module passes systemd-analyze verify.
#[test]
fn module_unit_passes_systemd_analyze_verify() {
    if !have("nix-instantiate", "nix-bin") || !have("systemd-analyze", "systemd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::real(tmp.path());
    let v = eval_module(None, &dirs).unwrap();
    let unit = tmp.path().join("vaultfs.service");
    fs::write(&unit, render_unit(&v["service"])).unwrap();
    verify_unit(&unit);
}

// (c) The plain unit passes systemd-analyze verify (with ExecStart= pointing at the binary under
// test, since verify requires it to exist).
#[test]
fn plain_unit_passes_systemd_analyze_verify() {
    if !have("systemd-analyze", "systemd") {
        return;
    }
    let text = fs::read_to_string(repo().join("contrib/systemd/vaultfs.service")).unwrap();
    let settings = service_section(&text);
    let get = |key: &str| -> Vec<&str> {
        settings
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(
        get("ExecStart"),
        ["/usr/local/bin/vaultfs --key-file ${CREDENTIALS_DIRECTORY}/vaultfs-key serve --config /etc/vaultfs/serve.toml"]
    );
    assert_eq!(get("LoadCredential"), ["vaultfs-key:/etc/vaultfs/key"]);
    assert_eq!(get("Type"), ["notify"]);
    assert_eq!(get("DeviceAllow"), ["/dev/fuse rw"]);
    assert_no_mount_namespace(settings.iter().map(|(k, _)| k.as_str()), "the plain unit");

    let tmp = tempfile::tempdir().unwrap();
    let unit = tmp.path().join("vaultfs.service");
    fs::write(&unit, text.replace("/usr/local/bin/vaultfs", BIN)).unwrap();
    verify_unit(&unit);
}

// (c) The plain unit has the module's hardening, setting for setting.
#[test]
fn plain_unit_matches_module_hardening() {
    if !have("nix-instantiate", "nix-bin") {
        return;
    }
    let v = eval_module(None, &Dirs::fake()).unwrap();
    let module = v["service"]["serviceConfig"].as_object().unwrap();
    let text = fs::read_to_string(repo().join("contrib/systemd/vaultfs.service")).unwrap();
    let plain = service_section(&text);
    // Commands and the environment differ by design (paths, the config check at start).
    let differ = ["ExecStart", "ExecStartPre", "ExecStopPost", "Environment"];
    for (key, value) in module {
        if differ.contains(&key.as_str()) {
            continue;
        }
        let theirs: Vec<String> = plain
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect();
        assert_eq!(theirs, unit_values(value), "{key}= differs");
    }
    for (key, _) in &plain {
        assert!(
            module.contains_key(key) || differ.contains(&key.as_str()),
            "the plain unit sets {key}=, the module does not"
        );
    }
}

/// A daemon started by a test: killed, and its mount detached, if the test fails.
struct Daemon {
    child: Child,
    mountpoint: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.mountpoint) {
            let _ = vaultfs_fs::unmount(&self.mountpoint);
        }
    }
}

fn is_mounted(path: &Path) -> bool {
    vaultfs_fs::mountinfo::mounted_at(path).unwrap().is_some()
}

fn cli(store: &Path, key: &Path, args: &[&str], stdin: Option<&[u8]>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("VAULTFS_STORE", store)
        .env("VAULTFS_KEY_FILE", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "vaultfs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// (d) What NixOS would run: the build-time check, then ExecStart= exactly as the module writes
// it (%d expanded to a credentials directory holding the key, as LoadCredential= does), as a
// Type=notify service, then SIGTERM as `systemctl stop` sends it, then ExecStopPost=.
#[test]
fn serve_runs_exact_execstart() {
    if !have("nix-instantiate", "nix-bin") || !can_mount() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    let dirs = Dirs::real(t);

    // The store and key, made with the CLI as the README says.
    let key = t.join("etc/key");
    fs::create_dir_all(key.parent().unwrap()).unwrap();
    let store = t.join("state/store.db");
    let secret = b"extra-access-tokens = github.com=ghp_exact_execstart\n";
    cli(&store, &key, &["keygen", key.to_str().unwrap()], None);
    cli(&store, &key, &["init"], None);
    cli(
        &store,
        &key,
        &["vault", "create", "nix", "--mode", "0400"],
        None,
    );
    cli(&store, &key, &["write", "nix:/nix-tokens"], Some(secret));

    let mountpoint = t.join("keys/nix-tokens");
    let settings = json!({
        "enable": true,
        "keyFile": key,
        "storePath": store,
        "mounts": { "nix-tokens": { "source": "nix:/nix-tokens", "mountPoint": mountpoint } },
    });
    let v = eval_module(Some(&settings), &dirs).unwrap();
    assert_eq!(v["failedAssertions"], json!([]));

    // Build: the config file, then the check derivation's builder.
    let config = &v["configFile"];
    fs::write(
        str_of(&config["path"], "configFile.path"),
        str_of(&config["text"], "configFile.text"),
    )
    .unwrap();
    for check in v["checks"].as_array().unwrap() {
        let out_path = str_of(&check["path"], "check path");
        let out = Command::new("sh")
            .arg("-ec")
            .arg(str_of(&check["buildCommand"], "buildCommand"))
            .env("out", out_path)
            .output()
            .unwrap();
        assert!(
            out.status.success() && Path::new(out_path).exists(),
            "the build-time check {} failed:\n{}",
            check["name"],
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Start: LoadCredential=NAME:PATH copies PATH to $CREDENTIALS_DIRECTORY/NAME.
    let service = &v["service"];
    let sc = &service["serviceConfig"];
    let (cred_name, cred_source) = str_of(&sc["LoadCredential"], "LoadCredential")
        .split_once(':')
        .unwrap();
    let creds = t.join("credentials");
    fs::DirBuilder::new().mode(0o700).create(&creds).unwrap();
    fs::copy(cred_source, creds.join(cred_name)).unwrap();
    let exec_start = str_of(&sc["ExecStart"], "ExecStart")
        .replace("%d", creds.to_str().unwrap())
        .replace("${CREDENTIALS_DIRECTORY}", creds.to_str().unwrap());
    assert!(
        !exec_start.contains(['%', '$', '"', '\'', '\\']),
        "ExecStart needs systemd's quoting or specifiers, which this test does not expand: {exec_start}"
    );
    let argv: Vec<&str> = exec_start.split_whitespace().collect();

    let notify_path = t.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stderr = t.join("daemon.log");
    let mut cmd = Command::new(argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CREDENTIALS_DIRECTORY", &creds)
        .env("NOTIFY_SOCKET", &notify_path)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap());
    for (k, v) in service["environment"].as_object().unwrap() {
        cmd.env(k, str_of(v, k));
    }
    let mut daemon = Daemon {
        child: cmd.spawn().unwrap(),
        mountpoint: mountpoint.clone(),
        stderr,
    };

    // Type=notify: the unit is started when READY=1 arrives.
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
        if let Some(status) = daemon.child.try_wait().unwrap() {
            panic!(
                "the daemon exited ({status}) before READY=1:\n{}",
                daemon.log()
            );
        }
        assert!(
            Instant::now() < deadline,
            "no READY=1 after 30 s:\n{}",
            daemon.log()
        );
    }
    assert!(is_mounted(&mountpoint), "READY=1 before the mount is up");
    assert_eq!(fs::read(&mountpoint).unwrap(), secret);

    // Stop: SIGTERM to the main process, which unmounts and exits 0; then ExecStopPost=.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(daemon.child.id() as libc::pid_t, libc::SIGTERM) };
    let status = daemon.wait(Duration::from_secs(30));
    let log = daemon.log();
    let status = status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{log}"));
    assert!(status.success(), "exit {status} after SIGTERM:\n{log}");
    assert!(!is_mounted(&mountpoint), "still mounted after SIGTERM");
    for cmd in unit_values(&sc["ExecStopPost"]) {
        // `-`: systemd ignores the exit status; the command must still exist and run.
        let cmd = cmd.strip_prefix('-').expect("ExecStopPost= without `-`");
        let argv: Vec<&str> = cmd.split_whitespace().collect();
        Command::new(argv[0])
            .args(&argv[1..])
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("ExecStopPost={cmd}: {e}"));
    }
    assert!(!is_mounted(&mountpoint));
}

// Issue 16: with an etcd store the unit opens exactly the endpoints' addresses (and families),
// the secrets of the etcd connection reach the daemon as credentials, and the unit still
// passes systemd-analyze verify.
#[test]
fn module_opens_exactly_the_etcd_endpoints() {
    if !have("nix-instantiate", "nix-bin") || !have("systemd-analyze", "systemd") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dirs = Dirs::real(tmp.path());
    let settings = json!({
        "enable": true,
        "identity": "/etc/ssh/ssh_host_ed25519_key",
        "mounts": { "web": { "source": "web" } },
        "etcd": {
            "endpoints": ["10.0.0.2:2379", "10.0.0.1:2379", "10.0.0.1:2380"],
            "prefix": "/vaultfs/prod",
            "host": "web1",
            "tls": true,
            "caFile": "/etc/etcd/ca.pem",
            "certFile": "/etc/etcd/web1.pem",
            "keyFile": "/etc/etcd/web1-key.pem",
            "user": "web1",
            "passwordFile": "/etc/vaultfs/etcd-password",
        },
    });
    let v = eval_module(Some(&settings), &dirs).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let text = str_of(&v["configFile"]["text"], "configFile.text");
    assert!(
        text.starts_with(
            "# Generated by the vaultfs NixOS module (services.vaultfs). It names secrets but holds none.\n\
             store = \"etcds://10.0.0.2:2379,10.0.0.1:2379,10.0.0.1:2380/vaultfs/prod\"\n\
             replica = \"/var/lib/vaultfs/replica.db\"\n\
             host = \"web1\"\n\
             etcd_cacert = \"/etc/etcd/ca.pem\"\n\
             etcd_cert = \"/etc/etcd/web1.pem\"\n\
             etcd_user = \"web1\"\n"
        ),
        "{text}"
    );
    // The client key and the password are not in the (world-readable) config.
    assert!(
        !text.contains("web1-key.pem") && !text.contains("etcd-password"),
        "{text}"
    );
    let sc = &v["service"]["serviceConfig"];
    assert_eq!(sc["RestrictAddressFamilies"], "AF_UNIX AF_INET", "{sc}");
    assert_eq!(
        sc["IPAddressAllow"],
        json!(["10.0.0.1", "10.0.0.2"]),
        "{sc}"
    );
    assert_eq!(sc["IPAddressDeny"], "any");
    assert_eq!(
        sc["LoadCredential"],
        json!([
            "vaultfs-identity:/etc/ssh/ssh_host_ed25519_key",
            "vaultfs-etcd-key:/etc/etcd/web1-key.pem",
            "vaultfs-etcd-password:/etc/vaultfs/etcd-password",
        ])
    );
    let pkg = dirs.package.display();
    let config_path = format!("{}/vaultfs-serve.toml", dirs.files.display());
    assert_eq!(
        sc["ExecStart"],
        json!(format!(
            "{pkg}/bin/vaultfs --identity %d/vaultfs-identity --etcd-key %d/vaultfs-etcd-key \
             --etcd-password-file %d/vaultfs-etcd-password serve --config {config_path}"
        ))
    );
    assert_eq!(
        v["service"]["unitConfig"]["RequiresMountsFor"],
        json!(["/var/lib/vaultfs"])
    );
    let unit = tmp.path().join("vaultfs.service");
    fs::write(&unit, render_unit(&v["service"])).unwrap();
    verify_unit(&unit);

    // IPv6 only: AF_INET6, not AF_INET.
    let mut v6 = settings.clone();
    v6["etcd"]["endpoints"] = json!(["[fd00::1]:2379", "[fd00::2]:2379"]);
    let v = eval_module(Some(&v6), &dirs).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let sc = &v["service"]["serviceConfig"];
    assert_eq!(sc["RestrictAddressFamilies"], "AF_UNIX AF_INET6");
    assert_eq!(sc["IPAddressAllow"], json!(["fd00::1", "fd00::2"]));

    // Without endpoints nothing opens (the local-store unit, as before).
    let mut local = settings.clone();
    local["etcd"] = json!({});
    let v = eval_module(Some(&local), &dirs).unwrap();
    let sc = &v["service"]["serviceConfig"];
    assert_eq!(sc["RestrictAddressFamilies"], "AF_UNIX");
    assert_eq!(sc["IPAddressAllow"], Value::Null);
    assert!(
        str_of(&v["configFile"]["text"], "text").contains("store = \"/var/lib/vaultfs/store.db\"")
    );

    // Mistakes are assertions naming the option.
    let failed = |etcd: Value, extra: Value| -> Vec<String> {
        let mut s = settings.clone();
        s["etcd"] = etcd;
        for (k, val) in extra.as_object().unwrap() {
            s[k] = val.clone();
        }
        let v = eval_module(Some(&s), &dirs).unwrap();
        serde_json::from_value(v["failedAssertions"].clone()).unwrap()
    };
    let cases = [
        (
            json!({ "endpoints": ["etcd1.example:2379"] }),
            json!({}),
            "etcd.endpoints must be IPv4:PORT or [IPv6]:PORT",
        ),
        (
            json!({ "endpoints": ["10.0.0.1"] }),
            json!({}),
            "etcd.endpoints must be",
        ),
        (
            json!({ "endpoints": ["10.0.0.1:2379"], "prefix": "vaultfs" }),
            json!({}),
            "etcd.prefix must be",
        ),
        (
            json!({ "endpoints": ["10.0.0.1:2379"], "keyFile": "/etc/k" }),
            json!({}),
            "certFile and keyFile together",
        ),
        (
            json!({ "endpoints": ["10.0.0.1:2379"], "caFile": "/etc/ca" }),
            json!({}),
            "need etcd.tls = true",
        ),
        (
            json!({ "endpoints": ["10.0.0.1:2379"], "user": "u" }),
            json!({}),
            "user and passwordFile together",
        ),
        (
            json!({ "endpoints": ["10.0.0.1:2379"], "user": "u", "passwordFile": "/nix/store/x-pw" }),
            json!({}),
            "etcd.passwordFile must be",
        ),
        (
            json!({ "endpoints": ["10.0.0.1:2379"] }),
            json!({ "bundle": "/x.vfsb" }),
            "set etcd.endpoints or bundle, not both",
        ),
    ];
    for (etcd, extra, want) in cases {
        let messages = failed(etcd.clone(), extra);
        assert!(
            messages.iter().any(|m| m.contains(want)),
            "{etcd}: expected an assertion containing {want:?}, got {messages:?}"
        );
    }
}
