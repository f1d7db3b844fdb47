#!/usr/bin/env bash
# Assembles the node image in two stages, like kind's own base/node split:
#   base: Debian node rootfs + containerd and runc (built from their Go
#         modules by scripts/install-go-lines.sh) + crictl + this
#         directory's node/ files, imported as one layer;
#   node: base + Kubernetes binaries + every image preloaded into the node's
#         containerd, committed with kind's entrypoint and tagged
#         $IMAGE_REPO:$K8S_VERSION.
# Usage: build-node.sh K8S_DIR COMPONENTS_DIR NODE_ROOTFS IMAGES_DIR
source "$(dirname "$0")/lib.sh"

k8s=${1:?} comp=${2:?} rootfs=${3:?} images=${4:?}
TAG=$IMAGE_REPO:$K8S_VERSION
LABEL=dev.floxk.kind.inputs

# containerd and runc as upstream kind nodes carry them (containerd 2.3 LTS,
# runc 1.4), from the version-keyed cache scripts/install-go-lines.sh fills.
ctrd=$FLOXK_CACHE/containerd/$CONTAINERD_VERSION/bin
runc=$FLOXK_CACHE/runc/$RUNC_VERSION/runc
[[ -x $ctrd/containerd && -x $runc ]] ||
  die "containerd $CONTAINERD_VERSION or runc $RUNC_VERSION not built: run scripts/install-go-lines.sh"

base_key=$(key "$rootfs" "$ctrd/containerd" "$ctrd/containerd-shim-runc-v2" "$ctrd/ctr" "$runc" "$comp/crictl" "$KIND_DIR/node" "$K8S_VERSION" "$PAUSE_IMAGE_TAG")
BASE=floxk.local/kind-base:$base_key
node_key=$(key "$base_key" "$k8s" "$images" "$KIND_DIR/build-node.sh")

if [[ $(docker image inspect -f "{{ index .Config.Labels \"$LABEL\" }}" "$TAG" 2>/dev/null) == "$node_key" ]]; then
  say "$TAG is up to date ($node_key)"
  echo "$TAG"
  exit 0
fi

