/**
 * The far ends of every measurement, identical for chardev and for socat: small Python
 * programs (stdlib only) run as their own processes, so neither relay shares a CPU or an
 * event loop with the code that measures it. Python, not Node, because a `recv_into` loop
 * into one preallocated buffer costs far less CPU per byte than a Node stream reader — on
 * a 2-core machine the reader's cost is paid by whichever relay is being measured.
 *
 * Each prints one JSON line on stdout at the end; errors go to stderr, exit status 1.
 */

/**
 * The guest: a fixed pseudo-random stream, as fast as it can write it (or at a fixed rate
 * when one is given: the guest's own pace, never the relay's). Every side of every
 * measurement runs this same program, so chardev, socat, `cat` and bare Node all move the
 * same bytes.
 *
 *   guest.py write BYTES RATE AFTER   BYTES on stdout; RATE bytes/s at most (0: unthrottled);
 *                                     AFTER `hold` (stay silent with stdout open, so no
 *                                     side races an EOF) or `exit`
 *   guest.py sha256 BYTES             print the stream's SHA-256 (hex) without writing it
 *   guest.py send BYTES KIND ADDR     the input figure's client: connect to a tcp port or unix
 *                                     socket (retrying) and send BYTES of the stream as fast
 *                                     as the socket takes them, then hold the connection open
 *   guest.py read BYTES OUT           the input figure's guest: read BYTES from stdin into one
 *                                     buffer, then write {"bytes", "sha256", "first", "last"}
 *                                     (perf_counter_ns of the first and last byte) to OUT
 *                                     (atomically, by rename), hashed after the clock stopped;
 *                                     then read on until EOF
 *
 * The stream: 64 KiB blocks cut at pseudo-random offsets (an LCG) out of 1 MiB of seeded
 * random bytes, the last block short. Consecutive blocks differ, so a lost, repeated or
 * reordered block changes the hash; writing a memoryview slice costs no copy in Python,
 * so the guest moves ~1.7 GB/s into a pipe here (dd from /dev/zero: ~2.3 GB/s). The hash
 * is computed from the generator, not from anything a relay delivered: it is the
 * reference the readers' hashes are compared with.
 */
export const GUEST_PY = String.raw`
import hashlib, os, random, sys, time
mode, n = sys.argv[1], int(sys.argv[2])
B, P = 65536, 1 << 20
base = random.Random(20261126).randbytes(P)
mv = memoryview(base + base[:B])
def blocks():
    left, x = n, 0x9E3779B9
    while left > 0:
        x = (x * 1103515245 + 12345) & 0x7fffffff
        off = x % P
        k = B if left >= B else left
        yield mv[off:off + k]
        left -= k
if mode == 'sha256':
    h = hashlib.sha256()
    for blk in blocks():
        h.update(blk)
    print(h.hexdigest(), flush=True)
    sys.exit(0)
if mode == 'send':
    import socket
    kind, addr = sys.argv[3], sys.argv[4]
    fam = socket.AF_INET if kind == 'tcp' else socket.AF_UNIX
    target = ('127.0.0.1', int(addr)) if kind == 'tcp' else addr
    start = time.monotonic()
    while True:
        s = socket.socket(fam, socket.SOCK_STREAM)
        try:
            s.connect(target)
            break
        except OSError as e:
            s.close()
            if time.monotonic() - start > 10:
                sys.stderr.write('guest.py send: cannot connect to %s %s: %s\n' % (kind, addr, e)); sys.exit(1)
            time.sleep(0.01)
    for blk in blocks():
        s.sendall(blk)
    time.sleep(600)
    sys.exit(0)
if mode == 'read':
    import json
    out = sys.argv[3]
    whole = memoryview(bytearray(n))
    f = os.fdopen(0, 'rb', buffering=0)
    got = first = last = 0
    while got < n:
        k = f.readinto(whole[got:got + 262144])
        if not k:
            break
        now = time.perf_counter_ns()
        if first == 0:
            first = now
        got += k
        last = now
    res = {'bytes': got, 'sha256': hashlib.sha256(whole[:got]).hexdigest(), 'first': first, 'last': last}
    with open(out + '.tmp', 'w') as o:
        o.write(json.dumps(res))
    os.rename(out + '.tmp', out)
    while f.readinto(whole[:262144]):
        pass
    sys.exit(0)
rate, after = float(sys.argv[3]), sys.argv[4]
due = time.monotonic()
for blk in blocks():
    if rate > 0:
        # At most RATE: time spent blocked in write (nobody reading yet, or a relay holding
        # the guest) is not made up for with a burst afterwards.
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        else:
            due = now
        due += len(blk) / rate
    w = 0
    while w < len(blk):
        w += os.write(1, blk[w:])
if after == 'hold':
    time.sleep(600)
`;

