//! The NixOS module's grants and expiry gc (issue 13), evaluated with the real nixpkgs `lib`
//! through `nixos/tests/real-lib.nix`; the generated grant command is run against a real store.

use serde_json::{json, Value};

use crate::common::TestStore;
use crate::nixos_actions::{can_eval, PACKAGE};

/// Evaluates the module with `settings` as `services.vaultfs`.
fn eval(settings: &Value) -> Result<Value, String> {
    crate::nixos_actions::eval(settings, &[])
}

fn sample(store: &str) -> Value {
    json!({
        "enable": true,
        "keyFile": "/etc/vaultfs/key",
        "storePath": store,
        "mounts": { "app": { "source": "app" } },
        "grants": [
            { "path": "app:/tls", "user": "nobody", "unit": "nginx.service" },
            { "path": "app:/deploy", "group": "nogroup", "exe": "/usr/bin/ssh" }
        ]
    })
}

#[test]
fn module_applies_grants_before_the_mounts_and_the_grant_command_works() {
    if !can_eval() {
        return;
    }
    let ts = TestStore::new();
    let v = eval(&sample(ts.store.to_str().unwrap())).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let pre: Vec<&str> = v["execStartPre"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    let store = ts.store.to_str().unwrap();
    let cli = format!("-{PACKAGE}/bin/vaultfs --key-file %d/vaultfs-key --store {store}");
    assert_eq!(
        pre,
        [
            format!("{cli} acl grant app:/tls --user nobody --unit nginx.service"),
            format!("{cli} acl grant app:/deploy --group nogroup --exe /usr/bin/ssh"),
        ],
        "{v}"
    );

    // Run the generated commands as systemd would (twice: every start applies them again).
    ts.vault("app", &[]);
    ts.write("app:/tls", b"tls-key");
    ts.write("app:/deploy", b"deploy-key");
    for _ in 0..2 {
        for line in &pre {
            let line = line.strip_prefix('-').expect("a `-` line");
            let args: Vec<String> = line
                .split(' ')
                .map(|a| a.replace("%d/vaultfs-key", ts.key.to_str().unwrap()))
                .collect();
            assert_eq!(args[0], format!("{PACKAGE}/bin/vaultfs"));
            let out = ts.cmd().args(&args[1..]).output().unwrap();
            assert!(out.status.success(), "{line}: {out:?}");
        }
    }
    let tls = ts.ok_text(&["acl", "show", "app:/tls"]);
    assert!(
        tls.contains("nobody") && tls.contains("nginx.service"),
        "{tls}"
    );
    assert_eq!(tls.matches("nginx.service").count(), 1, "idempotent: {tls}");
    let deploy = ts.ok_text(&["acl", "show", "app:/deploy"]);
    assert!(
        deploy.contains("nogroup") && deploy.contains("/usr/bin/ssh"),
        "{deploy}"
    );
}

#[test]
fn module_runs_gc_periodically_with_the_services_credential() {
    if !can_eval() {
        return;
    }
    let v = eval(&sample("/var/lib/vaultfs/store.db")).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let timer = &v["gcTimer"];
    assert_eq!(timer["timerConfig"]["OnCalendar"], json!("hourly"), "{v}");
    assert_eq!(timer["wantedBy"], json!(["timers.target"]), "{v}");
    let service = &v["gcService"]["serviceConfig"];
    assert_eq!(service["Type"], json!("oneshot"), "{v}");
    assert_eq!(
        service["ExecStart"],
        json!(format!(
            "{PACKAGE}/bin/vaultfs --key-file %d/vaultfs-key --store /var/lib/vaultfs/store.db gc"
        )),
        "{v}"
    );
    assert_eq!(
        service["LoadCredential"],
        json!("vaultfs-key:/etc/vaultfs/key")
    );

    let mut s = sample("/var/lib/vaultfs/store.db");
    s["gc"] = json!({ "interval": "*:0/15" });
    let v = eval(&s).unwrap();
    assert_eq!(v["gcTimer"]["timerConfig"]["OnCalendar"], json!("*:0/15"));
}

#[test]
fn module_refuses_a_grant_without_exactly_one_principal_or_with_unsafe_words() {
    if !can_eval() {
        return;
    }
    let mut s = sample("/var/lib/vaultfs/store.db");
    s["grants"] = json!([{ "path": "app:/tls", "user": "a", "group": "b" }]);
    let failed = eval(&s).unwrap()["failedAssertions"].to_string();
    assert!(
        failed.contains("services.vaultfs.grants.0: set exactly one of user and group"),
        "{failed}"
    );
    s["grants"] = json!([{ "path": "app:/tls; rm -rf /", "user": "a" }]);
    let failed = eval(&s).unwrap()["failedAssertions"].to_string();
    assert!(
        failed.contains("services.vaultfs.grants.0: path must be VAULT:/PATH"),
        "{failed}"
    );
    s["grants"] = json!([{ "path": "app:/tls", "user": "a", "exe": "relative/ssh" }]);
    let failed = eval(&s).unwrap()["failedAssertions"].to_string();
    assert!(failed.contains("exe an absolute path"), "{failed}");
}

/// The store head (its change counter): re-applying limits must not move it.
fn head(ts: &TestStore) -> i64 {
    ts.db()
        .query_row("SELECT value FROM generation WHERE id = 1", [], |r| {
            r.get(0)
        })
        .unwrap()
}

#[test]
fn module_applies_limits_at_every_start_without_moving_them_or_resetting_counts() {
    if !can_eval() {
        return;
    }
    let ts = TestStore::new();
    let store = ts.store.to_str().unwrap();
    let mut s = sample(store);
    s["grants"] = json!([]);
    s["limits"] = json!({
        "app:/handoff": { "maxOpens": 1 },
        "app:/token": { "ttl": "1h" },
        "app:/cert": { "expires": "2099-12-31T00:00:00Z", "maxOpens": 5 },
        "app:/later": { "maxOpens": 2 },
    });
    let v = eval(&s).unwrap();
    assert_eq!(v["failedAssertions"], json!([]), "{v}");
    let pre: Vec<&str> = v["execStartPre"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    // No `-`: a limit that cannot be applied stops the start (never serve it unlimited).
    let cli = format!("{PACKAGE}/bin/vaultfs --key-file %d/vaultfs-key --store {store}");
    assert_eq!(
        pre,
        [
            format!("{cli} acl limit app:/cert --if-exists --clear --expires 2099-12-31T00:00:00Z --max-opens 5"),
            format!("{cli} acl limit app:/handoff --if-exists --clear --max-opens 1"),
            format!("{cli} acl limit app:/later --if-exists --clear --max-opens 2"),
            format!("{cli} acl limit app:/token --if-exists --clear --ttl 1h"),
        ],
        "{v}"
    );

    ts.vault("app", &[]);
    ts.write("app:/handoff", b"once");
    ts.write("app:/token", b"tok");
    // app:/cert was limited by hand; Nix's limits replace those (`--clear`).
    let out = ts.run(&["write", "app:/cert", "--ttl", "10m"], b"cert");
    assert!(out.status.success(), "{out:?}");
    let start = |ts: &TestStore| {
        for line in &pre {
            let args: Vec<String> = line
                .split(' ')
                .map(|a| a.replace("%d/vaultfs-key", ts.key.to_str().unwrap()))
                .collect();
            let out = ts.cmd().args(&args[1..]).output().unwrap();
            assert!(out.status.success(), "{line}: {out:?}");
        }
    };
    start(&ts);
    let h = head(&ts);
    let listed = ts.ok_text(&["ls", "-l", "app"]);
    assert!(listed.contains("handoff (max-opens 1)"), "{listed}");
    assert!(
        listed.contains("cert (expires 2099-12-31 00:00:00 UTC, max-opens 5)"),
        "{listed}"
    );
    assert!(listed.contains("token (expires 20"), "{listed}");
    assert!(!listed.contains("later"), "{listed}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    // The next start, a second later: nothing changes, so nothing is written.
    start(&ts);
    assert_eq!(head(&ts), h, "a restart re-wrote limits already in force");
    assert_eq!(
        ts.ok_text(&["ls", "-l", "app"]),
        listed,
        "a restart moved a limit"
    );
    // A secret written after the first start gets its limit at the next one.
    ts.write("app:/later", b"later");
    start(&ts);
    assert!(ts
        .ok_text(&["ls", "-l", "app"])
        .contains("later (max-opens 2)"));
}

#[test]
fn module_refuses_limits_it_cannot_apply() {
    if !can_eval() {
        return;
    }
    let mut s = sample("/var/lib/vaultfs/store.db");
    for (limits, want) in [
        (
            json!({ "app:/a": { "ttl": "1h", "expires": "2099-01-01T00:00:00Z" } }),
            "not both",
        ),
        (json!({ "app:/a": { "ttl": "tomorrow" } }), "ttl a duration"),
        (json!({ "app:/a": { "expires": "2099-01-01" } }), "RFC 3339"),
        (json!({ "app:/a": { "maxOpens": 0 } }), "maxOpens 1 or more"),
        (
            json!({ "app:/a; reboot": { "maxOpens": 1 } }),
            "VAULT:/PATH",
        ),
    ] {
        s["limits"] = limits.clone();
        let failed = eval(&s).unwrap()["failedAssertions"].to_string();
        assert!(
            failed.contains("services.vaultfs.limits.") && failed.contains(want),
            "{limits}: {failed}"
        );
    }
}

#[test]
fn module_mirrors_the_audit_only_when_asked_and_the_config_it_writes_is_accepted() {
    if !can_eval() {
        return;
    }
    let ts = TestStore::new();
    let mut s = sample(ts.store.to_str().unwrap());
    let off = eval(&s).unwrap();
    assert!(
        !off["configText"].as_str().unwrap().contains("[audit]"),
        "{off}"
    );
    s["audit"] = json!({ "mirror": "journal", "mirrorPaths": true });
    let on = eval(&s).unwrap();
    let text = on["configText"].as_str().unwrap().to_owned();
    assert!(
        text.contains("[audit]\nmirror = \"journal\"\nmirror_paths = true\n"),
        "{text}"
    );
    // The daemon accepts the file the module writes.
    let cfg = ts.path("serve.toml");
    std::fs::write(&cfg, &text).unwrap();
    ts.ok(&[
        "serve",
        "--check",
        "--offline",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    s["audit"] = json!({ "mirror": "loud" });
    assert!(eval(&s).is_err(), "an unknown mirror was accepted");
}
