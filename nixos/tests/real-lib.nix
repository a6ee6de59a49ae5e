# Evaluates ../module.nix the way NixOS does, with the real nixpkgs `lib` (lib.evalModules,
# lib.types), and stand-ins only for the NixOS options the module sets or reads (systemd,
# environment, assertions, system.checks). Used by tests/nixos_actions.rs:
#
#   nix-instantiate --eval --strict --json nixos/tests/real-lib.nix \
#     --arg libPath /path/to/nixpkgs/lib --argstr settingsJSON '{...}' --argstr servicesJSON '["nginx"]'
#
# settingsJSON: `services.vaultfs` as JSON; servicesJSON: names of other systemd.services the
# system defines (for the unit-name assertions).
{
  libPath,
  settingsJSON,
  servicesJSON ? "[]",
}:
let
  lib = import libPath;
  inherit (lib) mkOption types;
  store = name: "/nix/store/00000000000000000000000000000000-${name}";
  pkgs = {
    writeText = name: text: {
      inherit name text;
      outPath = store name;
    };
    runCommand = name: env: buildCommand: {
      inherit name buildCommand;
      outPath = store name;
    };
    util-linux.outPath = store "util-linux";
  };
  any = default: mkOption {
    type = types.anything;
    inherit default;
  };
  standIns = {
    options = {
      assertions = any [ ];
      warnings = any [ ];
      system.checks = any [ ];
      environment.systemPackages = any [ ];
      environment.etc = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      systemd.services = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      systemd.timers = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
      systemd.units = mkOption {
        type = types.attrsOf types.anything;
        default = { };
      };
    };
  };
  others = builtins.listToAttrs (map (name: {
    inherit name;
    value = { description = "stand-in for ${name}"; };
  }) (builtins.fromJSON servicesJSON));
  evaluated = lib.evalModules {
    modules = [
      ../module.nix
      standIns
      {
        config._module.args.pkgs = pkgs;
        config.services.vaultfs = builtins.fromJSON settingsJSON // {
          package = {
            type = "derivation";
            name = "vaultfs";
            outPath = store "vaultfs";
          };
        };
        config.systemd.services = others;
      }
    ];
  };
  cfg = evaluated.config;
  service = cfg.systemd.services.vaultfs or { };
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) cfg.assertions);
  configText = (cfg.environment.etc."vaultfs/serve.toml".source or { text = null; }).text;
  execStartPre = service.serviceConfig.ExecStartPre or [ ];
  gcService = cfg.systemd.services.vaultfs-gc or null;
  gcTimer = cfg.systemd.timers.vaultfs-gc or null;
  serviceConfig = service.serviceConfig or null;
}