/**
 * Bulk reader. argv: KIND (tcp|unix|pty) ADDRESS (port, socket path, pty slave or link)
 * BYTES (per live connection) LIVE STALLED IDLE_S DEADLINE_S [HASH [MARK]].
 *
 * Connects LIVE reading connections, then STALLED ones that never read (SO_RCVBUF 4 KiB,
 * set before connect, so they stall at once), retrying while the listener is not there
 * yet (socat opens its addresses one after the other). Every live connection reads until
 * it has BYTES, sees EOF, or nothing arrives on any live connection for IDLE_S after the
 * first byte (a viewer that missed output never gets all BYTES). The clock starts at the
 * first byte on any connection: chardev and socat both have their guest started and
 * blocked on a full pipe before the reader connects, so neither pays a start-up cost here.
 * Every live connection's bytes are hashed (SHA-256, OpenSSL's through hashlib: ~0.8 s of
 * CPU per GiB here) and the driver compares count and hash with the guest's own
 * (GUEST_PY sha256). A single connection (or the pty) receives into one buffer of BYTES and
 * is hashed after its last byte, outside the clock (memory: BYTES, ≤ 1 GiB); bytes already
 * waiting beyond BYTES then are counted as extra. Several connections (fan-out) hash as they
 * read; HASH `first` hashes connection 0 only (the fan-out's writer; its viewers, which may
 * miss output, are only counted: one process hashing 100 streams would measure hashlib,
 * not the relay); the others' sha256 is then "".
 *
 * With several connections (fan-out), chardev tells each viewer on attach, inline in the raw
 * stream, who the writer is (`\r\n[chardev: read-only: …]\r\n`, src/core/hub.ts): such
 * notices at the very start of a connection, before any guest byte, are counted apart
 * (noticeBytes) and not hashed. A notice anywhere else (a viewer told it missed output) stays
 * in the stream and so fails the hash, as the missed output does.
 *
 * Output: {"bytes": [...], "sha256": [...], "noticeBytes": [...], "first": NS, "last": [...],
 * "mark": [...], "connectSeconds": S}: per live connection; times in perf_counter_ns; `mark`:
 * when the connection had MARK bytes (argv 9, optional; 0 when not given or not reached), so a
 * rate can leave out a head that waited in a pipe before the clients came; connectSeconds from
 * start until every connection was made.
 */
