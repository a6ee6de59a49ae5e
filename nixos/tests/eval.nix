# Evaluates ../module.nix without nixpkgs (see stub.nix) and returns what tests/nixos.rs checks:
# the generated serve config, the systemd service, the build-time checks and the assertions.
#
#   NIX_REMOTE=dummy:// nix-instantiate --eval --strict --json -E 'import ./nixos/tests/eval.nix { }'
#
# settingsJSON: the `services.vaultfs` definitions as JSON (default: the two-mount sample below).
# packageDir, fileDir, utilLinux: where the package, the generated files and util-linux "are".
{
  settingsJSON ? null,
  packageDir ? "/nix/store/00000000000000000000000000000000-vaultfs",
  fileDir ? "/nix/store/00000000000000000000000000000000-files",
  utilLinux ? "/nix/store/00000000000000000000000000000000-util-linux",
}:
let
  stub = import ./stub.nix;
  pkgs = stub.pkgs { inherit fileDir utilLinux; };

  sample = {
    enable = true;
    keyFile = "/etc/vaultfs/key";
    mounts = {
      nix-tokens.source = "nix:/nix-tokens";
      alice-netrc = {
        source = "netrc:/alice";
        mountPoint = "/run/keys/alice-netrc";
      };
    };
    requiredBy = [ "container@web.service" ];
  };
  settings = if settingsJSON == null then sample else builtins.fromJSON settingsJSON;

  evaluated = stub.evalModule {
    module = import ../module.nix;
    inherit pkgs;
    defs.services.vaultfs = settings // {
      package.outPath = packageDir;
    };
  };
  out = evaluated.out;
  assertions = out.assertions or [ ];
  configFile = out.environment.etc."vaultfs/serve.toml".source or null;
in
{
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) assertions);
  assertionCount = builtins.length assertions;
  configFile =
    if configFile == null then
      null
    else
      {
        path = configFile.outPath;
        inherit (configFile) text;
      };
  checks = map (c: {
    inherit (c) name buildCommand;
    path = c.outPath;
  }) (out.system.checks or [ ]);
  service = out.systemd.services.vaultfs or null;
  systemPackages = out.environment.systemPackages or [ ];
}
