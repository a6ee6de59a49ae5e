# Evaluates ../module.nix with the real nixpkgs module system (`lib.evalModules` from
# nixpkgs' lib/, unpacked by tests/nixos_bundle.rs), with stand-ins only for the NixOS options
# the module sets. It checks what stub.nix cannot: real option types (a path value for
# `bundle`, copied into the Nix store), real `mkIf`, and real merging.
#
#   NIX_REMOTE=dummy:// nix-instantiate --eval --strict --json --readonly-mode nixos/tests/eval-lib.nix \
#     --argstr libDir /tmp/nixpkgs-lib/lib --argstr bundle /path/to/web1.vfsb
{
  libDir,
  bundle,
  identity ? "/etc/ssh/ssh_host_ed25519_key",
}:
let
  lib = import libDir;
  inherit (lib) mkOption types;
  pkgs = (import ./stub.nix).pkgs {
    fileDir = "/nix/store/00000000000000000000000000000000-files";
    utilLinux = "/nix/store/00000000000000000000000000000000-util-linux";
  };
  any = mkOption {
    type = types.listOf types.unspecified;
    default = [ ];
  };
  standIns = {
    options = {
      assertions = any;
      system.checks = any;
      environment.systemPackages = any;
      environment.etc = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
      systemd.services = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf types.unspecified;
        default = { };
      };
    };
  };
  evaluated = lib.evalModules {
    modules = [
      standIns
      ../module.nix
      {
        _module.args.pkgs = pkgs;
        services.vaultfs = {
          enable = true;
          package = {
            outPath = "/nix/store/00000000000000000000000000000000-vaultfs";
          };
          # A path value, as in configuration.nix: `bundle = ./secrets/web1.vfsb;`.
          bundle = /. + bundle;
          inherit identity;
          mounts.web.source = "web";
        };
      }
    ];
  };
  cfg = evaluated.config;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
  serviceConfig = cfg.systemd.services.vaultfs.serviceConfig;
}
