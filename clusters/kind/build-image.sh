#!/usr/bin/env bash
# `task kind:image`: builds, offline and cached, a node image kind accepts,
# tagged $IMAGE_REPO:$K8S_VERSION (see docs/kind-offline.md). A second run
# with unchanged inputs is a no-op. Prints the tag on stdout.
source "$(dirname "$0")/lib.sh"
start=$SECONDS

bash "$KIND_DIR/dockerd.sh" start
"$KIND_DIR/install-kind.sh" >/dev/null
# containerd and runc for the node (cached by version; a no-op when built).
bash "$KIND_DIR/../../scripts/install-go-lines.sh"
k8s=$("$KIND_DIR/build-k8s.sh")
comp=$("$KIND_DIR/build-components.sh")
node_rootfs=$("$KIND_DIR/build-rootfs.sh" node)
slim_rootfs=$("$KIND_DIR/build-rootfs.sh" slim)
images=$("$KIND_DIR/build-images.sh" "$k8s" "$comp" "$slim_rootfs")
tag=$("$KIND_DIR/build-node.sh" "$k8s" "$comp" "$node_rootfs" "$images")
say "$tag ready in $((SECONDS - start)) s (cache: $CACHE)"
echo "$tag"
