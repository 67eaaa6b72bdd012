/**
 * Stand-in guests for the daemon: what QEMU does on its sockets, without QEMU. The daemon
 * starts test/helpers/standin-qemu.sh as the "QEMU binary"; that script hands its command
 * line to this hub and stays as the supervised process. The hub then does what QEMU 7.2
 * does with `-chardev socket,id=…,path=…,reconnect=1` and `-mon chardev=charmonitor,
 * mode=control`: connects to each socket, connects again every second while it cannot
 * (a daemon restart), greets on the monitor and answers qmp_capabilities and quit (quit
 * ends the stand-in's process). What the guest writes while a port is not connected is
 * dropped, as QEMU's socket chardev drops it.
 *
 * One hub for every stand-in, so 100 guests cost 100 `sleep` processes, not 100 runtimes.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { ROOT } from './paths.ts';

export const STANDIN_QEMU = path.join(ROOT, 'test', 'helpers', 'standin-qemu.sh');

/** QEMU's reconnect period with `reconnect=1`. */
const RECONNECT_MS = 1000;

interface SocketChardev {
  readonly id: string;
  readonly path: string;
}

/** `-chardev socket,id=X,path=P,reconnect=1` (commas in values doubled) → {id, path}. */
function parseChardev(value: string): SocketChardev | undefined {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < value.length; i++) {
    const ch = value[i] as string;
    if (ch === ',' && value[i + 1] === ',') {
      cur += ',';
      i++;
    } else if (ch === ',') {
      parts.push(cur);
      cur = '';
    } else cur += ch;
  }
  parts.push(cur);
  if (parts[0] !== 'socket') return undefined;
  const kv = new Map(parts.slice(1).map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)] as const));
  const id = kv.get('id');
  const p = kv.get('path');
  return id !== undefined && p !== undefined ? { id, path: p } : undefined;
}

/** One guest port as QEMU's socket chardev holds it: connected, or trying again every second. */
export class StandinPort {
  readonly id: string;
  readonly path: string;
  #sock: net.Socket | undefined;
  #closed = false;
  #timer: NodeJS.Timeout | undefined;
  /** What the host sent the guest, across reconnections. */
  readonly received: Buffer[] = [];
  /** Times a connection was made (1 = the first). */
  connects = 0;
  readonly #onConnect: Array<() => void> = [];

  constructor(
    chardev: SocketChardev,
    private readonly onData?: (port: StandinPort, b: Buffer) => void,
  ) {
    this.id = chardev.id;
    this.path = chardev.path;
    this.#connect();
  }

  get connected(): boolean {
    return this.#sock !== undefined;
  }

