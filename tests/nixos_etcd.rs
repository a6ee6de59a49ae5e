//! The NixOS module's etcd options (issue 16) under the real nixpkgs `lib` (real option types
//! and merging, through `nixos/tests/real-lib.nix`): the daemon and the gc unit reach exactly
//! the endpoints, and a mistyped option is an evaluation error naming it.

use serde_json::{json, Value};

use crate::nixos_actions::{can_eval, PACKAGE};

/// Evaluates the module with `settings` as `services.vaultfs`.
fn eval(settings: &Value) -> Result<Value, String> {
    crate::nixos_actions::eval(settings, &[])
}

fn sample() -> Value {
    json!({
        "enable": true,
        "keyFile": "/etc/vaultfs/key",
        "mounts": { "app": { "source": "app" } },
        "etcd": {
            "endpoints": ["192.0.2.1:2379", "192.0.2.2:2379", "[2001:db8::3]:2379"],
            "prefix": "/vaultfs/prod",
            "user": "web1",
            "passwordFile": "/etc/vaultfs/etcd-password",
        },
    })
}

#[test]
fn real_lib_daemon_and_gc_reach_exactly_the_etcd_endpoints() {
    if !can_eval() {
        return;
    }
    let v = eval(&sample()).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let sc = &v["serviceConfig"];
    assert_eq!(
        sc["RestrictAddressFamilies"], "AF_UNIX AF_INET AF_INET6",
        "{v}"
    );
    assert_eq!(
        sc["IPAddressAllow"],
        json!(["192.0.2.1", "192.0.2.2", "2001:db8::3"]),
        "{v}"
    );
    assert_eq!(sc["IPAddressDeny"], "any");
    let text = v["configText"].as_str().unwrap();
    assert!(
        text.contains(
            "store = \"etcd://192.0.2.1:2379,192.0.2.2:2379,[2001:db8::3]:2379/vaultfs/prod\"\n"
        ),
        "{text}"
    );
    // The gc deletes expired secrets in the store, which is in etcd: it gets the network, to
    // the same addresses only, and the password as a credential.
    let gc = &v["gcService"]["serviceConfig"];
    assert_eq!(gc["PrivateNetwork"], false, "{gc}");
    assert_eq!(gc["IPAddressAllow"], sc["IPAddressAllow"]);
    assert_eq!(gc["IPAddressDeny"], "any");
    assert_eq!(gc["RestrictAddressFamilies"], "AF_UNIX AF_INET AF_INET6");
    assert_eq!(
        gc["ExecStart"],
        json!(format!(
            "{PACKAGE}/bin/vaultfs --key-file %d/vaultfs-key --store \
             etcd://192.0.2.1:2379,192.0.2.2:2379,[2001:db8::3]:2379/vaultfs/prod \
             --etcd-password-file %d/vaultfs-etcd-password gc"
        ))
    );
    assert_eq!(
        gc["LoadCredential"],
        json!([
            "vaultfs-key:/etc/vaultfs/key",
            "vaultfs-etcd-password:/etc/vaultfs/etcd-password"
        ])
    );
    // Without etcd the gc stays off the network.
    let mut local = sample();
    local["etcd"] = json!({});
    let v = eval(&local).unwrap();
    assert_eq!(v["gcService"]["serviceConfig"]["PrivateNetwork"], true);
    assert_eq!(v["serviceConfig"]["IPAddressAllow"], Value::Null);
    // Real option types: a string where a list goes is an error naming the option.
    let mut bad = sample();
    bad["etcd"]["endpoints"] = json!("192.0.2.1:2379");
    let err = eval(&bad).expect_err("a string is not a list of endpoints");
    assert!(err.contains("services.vaultfs.etcd.endpoints"), "{err}");
}

/// The unit's own `ExecStart=` and generated config, run as systemd would (credentials copied
/// to `%d`) against a real 3-member etcd cluster: the daemon keeps a replica, mounts it, and
/// follows a rotation. The module and the binary agree on every key and flag.
#[cfg(feature = "etcd")]
#[test]
fn the_units_execstart_serves_a_replica_from_a_real_etcd_cluster() {
    use crate::mounts::{can_mount, is_mounted, wait_until, MountGuard};
    use std::time::Duration;
    if !can_eval() || !crate::etcd::have_etcd() || !can_mount() {
        return;
    }
    let fleet = crate::fleet::Fleet::store_only();
    let dir = fleet.admin.path("nixhost");
    std::fs::create_dir_all(&dir).unwrap();
    let (identity, recipient) = crate::hostkeys::age_key(&dir, "identity");
    fleet.admin.ok(&[
        "key",
        "add",
        "--recipient",
        &recipient,
        "--label",
        "nixhost",
        "--vault",
        &fleet.vault,
    ]);
    fleet.write("/token", b"token-1");
    let mnt = dir.join("mnt");
    let replica = dir.join("replica.db");
    let endpoints: Vec<String> = fleet
        .cluster
        .members
        .iter()
        .map(|m| format!("127.0.0.1:{}", m.client_port))
        .collect();
    let settings = json!({
        "enable": true,
        "identity": identity,
        "mounts": { "web": { "source": fleet.vault, "mountPoint": mnt } },
        "etcd": {
            "endpoints": endpoints,
            "prefix": fleet.prefix,
            "replicaPath": replica,
            "host": "nixhost",
        },
    });
    let v = eval(&settings).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let sc = &v["serviceConfig"];
    assert_eq!(sc["IPAddressAllow"], json!(["127.0.0.1"]));
    assert_eq!(sc["RestrictAddressFamilies"], "AF_UNIX AF_INET");
    // Build: the config file; start: LoadCredential=NAME:PATH copied to %d/NAME.
    let config = dir.join("vaultfs-serve.toml");
    std::fs::write(&config, v["configText"].as_str().unwrap()).unwrap();
    let creds = dir.join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let (name, source) = sc["LoadCredential"]
        .as_str()
        .unwrap()
        .split_once(':')
        .unwrap();
    std::fs::copy(source, creds.join(name)).unwrap();
    let exec_start = sc["ExecStart"]
        .as_str()
        .unwrap()
        .replace("%d", creds.to_str().unwrap())
        .replace(
            &format!("{PACKAGE}/bin/vaultfs"),
            crate::common::vaultfs_bin().to_str().unwrap(),
        )
        .replace(
            "/nix/store/00000000000000000000000000000000-vaultfs-serve.toml",
            config.to_str().unwrap(),
        );
    let argv: Vec<&str> = exec_start.split_whitespace().collect();
    let log = dir.join("serve.log");
    let mut child = std::process::Command::new(argv[0])
        .args(&argv[1..])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("VAULTFS_LOG", "info")
        .env("VAULTFS_STATE_DIR", dir.join("state"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("run the unit's ExecStart");
    let _guard = MountGuard { path: mnt.clone() };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(30), "the unit's mount", || {
        is_mounted(&mnt) || matches!(child.try_wait(), Ok(Some(_)))
    });
    assert!(is_mounted(&mnt), "{exec_start}\n{}", log_text());
    assert_eq!(std::fs::read(mnt.join("token")).unwrap(), b"token-1");
    assert!(replica.exists());
    fleet.write("/token", b"token-2");
    wait_until(
        Duration::from_secs(15),
        "the rotation through the unit",
        || std::fs::read(mnt.join("token")).ok().as_deref() == Some(&b"token-2"[..]),
    );
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let _ = child.wait();
}
