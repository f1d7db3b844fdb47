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

  # The applications' code moves with the catalog's revision (app-revision, "1" unless
  # prepare() names another): a new revision changes every app<i> and pyapp<i>, nothing else.
  appRevision =
    if builtins.pathExists ./app-revision
    then builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile ./app-revision)
    else "1";
  APPS = 32;
  # app<i>: a small application on busybox sh alone.
  app = i: mkPackage {
    pname = "app${toString i}";
    version = appRevision;
    description = "Application ${toString i} on busybox";
    script = ''
      mkdir -p $out/bin
      printf '#!%s\necho "app${toString i} revision ${appRevision} on busybox"\n' \
        ${busybox}/bin/sh > $out/bin/app${toString i}
      chmod 0555 $out/bin/app${toString i}
    '';
  };
  apps = builtins.listToAttrs (builtins.genList (i: { name = "app${toString i}"; value = app i; }) APPS);

  # A runtime of real size and shape, when prepare() was given one (testkit/closures.py
  # gathers the host's python3): one store path per shared-library package, the
  # interpreter with its standard library, and PYAPPS small applications on it.
  # The runtime's sources are not in this flake: runtime.json names a directory by its NAR
  # hash (prepare() adds it to the store once), a locked input as nixpkgs is to a real
  # catalog, so evaluation finds it in the store instead of copying and hashing it again.
  hasRuntime = builtins.pathExists ./runtime.json;
  runtimeInfo = builtins.fromJSON (builtins.readFile ./runtime.json);
  runtimeSrc = builtins.fetchTree { type = "path"; inherit (runtimeInfo) path narHash; };
  runtimeLibs =
    if hasRuntime then builtins.attrNames (builtins.readDir "${runtimeSrc}/libs") else [ ];
  copyOf = pname: src: derivation {
    inherit system pname;
    version = "host";
    name = "${pname}-host";
    builder = "${busybox}/bin/sh";
    args = [ "-ec" "mkdir -p $out && cp -a ${src}/. $out/" ];
    PATH = "${busybox}/bin";
  };
  libs = builtins.listToAttrs (map (n: { name = n; value = copyOf "rt-${n}" "${runtimeSrc}/libs/${n}"; }) runtimeLibs);
  pyVersion = builtins.replaceStrings [ "\n" ] [ "" ] (builtins.readFile "${runtimeSrc}/python-version");
  libPath = builtins.concatStringsSep ":" (map (n: "${libs.${n}}/lib") runtimeLibs);
  python3 = mkPackage {
    pname = "python3";
    version = pyVersion;
    description = "The host's python3 with its standard library and shared libraries";
    script = ''
      mkdir -p $out/bin
      cp -a ${runtimeSrc}/python/. $out/
      chmod u+w $out/bin
      printf '#!%s\nPYTHONHOME=%s exec %s --library-path %s %s "$@"\n' \
        ${busybox}/bin/sh $out ${libs.glibc}/lib/ld-linux-x86-64.so.2 ${libPath} \
        $out/bin/python${pyVersion} > $out/bin/python3
      chmod 0555 $out/bin/python3
    '';
  };
  pyapp = i: mkPackage {
    pname = "pyapp${toString i}";
    version = appRevision;
    description = "Application ${toString i} on the python3 runtime";
    script = ''
      mkdir -p $out/bin $out/share/pyapp
      printf 'import sys\nprint("pyapp${toString i} revision ${appRevision} on python", sys.version.split()[0])\n' \
        > $out/share/pyapp/app.py
      printf '#!%s\nexec %s %s "$@"\n' ${busybox}/bin/sh ${python3}/bin/python3 \
        $out/share/pyapp/app.py > $out/bin/pyapp${toString i}
      chmod 0555 $out/bin/pyapp${toString i}
    '';
  };
  runtime =
    if hasRuntime then
      { inherit python3; } // builtins.listToAttrs (builtins.genList (i: { name = "pyapp${toString i}"; value = pyapp i; }) APPS)
    else { };
in
{
  inherit busybox hello greeting web;
} // apps // runtime