export const READER_PY = String.raw`
import hashlib, json, os, selectors, socket, sys, time
kind, addr = sys.argv[1], sys.argv[2]
want, live, stalled = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
idle_s, deadline_s = float(sys.argv[6]), float(sys.argv[7])
hash_all = (sys.argv[8] if len(sys.argv) > 8 else 'all') == 'all'
mark_at = int(sys.argv[9]) if len(sys.argv) > 9 else 0
start = time.monotonic()
def fail(msg):
    sys.stderr.write(msg + '\n'); sys.exit(1)
def wait_for(make):
    while True:
        try:
            return make()
        except (FileNotFoundError, ConnectionRefusedError, OSError) as e:
            if time.monotonic() - start > 10:
                fail('reader: cannot connect to %s %s: %s' % (kind, addr, e))
            time.sleep(0.01)
def connect(rcvbuf=None):
    fam = socket.AF_INET if kind == 'tcp' else socket.AF_UNIX
    target = ('127.0.0.1', int(addr)) if kind == 'tcp' else addr
    def make():
        s = socket.socket(fam, socket.SOCK_STREAM)
        if rcvbuf is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        try:
            s.connect(target)
        except Exception:
            s.close(); raise
        return s
    return wait_for(make)
buf = bytearray(256 * 1024)
view = memoryview(buf)
got = [0] * live
last = [0] * live
mark = [0] * live
class NoHash:
    def update(self, _):
        pass
    def hexdigest(self):
        return ''
sha = [hashlib.sha256() if hash_all or i == 0 else NoHash() for i in range(live)]
notice = [0] * live
MARK, MARK_END = b'\r\n[chardev: ', b']\r\n'
head = [bytearray() for _ in range(live)]
def take_head(i, data):
    # The start of connection i: leading chardev notices are counted, the rest is guest output.
    h = head[i]
    h += data
    while True:
        if len(h) < len(MARK) and MARK.startswith(h):
            return None
        if not h.startswith(MARK):
            break
        end = h.find(MARK_END, len(MARK))
        if end < 0:
            if len(h) < 4096:
                return None
            break
        notice[i] += end + len(MARK_END)
        del h[:end + len(MARK_END)]
    head[i] = None
    return h
first = 0
def keep_whole():
    # One connection: the stream lands in a buffer of its own size (allocated, and so touched,
    # before connecting) and is hashed after the clock has stopped, so the hash costs neither
    # relay any throughput (hashing as it reads took socat from ~2.2 to ~1.2 GB/s here).
    whole = memoryview(bytearray(want))
    return whole
def finish_whole(whole, more):
    # Hash what came; then whatever is already waiting beyond it counts as extra bytes.
    sha[0].update(whole[:got[0]])
    if got[0] == want:
        got[0] += more()
if kind == 'pty':
    import select
    whole = keep_whole()
    fd = wait_for(lambda: os.open(addr, os.O_RDONLY | os.O_NOCTTY))
    f = os.fdopen(fd, 'rb', buffering=0)
    conn_s = time.monotonic() - start
    while got[0] < want:
        if not select.select([fd], [], [], idle_s if first else deadline_s)[0]:
            break
        try:
            n = f.readinto(whole[got[0]:got[0] + 262144])
        except OSError:
            break  # EIO: the master went away
        if not n:
            break
        now = time.perf_counter_ns()
        if first == 0:
            first = now
        got[0] += n
        last[0] = now
        if mark_at and not mark[0] and got[0] >= mark_at:
            mark[0] = now
    def more():
        extra = 0
        while select.select([fd], [], [], 0.05)[0]:
            try:
                n = f.readinto(view)
            except OSError:
                break
            if not n:
                break
            extra += n
        return extra
    finish_whole(whole, more)
elif live == 1 and stalled == 0:
    whole = keep_whole()
    s = connect()
    conn_s = time.monotonic() - start
    s.settimeout(deadline_s)
    while got[0] < want:
        try:
            n = s.recv_into(whole[got[0]:], min(262144, want - got[0]))
        except socket.timeout:
            break
        if not n:
            break
        now = time.perf_counter_ns()
        if first == 0:
            first = now
            s.settimeout(idle_s)
        got[0] += n
        last[0] = now
        if mark_at and not mark[0] and got[0] >= mark_at:
            mark[0] = now
    def more():
        extra = 0
        s.settimeout(0.05)
        try:
            while True:
                n = s.recv_into(view)
                if not n:
                    break
                extra += n
        except (socket.timeout, OSError):
            pass
        return extra
    finish_whole(whole, more)
else:
    # chardev's servers listen with a backlog of 1, as QEMU's do: a burst of connects
    # overflows it and each dropped SYN costs a 1 s+ retransmit. Spaced, they go in at once.
    socks, keep = [], []
    for _ in range(live):
        socks.append(connect()); time.sleep(0.003)
    for _ in range(stalled):
        keep.append(connect(4096)); time.sleep(0.003)
    conn_s = time.monotonic() - start
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    pending = live
    t_end = time.monotonic() + deadline_s
    while pending > 0:
        timeout = idle_s if first else max(0.0, t_end - time.monotonic())
        events = sel.select(timeout)
        if not events:
            break
        for key, _ in events:
            i = key.data
            try:
                n = key.fileobj.recv_into(view)
            except BlockingIOError:
                continue
            except OSError:
                n = 0
            now = time.perf_counter_ns()
            if not n:
                sel.unregister(key.fileobj); pending -= 1
                continue
            data = view[:n]
            if head[i] is not None:
                data = take_head(i, data)
                if not data:
                    continue
            # The clock starts at the first guest byte, not at a notice sent on attach.
            if first == 0:
                first = now
            sha[i].update(data)
            got[i] += len(data)
            last[i] = now
            if mark_at and not mark[i] and got[i] >= mark_at:
                mark[i] = now
            if got[i] >= want:
                sel.unregister(key.fileobj); pending -= 1
print(json.dumps({'bytes': got, 'sha256': [h.hexdigest() for h in sha], 'noticeBytes': notice, 'first': first, 'last': last, 'mark': mark, 'connectSeconds': conn_s}), flush=True)
`;

