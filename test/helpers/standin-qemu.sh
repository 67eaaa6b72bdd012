#!/bin/sh
# A stand-in for qemu-system-*: what the daemon starts in place of QEMU where a real guest
# would cost too much (100 domains). It hands its command line to the hub (one process for
# all stand-ins, test/helpers/standin-qemu.ts), which connects to the -chardev sockets as
# QEMU does; this process stays as the "QEMU" the daemon supervises (its pid, killed on quit).
if [ "$1" = "-version" ]; then
  echo "QEMU emulator version 7.2.0 (chardev stand-in)"
  exit 0
fi
printf '%s\n' "$$" "$@" | socat -u - "UNIX-CONNECT:$CHARDEV_STANDIN_HUB" || exit 1
exec sleep 2147483647