  #connect(): void {
    if (this.#closed) return;
    const sock = net.connect({ path: this.path });
    sock.once('connect', () => {
      this.#sock = sock;
      this.connects++;
      for (const f of this.#onConnect.splice(0)) f();
      this.onConnected(sock);
    });
    sock.on('data', (b: Buffer) => {
      this.received.push(b);
      this.onData?.(this, b);
    });
    sock.on('error', () => {});
    sock.once('close', () => {
      if (this.#sock === sock) this.#sock = undefined;
      if (!this.#closed) this.#timer = setTimeout(() => this.#connect(), RECONNECT_MS);
    });
  }

  /** For the monitor: what happens on each (re)connection. */
  protected onConnected(_sock: net.Socket): void {}

  /** Resolves at the next connection (at once if connected). */
  whenConnected(): Promise<void> {
    if (this.#sock !== undefined) return Promise.resolve();
    return new Promise((resolve) => this.#onConnect.push(resolve));
  }

  /** Guest output: false (and dropped) while not connected, as QEMU drops it. Resolves once the socket took it. */
  async write(b: Buffer | string): Promise<boolean> {
    const sock = this.#sock;
    if (sock === undefined) return false;
    // As QEMU's frontend waits for a full socket (flow control), the guest waits here.
    if (!sock.write(b)) {
      await new Promise<void>((resolve) => {
        const done = (): void => {
          sock.off('drain', done);
          sock.off('close', done);
          resolve();
        };
        sock.on('drain', done);
        sock.on('close', done);
      });
    }
    return true;
  }

  receivedText(): string {
    return Buffer.concat(this.received).toString('latin1');
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#sock?.destroy();
  }
}

/** QEMU's QMP monitor on a client socket: a greeting on every connection, a few commands. */
class StandinMonitor extends StandinPort {
  #buf = '';
  constructor(
    chardev: SocketChardev,
    private readonly onQuit: () => void,
  ) {
    super(chardev, (_p, b) => this.#feed(b));
  }
  #sock: net.Socket | undefined;
  protected override onConnected(sock: net.Socket): void {
    this.#sock = sock;
    this.#buf = '';
    sock.write(`${JSON.stringify({ QMP: { version: { qemu: { micro: 0, minor: 2, major: 7 }, package: 'chardev stand-in' }, capabilities: ['oob'] } })}\r\n`);
  }
  #feed(b: Buffer): void {
    this.#buf += b.toString('utf8');
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line === '') continue;
      let req: { execute?: string; id?: unknown };
      try {
        req = JSON.parse(line) as { execute?: string; id?: unknown };
      } catch {
        continue;
      }
      const answer = req.id === undefined ? { return: {} } : { return: {}, id: req.id };
      this.#sock?.write(`${JSON.stringify(answer)}\r\n`);
      if (req.execute === 'quit') this.onQuit();
    }
  }
}

/** One stand-in QEMU: its process (the shell script, now `sleep`), its ports by chardev id. */
export class StandinGuest {
  readonly pid: number;
  readonly argv: readonly string[];
  readonly ports = new Map<string, StandinPort>();
  readonly #monitor: StandinMonitor | undefined;
  #quit = false;

  constructor(pid: number, argv: readonly string[]) {
    this.pid = pid;
    this.argv = argv;
    let monitor: StandinMonitor | undefined;
    for (let i = 0; i < argv.length - 1; i++) {
      if (argv[i] !== '-chardev') continue;
      const c = parseChardev(argv[i + 1] as string);
      if (c === undefined) continue;
      if (c.id === 'charmonitor') monitor = new StandinMonitor(c, () => this.quit());
      else this.ports.set(c.id, new StandinPort(c));
    }
    this.#monitor = monitor;
  }

  port(id: string): StandinPort {
    const p = this.ports.get(id);
    if (p === undefined) throw new Error(`stand-in ${this.pid} has no port ${id} (has ${[...this.ports.keys()].join(', ')})`);
    return p;
  }

  get allConnected(): boolean {
    return [...this.ports.values()].every((p) => p.connected) && this.#monitor?.connected === true;
  }

  /** QMP quit, or the guest powering off: the process ends, the sockets close. */
  quit(): void {
    if (this.#quit) return;
    this.#quit = true;
    for (const p of this.ports.values()) p.close();
    this.#monitor?.close();
    try {
      process.kill(this.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
}

/** The hub every stand-in script reports to. */
export class StandinHub {
  readonly socketPath: string;
  readonly guests: StandinGuest[] = [];
  readonly #server: net.Server;
  readonly #waiters: Array<(g: StandinGuest) => void> = [];

  private constructor(socketPath: string) {
    this.socketPath = socketPath;
    this.#server = net.createServer((sock) => {
      const chunks: Buffer[] = [];
      sock.on('data', (b: Buffer) => chunks.push(b));
      sock.on('error', () => {});
      sock.on('end', () => {
        const [pid, ...argv] = Buffer.concat(chunks).toString('utf8').replace(/\n$/, '').split('\n');
        const guest = new StandinGuest(Number(pid), argv);
        this.guests.push(guest);
        for (const w of this.#waiters.splice(0)) w(guest);
      });
    });
  }

  static async start(dir: string): Promise<StandinHub> {
    const hub = new StandinHub(path.join(dir, 'standin-hub.sock'));
    fs.rmSync(hub.socketPath, { force: true });
    await new Promise<void>((resolve) => hub.#server.listen(hub.socketPath, resolve));
    return hub;
  }

  /** The environment the daemon must have for its stand-ins to find the hub. */
  get env(): Record<string, string> {
    return { CHARDEV_STANDIN_HUB: this.socketPath };
  }

  /** The stand-in whose chardev sockets are under `dir` (the domain's private directory). */
  guestWithSocketsIn(dir: string): StandinGuest | undefined {
    return this.guests.find((g) => [...g.ports.values()].some((p) => path.dirname(p.path) === dir));
  }

  close(): void {
    for (const g of this.guests) g.quit();
    this.#server.close();
  }
}
