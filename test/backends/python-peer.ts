/**
 * Python's own socket module as the far end of a network device: a small line-driven
 * script (one command in on stdin, one answer out on stdout) so the tests decide the
 * timing while the bytes on the wire come from code nobody here wrote.
 */
import { execFileSync, spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';

/** The interpreter itself, not a version-manager shim in front of it (a shim costs ~300 ms a start). */
const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim() || 'python3';

/**
 * Stream peer. argv: KIND (tcp|unix) ROLE (connect|listen) ADDRESS (port or path) [CA CERT KEY].
 * With CA CERT KEY a tcp connect speaks TLS (Python's ssl, verifying the server against CA,
 * presenting CERT/KEY). Answers: `connected LOCALPORT` / `listening PORT` at start, then one
 * line per command.
 */
export const STREAM_PEER = String.raw`
import hashlib, os, socket, sys, time
kind, role, addr = sys.argv[1], sys.argv[2], sys.argv[3]
fam = socket.AF_INET if kind == 'tcp' else socket.AF_UNIX
target = ('127.0.0.1', int(addr)) if kind == 'tcp' else addr
def out(*a):
    print(*a, flush=True)
def port(s, remote=False):
    if kind != 'tcp':
        return '-'
    return str((s.getpeername() if remote else s.getsockname())[1])
lst = conn = None
if role == 'connect':
    conn = socket.socket(fam, socket.SOCK_STREAM)
    conn.connect(target)
    if len(sys.argv) > 4:
        import ssl
        ctx = ssl.create_default_context(cafile=sys.argv[4])
        ctx.load_cert_chain(sys.argv[5], sys.argv[6])
        conn = ctx.wrap_socket(conn, server_hostname='127.0.0.1')
    out('connected', port(conn))
else:
    lst = socket.socket(fam, socket.SOCK_STREAM)
    if kind == 'tcp':
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    elif os.path.exists(addr):
        os.unlink(addr)  # what a unix server does with a stale socket file
    lst.bind(target)
    lst.listen(1)
    out('listening', port(lst))
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, *args = line.split()
    if cmd == 'accept':
        lst.settimeout(float(args[0]))
        try:
            conn, _ = lst.accept()
            conn.settimeout(None)
            out('accepted', port(conn, True))
        except socket.timeout:
            out('timeout')
    elif cmd == 'recv':
        n, buf = int(args[0]), b''
        conn.settimeout(float(args[1]) if len(args) > 1 else 5.0)
        try:
            while len(buf) < n:
                c = conn.recv(n - len(buf))
                if not c:
                    break
                buf += c
        except socket.timeout:
            pass
        out('got', buf.hex() or '-')
    elif cmd == 'quiet':
        conn.settimeout(float(args[0]))
        try:
            c = conn.recv(65536)
            out('got', c.hex() if c else 'EOF')
        except socket.timeout:
            out('none')
    elif cmd == 'send':
        conn.sendall(bytes.fromhex(args[0]))
        out('sent')
    elif cmd == 'sha':
        # sha N [TIMEOUT]: read N bytes (or until EOF / TIMEOUT s of silence), hash them.
        n, got, h = int(args[0]), 0, hashlib.sha256()
        conn.settimeout(float(args[1]) if len(args) > 1 else 30.0)
        try:
            while got < n:
                c = conn.recv(min(65536, n - got))
                if not c:
                    break
                got += len(c)
                h.update(c)
        except socket.timeout:
            pass
        out('sha', got, h.hexdigest())
    elif cmd == 'queued':
        # Bytes waiting in this socket's receive queue (FIONREAD; under TLS, still encrypted).
        import fcntl, struct, termios
        out('queued', struct.unpack('i', fcntl.ioctl(conn.fileno(), termios.FIONREAD, b'\0\0\0\0'))[0])
    elif cmd == 'pace':
        # pace N RATE [TIMEOUT [FILE]]: read N bytes at RATE bytes/s (0: as fast as it can), or
        # until EOF, a reset or TIMEOUT s of silence; hash them (and keep them in FILE).
        # Answers 'paced GOT SHA END SECONDS', END one of done, eof, reset, timeout.
        n, rate = int(args[0]), float(args[1])
        conn.settimeout(float(args[2]) if len(args) > 2 else 30.0)
        keep = open(args[3], 'wb') if len(args) > 3 else None
        got, h, end, t0 = 0, hashlib.sha256(), 'done', time.monotonic()
        step = 65536 if rate <= 0 else max(4096, min(65536, int(rate / 50)))
        try:
            while got < n:
                c = conn.recv(min(step, n - got))
                if not c:
                    end = 'eof'
                    break
                got += len(c)
                h.update(c)
                if keep:
                    keep.write(c)
                if rate > 0:
                    ahead = t0 + got / rate - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
        except socket.timeout:
            end = 'timeout'
        except OSError:
            end = 'reset'
        if keep:
            keep.close()
        out('paced', got, h.hexdigest(), end, '%.3f' % (time.monotonic() - t0))
    elif cmd == 'close':
        conn.close()
        conn = None
        out('closed')
    else:
        out('unknown', cmd)
`;

/**
 * Datagram peer. argv: [PORT] (default 0); binds 127.0.0.1:PORT and answers `bound PORT`.
 * `recv T` → `dgram HEX FROMPORT` or `timeout`; `sendto PORT HEX` → `sent`.
 */
export const DGRAM_PEER = String.raw`
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('127.0.0.1', int(sys.argv[1]) if len(sys.argv) > 1 else 0))
def out(*a):
    print(*a, flush=True)
out('bound', s.getsockname()[1])
while True:
    line = sys.stdin.readline()
    if not line:
        break
    cmd, *args = line.split()
    if cmd == 'recv':
        s.settimeout(float(args[0]))
        try:
            data, src = s.recvfrom(65536)
            out('dgram', data.hex() or '-', src[1])
        except socket.timeout:
            out('timeout')
    elif cmd == 'sendto':
        s.sendto(bytes.fromhex(args[1]), ('127.0.0.1', int(args[0])))
        out('sent')
    else:
        out('unknown', cmd)
`;

export class PyPeer {
  readonly child: ChildProcessWithoutNullStreams;
  readonly #lines: string[] = [];
  #waiter: (() => void) | undefined;
  #partial = '';
  #stderr = '';
  #exited = false;
  readonly #exit: Promise<void>;

  constructor(script: string, args: readonly string[]) {
    this.child = spawn(PYTHON, ['-u', '-S', '-c', script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (s: string) => {
      const parts = (this.#partial + s).split('\n');
      this.#partial = parts.pop() ?? '';
      this.#lines.push(...parts);
      this.#waiter?.();
    });
    this.child.stderr.setEncoding('utf8');
    this.child.stderr.on('data', (s: string) => {
      this.#stderr += s;
    });
    this.child.stdin.on('error', () => {});
    this.#exit = new Promise((resolve) => {
      this.child.once('close', () => {
        this.#exited = true;
        this.#waiter?.();
        resolve();
      });
    });
  }

  /** The next answer line; rejects (with python's stderr) after `timeoutMs` or if it exited. */
  async line(timeoutMs = 5000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.#lines.length === 0) {
      if (this.#exited) throw new Error(`python peer exited without answering; stderr: ${this.#stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`python peer: no answer within ${timeoutMs} ms; stderr: ${this.#stderr}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.#waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#waiter = undefined;
    }
    return this.#lines.shift() as string;
  }

  /** Send one command and return its answer. */
  async cmd(command: string, timeoutMs = 5000): Promise<string> {
    this.child.stdin.write(`${command}\n`);
    return this.line(timeoutMs);
  }

  /** Kill (SIGKILL unless it already exited) and wait until it is gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.#exited) this.child.kill(signal);
    await this.#exit;
  }
}

export function hex(s: string | Buffer): string {
  return (typeof s === 'string' ? Buffer.from(s) : s).toString('hex');
}