/**
 * 1-byte ping-pong. argv: PORT WARMUP COUNT. TCP_NODELAY on; connects (retrying), sends
 * one byte, waits for it to come back, COUNT times after WARMUP unmeasured trips.
 * Output: {"p50": µs, "p99": µs, "mean": µs, "n": COUNT}.
 */
export const PINGPONG_PY = String.raw`
import json, socket, sys, time
port, warm, count = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
start = time.monotonic()
while True:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.connect(('127.0.0.1', port)); break
    except OSError as e:
        s.close()
        if time.monotonic() - start > 10:
            sys.stderr.write('pingpong: cannot connect to %d: %s\n' % (port, e)); sys.exit(1)
        time.sleep(0.01)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.settimeout(10)
out = []
x = b'x'
pc = time.perf_counter_ns
for i in range(warm + count):
    t = pc()
    s.send(x)
    if not s.recv(1):
        sys.stderr.write('pingpong: the echo closed after %d trips\n' % i); sys.exit(1)
    if i >= warm:
        out.append(pc() - t)
out.sort()
def q(p):
    return out[min(len(out) - 1, int(p * len(out)))] / 1000
print(json.dumps({'p50': q(0.50), 'p99': q(0.99), 'mean': sum(out) / len(out) / 1000, 'n': len(out)}), flush=True)
`;

