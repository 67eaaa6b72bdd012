#!/usr/bin/env bash
# The guest kit for the real-guest tests (test/qemu/): a Linux kernel taken from Debian's
# linux-image-amd64 (downloaded with apt-get download, extracted with dpkg-deb, never
# installed) in .cache/guest/, next to busybox-static's /bin/busybox. The tests build their
# own initramfs from that busybox.
#
# Besides the kernel image, only the few modules the guest needs for a virtio-serial port:
# virtio_console, the virtio_pci transport and what they depend on (read from each module's
# own modinfo, as the package ships no modules.dep), in .cache/guest/modules-RELEASE/ with
# `load-order`, the files in insmod order (empty when the kernel has them built in).
#
# Needs apt (Debian). Idempotent: a kit already extracted for the current package is kept.
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
modules="$CACHE/modules-$release"

# The modules the guest must insmod for a virtio-serial port, in order, into $2 (from the
# tree extracted in $1); none when the kernel has them built in.
modules_for_virtio_console() {
  local tree=$1/lib/modules/$release out=$2 config=$1/boot/config-$release
  mkdir -p "$out"
  : >"$out/load-order"
  # Module name (dashes as underscores) → extracted file.
  local -A file_of=() seen=()
  local f name
  while IFS= read -r f; do
    name=$(basename "$f"); name=${name%%.ko*}; name=${name//-/_}
    file_of[$name]=$f
  done < <(find "$tree" -name '*.ko*' -type f)
  visit() {
    local m=$1 f ko deps d
    [ -z "${seen[$m]:-}" ] || return 0
    seen[$m]=1
    f=${file_of[$m]:-}
    if [ -z "$f" ]; then
      echo "guest-kit: virtio_console needs module $m, which is not among the ones extracted (add its directory to the tar patterns)" >&2
      exit 1
    fi
    ko="$out/$m.ko"
    case "$f" in
      *.ko) cp "$f" "$ko" ;;
      *.ko.xz) xz -dc "$f" >"$ko" ;;
      *) echo "guest-kit: cannot unpack $f (only .ko and .ko.xz)" >&2; exit 1 ;;
    esac
    # .modinfo is NUL-separated key=value strings; depends= names the modules it needs.
    deps=$(tr '\0' '\n' <"$ko" | sed -n 's/^depends=//p')
    deps=${deps%%$'\n'*}
    for d in ${deps//,/ }; do visit "$d"; done
    echo "$m.ko" >>"$out/load-order"
  }
  # The driver and its transport (QEMU's virtio-serial-pci is a PCI device; virtio_pci is
  # not among virtio_console's dependencies), each unless built in.
  local option module
  for option in VIRTIO_PCI:virtio_pci VIRTIO_CONSOLE:virtio_console; do
    module=${option#*:}
    case "$(sed -n "s/^CONFIG_${option%%:*}=//p" "$config")" in
      y) ;;
      m) visit "$module" ;;
      *) echo "guest-kit: $pkg has no $module (CONFIG_${option%%:*} unset)" >&2; exit 1 ;;
    esac
  done
}

if [ ! -s "$kernel" ] || [ ! -f "$modules/load-order" ]; then
  tmp=$(mktemp -d "$CACHE/download.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  # apt-get download drops privileges to _apt when it can; a private dir it can write to.
  chmod 0755 "$tmp"
  (cd "$tmp" && apt-get download "$pkg" >&2)
  deb=$(ls "$tmp"/*.deb)
  echo "guest-kit: downloaded $(basename "$deb") ($(du -k "$deb" | cut -f1) KiB)" >&2
  # Only the kernel image, its config and the virtio modules (a few hundred KiB): the rest
  # (hundreds of MiB unpacked) is not needed, as the serial console, initramfs and devtmpfs
  # are built into Debian's kernel.
  dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp" --wildcards \
    "./boot/vmlinuz-$release" "./boot/config-$release" \
    "./lib/modules/$release/kernel/drivers/virtio/*" "./lib/modules/$release/kernel/drivers/char/virtio_console.ko*"
  rm -rf "$modules.part"
  modules_for_virtio_console "$tmp" "$modules.part"
  rm -rf "$modules"
  mv "$modules.part" "$modules"
  mv "$tmp/boot/vmlinuz-$release" "$kernel.part"
  mv "$kernel.part" "$kernel"
  echo "guest-kit: modules for virtio-serial: $(if [ -s "$modules/load-order" ]; then tr '\n' ' ' <"$modules/load-order"; else echo built in; fi)" >&2
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
  echo "CHARDEV_GUEST_MODULES=$modules"
  echo "CHARDEV_GUEST_BUSYBOX=$busybox"
} | tee "$CACHE/kit.env"
