//! The NixOS module's etcd options (issue 16) under the real nixpkgs `lib` (real option types
//! and merging, through `nixos/tests/real-lib.nix`): the daemon and the gc unit reach exactly
//! the endpoints, and a mistyped option is an evaluation error naming it.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::requirement;
use crate::nixos_actions::nixpkgs_lib;

const PACKAGE: &str = "/nix/store/00000000000000000000000000000000-vaultfs";

fn can_eval() -> bool {
    let nix = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok();
    requirement(nix, "nix", "nix-instantiate is not available")
        && requirement(
            nixpkgs_lib().is_some(),
            "nix",
            "the nixpkgs lib was not found",
        )
}

fn eval(settings: &Value) -> Result<Value, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json"])
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nixos/tests/real-lib.nix"))
        .arg("--arg")
        .arg("libPath")
        .arg(nixpkgs_lib().unwrap())
        .args(["--argstr", "settingsJSON", &settings.to_string()])
        .env("NIX_REMOTE", "dummy://")
        .output()
        .expect("run nix-instantiate");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("JSON"))
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