/**
 * The kernel-only floor: a relay that moves the bytes with splice(2) and never copies them
 * into user space (Python's `os.splice`, stdlib only), so it shows what this machine's
 * kernel path can do for the same work, in the same run, with no runtime of ours in the way.
 * Python still pays its interpreter per call: scripts/bench/c/relay.c does the `out`, `in`,
 * `pty` and `fanout-tee` modes in C with the same argv, a lossless `fanout` (one read, one
 * send per live client; in Python too until the C one made it pointless), the `<log>` floor as
 * `log-tee` (tee(2) + splice(2)) and as `log-copy` (this one's `log`: read, write, send), and
 * chardev's fan-out rules by copy as `fanout-ring` —
 * see compiled.ts.
 * It starts the guest itself, as socat's `EXEC:` does, through a pipe sized like chardev's
 * guest pipe (1 MiB, F_SETPIPE_SZ).
 *
 *   relay.py out tcp|unix ADDR -- GUEST...   guest stdout → the first client (port or path)
 *   relay.py in  tcp|unix ADDR -- GUEST...   the first client → guest stdin (input figure)
 *   relay.py log tcp|unix ADDR LOG -- GUEST...
 *                                            the floor of the `<log>` row: each chunk read from
 *                                            the guest into one buffer is written to LOG, then
 *                                            sent to the first client (Python has no tee(2))
 *   relay.py file - PATH -- GUEST...         guest stdout → PATH; exits at the guest's EOF
 *   relay.py file-copy - PATH -- GUEST...    the same by read(2) into one 1 MiB buffer and
 *                                            write(2) to PATH (what chardev's thread does for a
 *                                            file), instead of splice
 *   relay.py pty - LINK -- GUEST...          the pty floor: a new pty (raw, no echo), its slave
 *                                            linked at LINK as socat's `PTY,link=` does; the
 *                                            guest's stdout read into one buffer and written
 *                                            to the master (splice cannot write into a pty):
 *                                            what a minimal user-space relay does
 *   relay.py fanout-tee tcp PORT LIVE STALLED -- GUEST...
 *                                            the kernel-only fan-out floor, with chardev's rules:
 *                                            LIVE + STALLED clients (in the order they connect,
 *                                            as the reader makes them);
 *                                            tee(2) the guest's pipe into a 256 KiB pipe per
 *                                            client (the first, the writer, is lossless: what its
 *                                            pipe takes is what leaves the guest's, so it holds
 *                                            the guest; the others take what fits and miss the
 *                                            rest), drop those bytes from the guest's pipe by
 *                                            splicing them to /dev/null, splice each pipe to its
 *                                            socket; no byte in user space (tee through ctypes on
 *                                            libc: Python has no os.tee). It writes no notices
 *                                            (chardev tells a viewer inline what it missed)
 *
 * Errors go to stderr, exit status 1.
 */
