#!/usr/bin/env bash
# The guest kit for the real-guest tests (test/qemu/guest.test.ts): a Linux kernel taken from
# Debian's linux-image-amd64 (downloaded with apt-get download, extracted with dpkg-deb, never
# installed) in .cache/guest/, next to busybox-static's /bin/busybox. The tests build their
# own initramfs from that busybox.
#
# Needs apt (Debian). Idempotent: a kernel already extracted for the current package is kept.
# Prints the kit's paths as KEY=VALUE lines (also written to .cache/guest/kit.env).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="$PWD/.cache/guest"
mkdir -p "$CACHE"

# The metapackage only depends on the versioned image package, e.g. linux-image-6.1.0-28-amd64.
pkg=$(apt-cache depends linux-image-amd64 | awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
if [ -z "$pkg" ]; then
  echo "guest-kit: cannot resolve linux-image-amd64 to a versioned kernel package (apt-get update first?)" >&2
  exit 1
fi
release=${pkg#linux-image-}
kernel="$CACHE/vmlinuz-$release"

if [ ! -s "$kernel" ]; then
  tmp=$(mktemp -d "$CACHE/download.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download drops privileges to _apt when it can; a private dir it can write to.
  chmod 0755 "$tmp"
  (cd "$tmp" && apt-get download "$pkg" >&2)
  deb=$(ls "$tmp"/*.deb)
  echo "guest-kit: downloaded $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)" >&2
  # Only the kernel image: the modules (hundreds of MiB unpacked) are not needed, as the
  # serial console, initramfs and devtmpfs are built into Debian's kernel.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" "./boot/vmlinuz-$release"
  mv "$tmp/boot/vmlinuz-$release" "$kernel.part"
  mv "$kernel.part" "$kernel"
fi

busybox=/bin/busybox
# grep without -q: under pipefail, grep -q leaving early makes busybox die of SIGPIPE and
# the pipeline fail now and then although cttyhack is there.
if [ ! -x "$busybox" ] || ! "$busybox" --list | grep -x cttyhack >/dev/null; then
  echo "guest-kit: $busybox is missing (apt-get install busybox-static)" >&2
  exit 1
fi

{
  echo "CHARDEV_GUEST_KERNEL=$kernel"
  echo "CHARDEV_GUEST_KERNEL_RELEASE=$release"
  echo "CHARDEV_GUEST_BUSYBOX=$busybox"
} | tee "$CACHE/kit.env"
