#!/usr/bin/env bash
# Debian rootfs trees (mmdebstrap, minbase). Usage: build-rootfs.sh PROFILE
#   node: what a kind node runs (systemd, iptables/nftables, conntrack, mount,
#         kmod, CNI plugins ...; containerd and runc come from their Go modules)
#   slim: base of the kube-proxy and CNI images (iptables, nftables, iproute2)
# Prints the directory holding the tree.
source "$(dirname "$0")/lib.sh"

case ${1:?profile: node or slim} in
  node)
    PACKAGES=(
      systemd systemd-sysv dbus iproute2 iptables nftables conntrack ethtool ebtables socat
      util-linux mount kmod procps libseccomp2 ca-certificates bash pigz
      containernetworking-plugins
    )
    ;;
  slim) PACKAGES=(iptables nftables conntrack iproute2 ipset kmod ca-certificates) ;;
  *) die "unknown rootfs profile $1" ;;
esac
out=$CACHE/rootfs-$1-$NODE_SUITE-$(key "$NODE_SUITE" "${PACKAGES[*]}")

build() {
  local pkgs
  pkgs=$(IFS=,; echo "${PACKAGES[*]}")
  say "mmdebstrap Debian $NODE_SUITE for $1 ($(debian_mirror)), ${#PACKAGES[@]} packages"
  nice -n 19 mmdebstrap --quiet --mode=root --variant=minbase --include="$pkgs" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    "$NODE_SUITE" "$OUT/rootfs" "$(debian_mirror)"
}

cached "$out" build "$1"
echo "$out/rootfs"
