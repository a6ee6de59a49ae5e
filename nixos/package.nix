# vaultfs built from this source tree:
#   services.vaultfs.package = pkgs.callPackage /path/to/vaultfs/nixos/package.nix { };
# (This is also the module's default when pkgs has no `vaultfs`.)
{ lib, rustPlatform }:

rustPlatform.buildRustPackage {
  pname = "vaultfs";
  version = "0.1.0";

  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = path: type: baseNameOf path != "target";
  };
  cargoLock.lockFile = ../Cargo.lock;

  # The tests mount FUSE filesystems as root and drive nix, systemd-analyze and network clients,
  # none of which the build sandbox allows. .ci/run runs them; nixos/tests/vm.nix tests the module.
  doCheck = false;

  meta = {
    description = "Mount encrypted secret vaults where programs expect plain files";
    license = with lib.licenses; [ mit asl20 ];
    mainProgram = "vaultfs";
    platforms = lib.platforms.linux;
  };
}