export const RELAY_PY = String.raw`
import fcntl, os, select, socket, subprocess, sys
PIPE_BYTES = 1 << 20
STEP = 1 << 20
direction, kind, addr = sys.argv[1], sys.argv[2], sys.argv[3]
guest = sys.argv[sys.argv.index('--') + 1:]
def sized(fd):
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError as e:
        sys.stderr.write('relay.py: F_SETPIPE_SZ: %s\n' % e)
def guest_out():
    # The guest, its stdout a pipe sized like chardev's: the process and the pipe's read end.
    p = subprocess.Popen(guest, stdout=subprocess.PIPE)
    sized(p.stdout.fileno())
    return p, p.stdout.fileno()
def accept(n, backlog):
    # Listen on the tcp port or unix path, take n clients in the order they connect, stop listening.
    if kind == 'tcp':
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(('127.0.0.1', int(addr)))
    else:
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(addr)
    srv.listen(backlog)
    conns = [srv.accept()[0] for _ in range(n)]
    srv.close()
    return conns
def copy(src, dst):
    # src to dst through one STEP-sized buffer, each read written out whole, until src ends.
    buf = bytearray(STEP)
    view = memoryview(buf)
    while True:
        n = os.readv(src, [buf])
        if n == 0:
            return
        w = 0
        while w < n:
            w += os.write(dst, view[w:n])
def pump(src, dst):
    # Non-blocking on our ends only (a pipe's two ends are separate open files, so the guest
    # keeps its blocking end): a blocking splice from a TCP socket waits to fill the whole
    # request, holding back bytes that are already there. On EAGAIN, wait until the
    # destination has room and the source has bytes, one after the other, so nothing spins.
    os.set_blocking(src, False)
    os.set_blocking(dst, False)
    flags = os.SPLICE_F_NONBLOCK | os.SPLICE_F_MOVE
    while True:
        try:
            if os.splice(src, dst, STEP, flags=flags) == 0:
                return
        except BlockingIOError:
            select.select([], [dst], [])
            select.select([src], [], [])
if direction == 'file':
    p, src = guest_out()
    fd = os.open(addr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    pump(src, fd)
    os.close(fd)
    p.wait()
    sys.exit(0)
if direction == 'file-copy':
    p, src = guest_out()
    fd = os.open(addr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    copy(src, fd)
    os.close(fd)
    p.wait()
    sys.exit(0)
if direction == 'pty':
    import pty, tty
    master, slave = pty.openpty()
    tty.setraw(slave)
    os.symlink(os.ttyname(slave), addr)
    p, src = guest_out()
    copy(src, master)
    sys.exit(0)
if direction == 'fanout-tee':
    import ctypes, termios
    libc = ctypes.CDLL(None, use_errno=True)
    tee = libc.tee
    tee.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_size_t, ctypes.c_uint]
    tee.restype = ctypes.c_ssize_t
    # chardev's own sizes (src/core/chardev.ts): how far the writer and each viewer may be behind.
    CLIENT_PIPE = 256 * 1024
    CHUNK = 16 << 20
    NB = os.SPLICE_F_NONBLOCK
    live, stalled = int(sys.argv[4]), int(sys.argv[5])
    p, src = guest_out()
    conns = accept(live + stalled, 128)
    os.set_blocking(src, False)
    null = os.open('/dev/null', os.O_WRONLY)
    socks, reads, writes, held = [], [], [], [0] * len(conns)
    for c in conns:
        c.setblocking(False)
        r, w = os.pipe2(os.O_NONBLOCK)
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, CLIENT_PIPE)
        socks.append(c.fileno()); reads.append(r); writes.append(w)
    def flush():
        # Each pipe into its socket as far as the socket takes it; a failed socket is an error.
        for i in range(len(socks)):
            while held[i] > 0:
                try:
                    n = os.splice(reads[i], socks[i], CHUNK, flags=NB | os.SPLICE_F_MOVE)
                except BlockingIOError:
                    break
                held[i] -= n
    def waiting():
        n = bytearray(4)
        fcntl.ioctl(src, termios.FIONREAD, n)
        return int.from_bytes(n, sys.byteorder)
    while True:
        k = tee(src, writes[0], CHUNK, NB)
        if k < 0 and ctypes.get_errno() not in (11, 4):
            raise OSError(ctypes.get_errno(), 'tee')
        if k == 0:
            break
        if k > 0:
            held[0] += k
            for i in range(1, len(conns)):
                t = tee(src, writes[i], k, NB)
                if t > 0:
                    held[i] += t
            left = k
            while left > 0:
                left -= os.splice(src, null, left, flags=os.SPLICE_F_MOVE)
        flush()
        if k > 0:
            continue
        # Nothing taken: the guest's pipe is empty, or the writer's pipe is full (the guest
        # waits for the writer). Sleep until the guest writes or a socket with bytes to go has room.
        poller = select.poll()
        if held[0] == 0 or waiting() == 0:
            poller.register(src, select.POLLIN)
        for i in range(len(socks)):
            if held[i] > 0:
                poller.register(socks[i], select.POLLOUT)
        poller.poll()
    sys.exit(0)
if direction in ('out', 'log'):
    p, src = guest_out()
else:
    p = subprocess.Popen(guest, stdin=subprocess.PIPE)
    sized(p.stdin.fileno())
conn = accept(1, 1)[0]
if direction == 'out':
    pump(src, conn.fileno())
elif direction == 'log':
    log = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
    buf = bytearray(STEP)
    view = memoryview(buf)
    while True:
        n = os.readv(src, [buf])
        if n == 0:
            break
        w = 0
        while w < n:
            w += os.write(log, view[w:n])
        conn.sendall(view[:n])
else:
    pump(conn.fileno(), p.stdin.fileno())
    p.stdin.close()
    p.wait()
`;