build_base() {
  local dir=$CACHE/base.tmp u
  rm -rf "$dir"
  say "assembling base rootfs"
  cp -a "$rootfs" "$dir"
  cp -a "$KIND_DIR/node/." "$dir/"
  # The sandbox image is the line's own pause (kubeadm's list), preloaded below.
  sed -i "s|registry.k8s.io/pause:[0-9.]*|registry.k8s.io/pause:$PAUSE_IMAGE_TAG|" "$dir/etc/containerd/config.toml"
  install -m 0755 "$ctrd/containerd" "$ctrd/containerd-shim-runc-v2" "$ctrd/ctr" "$comp/crictl" \
    "$dir/usr/local/bin/"
  # kind's layout: runc in /usr/local/sbin, alone in its directory (runc >= 1.2
  # re-executes itself through an overlay of its own directory).
  install -D -m 0755 "$runc" "$dir/usr/local/sbin/runc"
  # kind's layout: CNI plugins in /opt/cni/bin (Debian installs /usr/lib/cni).
  mkdir -p "$dir/opt/cni/bin" "$dir/etc/cni/net.d"
  for u in "$dir"/usr/lib/cni/*; do ln -sf "/usr/lib/cni/$(basename "$u")" "$dir/opt/cni/bin/"; done
  # Boot only what a node needs: fast to "Multi-User System" (kind waits
  # 30 s for it) and nothing that touches the host (binfmt, udev, ttys).
  find "$dir/etc/systemd/system" "$dir/lib/systemd/system" -path '*.wants/*' \
    -not -name 'systemd-journald*' -not -name 'dbus*' -delete
  for u in systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
    getty.target console-getty.service systemd-udevd.service systemd-udev-trigger.service \
    systemd-modules-load.service systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer \
    e2scrub_all.timer fstrim.timer systemd-logind.service; do
    ln -sf /dev/null "$dir/etc/systemd/system/$u"
  done
  mkdir -p "$dir/etc/systemd/system/multi-user.target.wants"
  ln -sf ../containerd.service "$dir/etc/systemd/system/multi-user.target.wants/containerd.service"
  ln -sf ../kubelet.service "$dir/etc/systemd/system/multi-user.target.wants/kubelet.service"
  ln -sf /lib/systemd/system/multi-user.target "$dir/etc/systemd/system/default.target"
  printf 'floxk offline kind base, Debian %s, containerd %s, runc %s, crictl %s\n' \
    "$NODE_SUITE" "$CONTAINERD_VERSION" "$RUNC_VERSION" "$CRICTL_VERSION" >"$dir/kind/base-info"
  : >"$dir/etc/machine-id"
  say "docker import $BASE"
  tar --numeric-owner -C "$dir" -c . | docker import - "$BASE-rootfs" >/dev/null
  # STOPSIGNAL is not an import/commit change: one classic Dockerfile step.
  cat >"$dir.Dockerfile" <<DOCKERFILE
FROM $BASE-rootfs
ENV container=docker
STOPSIGNAL SIGRTMIN+3
ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]
DOCKERFILE
  DOCKER_BUILDKIT=0 docker build -q -t "$BASE" -f "$dir.Dockerfile" "$KIND_DIR/node/kind" >/dev/null 2>"$dir.err" ||
    { cat "$dir.err" >&2; exit 1; }
  rm -f "$dir.err"
  docker rmi "$BASE-rootfs" >/dev/null
  rm -f "$dir.Dockerfile"
  rm -rf "$dir"
}

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  build_base
  # Base images of earlier inputs are dead weight now (kept if still in use).
  docker images --format '{{.Repository}}:{{.Tag}}' floxk.local/kind-base | grep -vx "$BASE" |
    xargs -r docker rmi >/dev/null 2>&1 || true
fi

BUILD_CONTAINER=floxk-kind-build-$$
build_node() {
  local c=$BUILD_CONTAINER tar
  say "preloading images into $TAG"
  docker run -d --name "$c" --privileged --entrypoint=sleep "$BASE" infinity >/dev/null
  trap 'docker rm -f "$BUILD_CONTAINER" >/dev/null 2>&1 || true' EXIT
  docker exec "$c" mkdir -p /kind/images
  for tar in kubeadm kubelet kubectl; do docker cp "$k8s/$tar" "$c:/usr/bin/$tar"; done
  echo "$K8S_VERSION" | docker exec -i "$c" sh -c 'cat >/kind/version'
  sed "s|CNI_IMAGE_TAG|$K8S_VERSION|" "$KIND_DIR/node/kind/manifests/default-cni.yaml" |
    docker exec -i "$c" sh -c 'cat >/kind/manifests/default-cni.yaml'
  for tar in "$images"/*.tar; do docker cp "$tar" "$c:/kind/images/"; done
  docker exec -d "$c" sh -c 'containerd >/kind/images/containerd.log 2>&1'
  docker exec "$c" sh -c 'for i in $(seq 100); do ctr version >/dev/null 2>&1 && exit 0; sleep 0.2; done; cat /kind/images/containerd.log; exit 1'
  for tar in "$images"/*.tar; do
    # --no-unpack: snapshots would land in this container's overlay upper
    # dir; the node unpacks on first use on its /var volume.
    docker exec "$c" ctr -n k8s.io images import --no-unpack --label=io.cri-containerd.pinned=pinned \
      "/kind/images/$(basename "$tar")" >/dev/null
  done
  local want have
  want=$(sort "$images/images.txt")
  have=$(docker exec "$c" ctr -n k8s.io images ls -q | grep -v '^sha256:' | sort)
  [[ $want == "$have" ]] || die "node holds:"$'\n'"$have"$'\n'"expected:"$'\n'"$want"
  docker exec "$c" sh -c 'pkill containerd; sleep 1; rm -rf /kind/images /run/containerd /tmp/*'
  local previous
  previous=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
  docker commit \
    --change 'ENTRYPOINT ["/usr/local/bin/entrypoint", "/sbin/init"]' \
    --change 'CMD []' \
    --change "LABEL $LABEL=$node_key" \
    "$c" "$TAG" >/dev/null
  docker rm -f "$c" >/dev/null
  trap - EXIT
  # The image this tag named before, unless something else still uses it.
  [[ -n $previous ]] && docker rmi "$previous" >/dev/null 2>&1 || true
}

build_node
say "built $TAG ($node_key)"
echo "$TAG"
