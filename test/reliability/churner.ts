/**
 * Client churn against a TCP server device: a Python process connecting and disconnecting
 * in a loop — sometimes reading a little, sometimes nothing, sometimes resetting the
 * connection (SO_LINGER 0) — until told to stop or the server is gone. Deterministic per seed.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { PYTHON } from './helpers.ts';

const CHURN = String.raw`
import random, select, socket, struct, sys
port, seed = int(sys.argv[1]), int(sys.argv[2])
pause = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
rnd = random.Random(seed)
connects = received = resets = 0
while True:
    r, _, _ = select.select([0], [], [], pause)
    if r:
        break
    try:
        s = socket.create_connection(('127.0.0.1', port), timeout=5)
    except OSError:
        break
    connects += 1
    try:
        k = rnd.randrange(4)
        if k >= 1:
            s.settimeout(0.05 * k)
            try:
                want = rnd.randrange(1, 64 * 1024)
                while want > 0:
                    b = s.recv(min(want, 65536))
                    if not b:
                        break
                    received += len(b)
                    want -= len(b)
            except (socket.timeout, OSError):
                pass
        if k == 3 or rnd.randrange(3) == 0:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            resets += 1
    finally:
        s.close()
print(connects, received, resets, flush=True)
`;

export interface ChurnTotals {
  readonly connects: number;
  readonly received: number;
  readonly resets: number;
}

export class Churner {
  readonly #child: ChildProcessWithoutNullStreams;
  readonly #result: Promise<ChurnTotals>;

  /** `pauseMs` between connections (0: as fast as it goes). */
  constructor(port: number, seed: number, pauseMs = 0) {
    this.#child = spawn(PYTHON, ['-u', '-S', '-c', CHURN, String(port), String(seed), String(pauseMs / 1000)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.#child.stdin.on('error', () => {});
    let out = '';
    let err = '';
    this.#child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    this.#child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    this.#result = new Promise((resolve, reject) =>
      this.#child.once('close', () => {
        const [connects, received, resets] = out.trim().split(' ').map(Number);
        if (connects === undefined || received === undefined || resets === undefined || Number.isNaN(connects)) reject(new Error(`churner failed: ${err}`));
        else resolve({ connects, received, resets });
      }),
    );
  }

  /** Stop (if it still runs) and return its totals. */
  stop(): Promise<ChurnTotals> {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.stdin.end('stop\n');
    return this.#result;
  }
}
