{
  # floxk's test catalog: a few tiny packages built with a static busybox as
  # the only tool, so the flake has no inputs, builds offline, and its outputs
  # run on an empty root filesystem.
  #
  # The busybox binary is not in git: `e2e.catalog.prepare(dest)` copies this
  # directory plus the host's static busybox (Debian busybox-static, as
  # static/busybox) into `dest`, and `dest` is then used as a `path:` flake.
  # Pure evaluation forbids absolute host paths, but a file inside the
  # flake's own source is fine, and `${./static}` puts it into the store by
  # content. (A directory, because busybox picks its applet from the basename
  # of argv[0], which must stay "busybox", not "<hash>-busybox".)
  description = "floxk test catalog (busybox-built packages, no inputs)";

  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: builtins.listToAttrs (map (system: { name = system; value = f system; }) systems);
    in
    {
      legacyPackages = forAllSystems (system: import ./packages.nix {
        inherit system;
        busyboxBinary = "${./static}/busybox";
      });
      packages = self.legacyPackages;
    };
}
