/**
 * A guest for the kernel-path tests. argv: DATA PROGRESS PAUSE_EVERY PAUSE_MS. Writes the
 * file DATA to stdout 64 KiB a write; after every PAUSE_EVERY bytes (0: never) it sleeps
 * PAUSE_MS, long enough for the pipe to go back to libuv. PROGRESS holds the bytes written so
 * far. Exits when done.
 */
export const FILE_GUEST_PY = `
import os, sys, time
data, progress = open(sys.argv[1], 'rb').read(), sys.argv[2]
every, pause = int(sys.argv[3]), float(sys.argv[4]) / 1000
pf = os.open(progress, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
view, done, mark = memoryview(data), 0, 0
while done < len(data):
    done += os.write(1, view[done:done + 65536])
    os.pwrite(pf, b'%012d' % done, 0)
    if every and done - mark >= every:
        mark = done
        time.sleep(pause)
`;
