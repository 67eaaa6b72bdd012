#!/usr/bin/env bash
# The musl kit for test/platform/musl.test.ts: a JavaScript runtime linked against musl, to
# run chardev's dist/ in a process whose C library is musl — on a Debian machine, where Node
# is glibc's and no Alpine image can be fetched (only npm and Debian's packages are).
#
#   - the runtime: Bun's musl build, from npm (@oven/bun-linux-x64-musl, a registry package,
#     unpacked with tar, never installed); its interpreter is /lib/ld-musl-x86_64.so.1, from
#     Debian's `musl` package;
#   - Bun links libstdc++ and libgcc_s, which Debian has only as glibc builds: those are
#     used, with `ld-linux-x86-64.so.2` pointing at musl's loader and a 7-symbol shim
#     (built here with musl-gcc from `musl-tools`) for the glibc-only symbols they reference
#     (__libc_single_threaded, arc4random, __strftime_l, __cxa_thread_atexit_impl,
#     _dl_find_object, __cpu_model, __cpu_indicator_init). The C++ runtime is Bun's concern
#     only: chardev's native calls go to musl (koffi's musl build, dlopen of musl's libc);
#   - patchelf (Debian) adds the shim and the library directory to the binary itself, so the
#     environment stays clean for the glibc programs chardev runs as guests.
#
# x86-64 only. Idempotent. Prints CHARDEV_MUSL_RUNTIME=PATH (also in .cache/musl/kit.env).
set -euo pipefail
cd "$(dirname "$0")/.."
KIT="$PWD/.cache/musl"
BUN_VERSION=1.4.5

[ "$(uname -m)" = x86_64 ] || { echo "musl-kit: x86-64 only" >&2; exit 1; }
[ -e /lib/ld-musl-x86_64.so.1 ] || { echo "musl-kit: /lib/ld-musl-x86_64.so.1 is missing (apt-get install musl)" >&2; exit 1; }
command -v musl-gcc >/dev/null || { echo "musl-kit: musl-gcc is missing (apt-get install musl-tools)" >&2; exit 1; }
command -v patchelf >/dev/null || { echo "musl-kit: patchelf is missing (apt-get install patchelf)" >&2; exit 1; }
# awk reads to the end (no `exit`): an early exit would SIGPIPE ldconfig under pipefail.
libstdcxx=$(/sbin/ldconfig -p | awk '/libstdc\+\+\.so\.6 .*x86-64/ && !f { print $NF; f = 1 }')
libgcc=$(/sbin/ldconfig -p | awk '/libgcc_s\.so\.1 .*x86-64/ && !f { print $NF; f = 1 }')
[ -n "$libstdcxx" ] && [ -n "$libgcc" ] || { echo "musl-kit: libstdc++.so.6 or libgcc_s.so.1 not found" >&2; exit 1; }

runtime="$KIT/bun-$BUN_VERSION"
if [ ! -x "$runtime" ]; then
  mkdir -p "$KIT/lib"
  tmp=$(mktemp -d "$KIT/download.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "@oven/bun-linux-x64-musl@$BUN_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/bin/bun
  cat > "$tmp/shim.c" <<'C'
#include <stddef.h>
#include <time.h>
#include <locale.h>
#include <sys/random.h>
char __libc_single_threaded = 0;
unsigned int arc4random(void) { unsigned int v = 0; getrandom(&v, sizeof v, 0); return v; }
size_t __strftime_l(char *s, size_t n, const char *f, const struct tm *tm, locale_t l) { return strftime_l(s, n, f, tm, l); }
/* thread_local destructors are not run (Bun's threads live as long as the process). */
int __cxa_thread_atexit_impl(void (*fn)(void *), void *obj, void *dso) { (void)fn; (void)obj; (void)dso; return 0; }
/* "not found": libgcc's unwinder then walks the loaded objects itself (dl_iterate_phdr). */
int _dl_find_object(void *pc, void *result) { (void)pc; (void)result; return -1; }
struct __processor_model { unsigned int vendor, type, subtype; unsigned int features[1]; } __cpu_model;
int __cpu_indicator_init(void) { return 0; }
C
  musl-gcc -shared -fPIC -O2 -o "$KIT/lib/libgnushim.so" "$tmp/shim.c"
  ln -sf "$libstdcxx" "$KIT/lib/libstdc++.so.6"
  ln -sf "$libgcc" "$KIT/lib/libgcc_s.so.1"
  ln -sf /lib/ld-musl-x86_64.so.1 "$KIT/lib/ld-linux-x86-64.so.2"
  cp "$tmp/package/bin/bun" "$tmp/bun"
  patchelf --add-needed libgnushim.so "$tmp/bun"
  patchelf --set-rpath "$KIT/lib" "$tmp/bun"
  "$tmp/bun" --version >/dev/null
  mv "$tmp/bun" "$runtime"
  echo "musl-kit: $runtime ($(du -k "$runtime" | cut -f1) KiB)" >&2
fi
echo "CHARDEV_MUSL_RUNTIME=$runtime" | tee "$KIT/kit.env"
