# A NixOS VM test of the module, for hosts with nixpkgs and KVM (it cannot run in this
# repository's CI, which has no nixpkgs; tests/nixos.rs evaluates the module there instead):
#
#   nix-build nixos/tests/vm.nix                                   # <nixpkgs> from NIX_PATH
#   nix-build nixos/tests/vm.nix --arg pkgs 'import /path/to/nixpkgs { }'
#   $(nix-build -A driverInteractive nixos/tests/vm.nix)/bin/nixos-test-driver   # to poke around
{
  pkgs ? import <nixpkgs> { },
}:

let
  vaultfs = pkgs.callPackage ../package.nix { };
in
pkgs.testers.runNixOSTest {
  name = "vaultfs";

  nodes.machine =
    { ... }:
    {
      imports = [ ../module.nix ];

      services.vaultfs = {
        enable = true;
        package = vaultfs;
        keyFile = "/etc/vaultfs/key";
        mounts = {
          nix-tokens.source = "nix:/nix-tokens"; # at /run/keys/nix-tokens
          alice-netrc = {
            source = "netrc:/alice";
            mountPoint = "/run/keys/alice-netrc";
          };
          web.source = "web"; # a whole vault, at /run/keys/web
        };
        requiredBy = [ "container@web.service" ];
      };

      nix.extraOptions = "!include /run/keys/nix-tokens";

      # /run/keys is root:keys 0750; each secret's own mode does the rest.
      users.users.alice = {
        isNormalUser = true;
        extraGroups = [ "keys" ];
      };
      users.users.bob = {
        isNormalUser = true;
        extraGroups = [ "keys" ];
      };
      systemd.tmpfiles.rules = [ "L+ /home/alice/.netrc - - - - /run/keys/alice-netrc" ];

      containers.web = {
        autoStart = true;
        bindMounts."/run/keys/web" = {
          hostPath = "/run/keys/web";
          isReadOnly = true;
        };
        config.system.stateVersion = "24.11";
      };

      # The module puts vaultfs on PATH; these let the test script write without flags.
      environment.variables = {
        VAULTFS_STORE = "/var/lib/vaultfs/store.db";
        VAULTFS_KEY_FILE = "/etc/vaultfs/key";
      };

      # Creates the key and the store before the daemon first starts, as an admin would by hand
      # (nixos/README.md).
      systemd.services.vaultfs-seed = {
        requiredBy = [ "vaultfs.service" ];
        before = [ "vaultfs.service" ];
        path = [ vaultfs ];
        environment = {
          VAULTFS_STORE = "/var/lib/vaultfs/store.db";
          VAULTFS_KEY_FILE = "/etc/vaultfs/key";
        };
        serviceConfig = {
          Type = "oneshot";
          RemainAfterExit = true;
        };
        script = ''
          [ -e /var/lib/vaultfs/store.db ] && exit 0
          install -d -m 0700 /etc/vaultfs /var/lib/vaultfs
          vaultfs keygen /etc/vaultfs/key
          vaultfs init
          vaultfs vault create nix --owner root --group root --mode 0400
          printf 'extra-access-tokens = github.com=ghp_vmtest\n' | vaultfs write nix:/nix-tokens
          vaultfs vault create netrc --owner root --group root --mode 0400
          printf 'machine example.com login alice password s3cret\n' | vaultfs write netrc:/alice
          vaultfs acl set netrc:/alice --owner alice --mode 0400
          vaultfs vault create web --owner root --group root --mode 0400
          printf 'postgres://web@db/web\n' | vaultfs write web:/db-url
        '';
      };

      virtualisation.memorySize = 1024;
    };

  testScript = ''
    machine.wait_for_unit("vaultfs.service")

    with subtest("the mounts are visible outside the service"):
        machine.succeed("findmnt -n /run/keys/nix-tokens")
        machine.succeed("findmnt -n /run/keys/alice-netrc")
        machine.succeed("findmnt -n /run/keys/web")

    with subtest("nix access tokens, readable by root only"):
        machine.succeed("grep -q ghp_vmtest /run/keys/nix-tokens")
        machine.fail("su bob -c 'cat /run/keys/nix-tokens'")
        machine.succeed(
            "nix --extra-experimental-features nix-command show-config | grep -F github.com=ghp_vmtest"
        )

    with subtest("alice's netrc"):
        machine.succeed("test \"$(stat -c %U /run/keys/alice-netrc)\" = alice")
        machine.succeed("su alice -c 'grep -q s3cret ~/.netrc'")
        machine.fail("su bob -c 'cat /run/keys/alice-netrc'")

    with subtest("a container bind mount"):
        machine.wait_for_unit("container@web.service")
        machine.succeed("nixos-container run web -- cat /run/keys/web/db-url | grep -q postgres")

    with subtest("rotation reaches the next open"):
        machine.succeed(
            "printf 'extra-access-tokens = github.com=ghp_rotated\\n' | vaultfs write nix:/nix-tokens"
        )
        machine.succeed("grep -q ghp_rotated /run/keys/nix-tokens")

    with subtest("stop unmounts, start mounts again"):
        machine.succeed("systemctl stop vaultfs.service")
        machine.fail("findmnt -n /run/keys/nix-tokens")
        machine.fail("findmnt -n /run/keys/web")
        machine.succeed("systemctl start vaultfs.service")
        machine.succeed("grep -q ghp_rotated /run/keys/nix-tokens")

    with subtest("after a crash, systemd restarts it and the stale mount is cleared"):
        machine.succeed("systemctl kill -s KILL vaultfs.service")
        machine.wait_until_succeeds("grep -q ghp_rotated /run/keys/nix-tokens")
        machine.succeed("findmnt -n /run/keys/nix-tokens")
  '';
}
