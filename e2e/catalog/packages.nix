# The catalog's packages. Every builder is busybox's sh; nothing else exists.
{ system, busyboxBinary }:
let
  mkPackage = { pname, version, description, script, extraPath ? [ ] }:
    let
      drv = derivation {
        inherit system pname version;
        name = "${pname}-${version}";
        builder = "${busybox}/bin/sh";
        args = [ "-ec" script ];
        PATH = "${busybox}/bin";
      };
    in
    drv // { meta = { inherit description; license = { spdxId = "MIT"; }; }; };

  # busybox itself: the binary plus one symlink per applet (sh, httpd, ...).
  busybox =
    let
      drv = derivation {
        inherit system;
        pname = "busybox";
        version = "static";
        name = "busybox-static";
        builder = "${busyboxBinary}";
        args = [
          "sh"
          "-ec"
          ''
            bb=${busyboxBinary}
            $bb mkdir -p $out/bin
            $bb cp $bb $out/bin/busybox
            $bb chmod 0555 $out/bin/busybox
            for applet in $($bb --list); do
              [ "$applet" = busybox ] || $bb ln -s busybox $out/bin/$applet
            done
          ''
        ];
      };
    in
    drv // { meta = { description = "Static busybox (from the host's busybox-static)"; license = { spdxId = "GPL-2.0-only"; }; }; };

  # A script whose interpreter is the store's busybox sh: its closure
  # references busybox, so realizing hello must bring busybox along.
  hello = mkPackage {
    pname = "hello";
    version = "1.0";
    description = "Prints a greeting (floxk test package)";
    script = ''
      mkdir -p $out/bin $out/share/doc/hello
      printf '#!%s\necho "hello from floxk"\n' ${busybox}/bin/sh > $out/bin/hello
      chmod 0555 $out/bin/hello
      echo "hello, the floxk test package" > $out/share/doc/hello/README
    '';
  };

  # Clashes with hello on bin/hello: used to test priorities.
  greeting = mkPackage {
    pname = "greeting";
    version = "2.0";
    description = "Another greeting, clashing with hello on bin/hello";
    script = ''
      mkdir -p $out/bin
      printf '#!%s\necho "greetings from greeting"\n' ${busybox}/bin/sh > $out/bin/hello
      printf '#!%s\necho "greet: $*"\n' ${busybox}/bin/sh > $out/bin/greet
      chmod 0555 $out/bin/hello $out/bin/greet
    '';
  };

  # A tiny web server: `web-serve` runs busybox httpd in the foreground on
  # $PORT (default 8080) serving share/web.
  web = mkPackage {
    pname = "web";
    version = "1.0";
    description = "busybox httpd serving a static page";
    script = ''
      mkdir -p $out/bin $out/share/web
      echo "<h1>hello from floxk web</h1>" > $out/share/web/index.html
      printf '#!%s\nexec %s httpd -f -v -p "''${PORT:-8080}" -h "''${WEB_ROOT:-%s}"\n' \
        ${busybox}/bin/sh ${busybox}/bin/busybox $out/share/web > $out/bin/web-serve
      chmod 0555 $out/bin/web-serve
    '';
  };
in
{
  inherit busybox hello greeting web;
}
