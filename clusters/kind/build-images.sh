#!/usr/bin/env bash
# Builds the images kubeadm and the node's pod network expect, without a
# registry, and saves each as an archive for `ctr images import` in the node.
# Usage: build-images.sh K8S_DIR COMPONENTS_DIR SLIM_ROOTFS. Prints the
# directory holding the archives.
source "$(dirname "$0")/lib.sh"

k8s=${1:?} comp=${2:?} slim=${3:?}
REG=registry.k8s.io
CNI_IMAGE=floxk.local/kind-cni:$K8S_VERSION
out=$CACHE/images-$(key "$k8s" "$comp" "$slim" "$KIND_DIR/images" "$K8S_VERSION" "$ETCD_IMAGE_TAG" \
  "$COREDNS_VERSION" "$PAUSE_IMAGE_TAG")

# scratch_image TAG ENTRYPOINT BINARY DEST...: an image FROM scratch holding
# static binaries; PATH set so static pods can call them by bare name.
scratch_image() {
  local tag=$1 entry=$2
  shift 2
  local dir
  dir=$(mktemp -d "$OUT/ctx.XXXX")
  mkdir -p "$dir/tmp" "$dir/etc" && chmod 1777 "$dir/tmp"
  echo 'root:x:0:0:root:/root:/sbin/nologin' >"$dir/etc/passwd"
  echo 'nobody:x:65534:65534:nobody:/:/sbin/nologin' >>"$dir/etc/passwd"
  while (($#)); do
    install -D -m 0755 "$1" "$dir/$2"
    shift 2
  done
  tar --numeric-owner --owner=0 --group=0 -C "$dir" -c . |
    docker import --change "ENV PATH=/usr/local/bin:/usr/bin:/bin" \
      --change "ENTRYPOINT [\"$entry\"]" - "$tag" >/dev/null
  rm -rf "$dir"
}

# debian_image TAG FILE DEST...: the slim Debian tree plus files, one layer
# for the tree (shared between images) and one for the files.
debian_image() {
  local tag=$1
  shift
  local base dir
  base=floxk.local/kind-slim:$(basename "$(dirname "$slim")")
  if ! docker image inspect "$base" >/dev/null 2>&1; then
    tar --numeric-owner -C "$slim" -c . | docker import - "$base" >/dev/null
  fi
  dir=$(mktemp -d "$OUT/ctx.XXXX")
  echo "FROM $base" >"$dir/Dockerfile"
  while (($#)); do
    cp "$1" "$dir/"
    echo "COPY $(basename "$1") $2" >>"$dir/Dockerfile"
    shift 2
  done
  DOCKER_BUILDKIT=0 docker build -q -t "$tag" "$dir" >/dev/null 2>"$dir/err" || { cat "$dir/err" >&2; exit 1; }
  rm -rf "$dir"
}

build() {
  local images=() b tag
  for b in kube-apiserver kube-controller-manager kube-scheduler; do
    tag=$REG/$b:$K8S_VERSION
    scratch_image "$tag" "/usr/local/bin/$b" "$k8s/$b" "usr/local/bin/$b"
    images+=("$tag")
  done
  scratch_image "$REG/etcd:$ETCD_IMAGE_TAG" /usr/local/bin/etcd "$comp/etcd" usr/local/bin/etcd
  scratch_image "$REG/coredns/coredns:$COREDNS_VERSION" /coredns "$comp/coredns" coredns
  scratch_image "$REG/pause:$PAUSE_IMAGE_TAG" /pause "$comp/pause" pause
  images+=("$REG/etcd:$ETCD_IMAGE_TAG" "$REG/coredns/coredns:$COREDNS_VERSION" "$REG/pause:$PAUSE_IMAGE_TAG")
  debian_image "$REG/kube-proxy:$K8S_VERSION" "$k8s/kube-proxy" /usr/local/bin/kube-proxy
  debian_image "$CNI_IMAGE" "$k8s/kubectl" /usr/local/bin/kubectl "$KIND_DIR/images/floxk-cni" /usr/local/bin/floxk-cni
  images+=("$REG/kube-proxy:$K8S_VERSION" "$CNI_IMAGE")

  # The names must be exactly those kubeadm asks for, or the node would pull.
  local want have
  want=$("$k8s/kubeadm" config images list --kubernetes-version "$K8S_VERSION" | sort)
  have=$(printf '%s\n' "${images[@]}" | grep -v "^$CNI_IMAGE\$" | sort)
  [[ $want == "$have" ]] || die "kubeadm expects:"$'\n'"$want"$'\n'"built:"$'\n'"$have"

  for tag in "${images[@]}"; do
    say "docker save $tag"
    docker save -o "$OUT/$(echo "$tag" | tr '/:' '__').tar" "$tag"
  done
  printf '%s\n' "${images[@]}" >"$OUT/images.txt"
}

cached "$out" build
echo "$out"
