/**
 * What `chardev console`, `chardev list` and `chardev status` do: the terminal side of a
 * running domain, like `virsh console` and `virsh list`. The terminal is raw while
 * attached and restored on every way out.
 */
import * as net from 'node:net';
import {
  encodeFrame,
  encodeResize,
  FRAME_BREAK,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_NOTICE,
  FrameDecoder,
  LineReader,
  type ConsoleHello,
  type ConsoleReply,
} from '../../control/console-protocol.ts';
import { aliasOfName } from '../../config/names.ts';
import { listStatus, readStatus, type DomainStatus } from '../../core/status.ts';
import { cliRunDir } from '../args.ts';
import { CliError, type CliIo } from '../io.ts';
import { QmpClient } from '../../control/qmp-client.ts';

export interface ConsoleFlags {
  readonly?: boolean;
  force?: boolean;
  runDir?: string;
}

export interface ListFlags {
  json?: boolean;
  runDir?: string;
}

/** ^] as virsh uses it. */
const ESCAPE_BYTE = 0x1d;
/** `~` at the start of a line begins a command, as in ssh and cu (on a terminal only). */
const TILDE = 0x7e;
const ESCAPE_HELP =
  'Supported escape sequences (at the start of a line):\r\n  ~B  send a BREAK to the guest\r\n  ~.  disconnect (as ^])\r\n  ~?  this help\r\n  ~~  send one ~\r\n';

/** The running domain NAME, or the only one running when no NAME is given. */
export function findDomain(runDir: string, name: string | undefined): DomainStatus {
  if (name !== undefined) {
    const status = readStatus(runDir, name);
    if (status === undefined) throw new CliError(`failed to get domain '${name}'`);
    return status;
  }
  const names = listStatus(runDir);
  if (names.length === 1) {
    const only = readStatus(runDir, names[0] as string);
    if (only !== undefined) return only;
  }
  throw new CliError(names.length === 0 ? 'no running domain' : `several domains are running (${names.join(', ')}); name one`);
}

function connect(socketPath: string, hello: ConsoleHello): Promise<{ sock: net.Socket; reply: ConsoleReply; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ path: socketPath });
    const lines = new LineReader();
    const onData = (chunk: Buffer): void => {
      let got: [string, Buffer] | undefined;
      try {
        got = lines.feed(chunk);
      } catch (e) {
        sock.destroy();
        reject(new CliError(`console: ${(e as Error).message}`));
        return;
      }
      if (got === undefined) return;
      sock.off('data', onData);
      sock.off('error', onError);
      let reply: ConsoleReply;
      try {
        reply = JSON.parse(got[0]) as ConsoleReply;
      } catch {
        sock.destroy();
        reject(new CliError('console: the domain answered something that is not a console reply'));
        return;
      }
      resolve({ sock, reply, rest: got[1] });
    };
    const onError = (e: NodeJS.ErrnoException): void => reject(new CliError(`console: cannot reach the domain at ${socketPath}: ${e.message}`));
    sock.on('data', onData);
    sock.once('error', onError);
    sock.once('connect', () => sock.write(`${JSON.stringify(hello)}\n`));
  });
}

async function runConsole(status: DomainStatus, device: string | undefined, flags: ConsoleFlags): Promise<number> {
  if (status.consoleSocket === undefined) throw new CliError(`domain '${status.name}' has no console socket`);
  const hello: ConsoleHello = {
    ...(device !== undefined ? { device } : {}),
    readonly: flags.readonly === true,
    force: flags.force === true,
    label: `console pid ${process.pid}`,
    frames: true,
  };
  const { sock, reply, rest } = await connect(status.consoleSocket, hello);
  const stdin = process.stdin;
  const stdout = process.stdout;
  const raw = stdin.isTTY === true;
  if (!reply.ok) {
    sock.destroy();
    throw new CliError(`error: ${reply.error}`);
  }
  // A server that does not read frames (an older chardev) takes raw input: no BREAK, no size.
  const framed = reply.frames === true;
  // ~ commands only when a person types: piped input passes through as it is.
  const tildes = raw;
  // virsh's banner, word for word (scripts wait for it); `~?` lists the ~ commands.
  stdout.write(`Connected to domain '${reply.domain}'\r\nEscape character is ^]\r\n`);
  if (reply.role === 'viewer' && flags.readonly !== true) stdout.write('(read-only: another client is the writer; use --force to take over)\r\n');

  return new Promise<number>((resolve) => {
    let done = false;
    const restore = (): void => {
      if (raw) stdin.setRawMode(false);
    };
    // Whatever ends the session, the terminal is given back cooked.
    process.once('exit', restore);
    const finish = (code: number, message?: string): void => {
      if (done) return;
      done = true;
      restore();
      process.off('exit', restore);
      stdin.off('data', onInput);
      stdout.off('resize', sendSize);
      stdin.pause();
      for (const s of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) process.off(s, onSignal);
      sock.destroy();
      stdout.write(`\r\n${message !== undefined ? `${message}\r\n` : ''}`);
      resolve(code);
    };
    const onSignal = (): void => finish(0);
    for (const s of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) process.on(s, onSignal);

    // A terminal (or pipe) slower than the guest: stop reading the console socket until it
    // drains, so the device holds the guest instead of this process buffering without bound.
    const toTerminal = (b: Buffer | string): void => {
      if (stdout.write(b) || done) return;
      sock.pause();
      stdout.once('drain', () => sock.resume());
    };
    const decoder = new FrameDecoder((type, payload) => {
      if (type === FRAME_DATA) toTerminal(payload);
      else if (type === FRAME_NOTICE) toTerminal(`\r\n[chardev: ${payload.toString()}]\r\n`);
      else if (type === FRAME_CLOSE) finish(0, `[chardev: ${payload.toString()}]`);
    });
    sock.on('data', (chunk: Buffer) => {
      try {
        decoder.feed(chunk);
      } catch (e) {
        finish(1, `console: ${(e as Error).message}`);
      }
    });
    sock.on('close', () => finish(0));
    sock.on('error', () => finish(1));

    // Input the guest does not take yet waits in the terminal, not here.
    const send = (data: Buffer): void => {
      if (data.length === 0) return;
      if (!sock.write(framed ? encodeFrame(FRAME_DATA, data) : data)) {
        stdin.pause();
        sock.once('drain', () => {
          if (!done) stdin.resume();
        });
      }
    };
    let atLineStart = true;
    let tilde = false;
    const command = (key: number): void => {
      if (key === 0x42 /* B */) {
        if (framed) sock.write(encodeFrame(FRAME_BREAK, Buffer.alloc(0)));
        else toTerminal('\r\n[chardev: this domain takes no BREAK from consoles]\r\n');
      } else if (key === 0x2e /* . */) {
        finish(0);
      } else if (key === 0x3f /* ? */) {
        toTerminal(`\r\n${ESCAPE_HELP}`);
      } else if (key === TILDE) {
        send(Buffer.from([TILDE]));
      } else {
        // Not a command: both characters go to the guest, as ssh does.
        send(Buffer.from([TILDE, key]));
      }
    };
    const onInput = (chunk: Buffer): void => {
      let from = 0;
      for (let i = 0; i < chunk.length && !done; i++) {
        const b = chunk[i] as number;
        if (b === ESCAPE_BYTE) {
          send(chunk.subarray(from, i));
          finish(0);
          return;
        }
        if (!tildes) continue;
        if (tilde) {
          tilde = false;
          from = i + 1;
          command(b);
          atLineStart = false;
        } else if (atLineStart && b === TILDE) {
          send(chunk.subarray(from, i));
          tilde = true;
          from = i + 1;
        } else {
          atLineStart = b === 0x0d || b === 0x0a;
        }
      }
      if (!done) send(chunk.subarray(from));
    };
    // The terminal's size is the guest's while this console is the writer (a `run --tty` guest's pty).
    const sendSize = (): void => {
      if (framed && !done && stdout.isTTY === true) sock.write(encodeResize({ cols: stdout.columns, rows: stdout.rows }));
    };
    sendSize();
    stdout.on('resize', sendSize);
    // What came with the reply (after everything above exists: it may end the session).
    if (rest.length > 0) {
      try {
        decoder.feed(rest);
      } catch (e) {
        finish(1, `console: ${(e as Error).message}`);
      }
    }
    if (raw) stdin.setRawMode(true);
    stdin.on('data', onInput);
    // Input ending (a pipe) is not the end of the session: output keeps coming until ^] or the domain stops.
    stdin.resume();
  });
}

export async function consoleAction(name: string | undefined, device: string | undefined, flags: ConsoleFlags): Promise<void> {
  const status = findDomain(cliRunDir(flags.runDir), name);
  const code = await runConsole(status, device, flags);
  if (code !== 0) throw new CliError('', code);
}

export function listAction(flags: ListFlags, { write }: CliIo): void {
  const runDir = cliRunDir(flags.runDir);
  const domains = listStatus(runDir).flatMap((n) => {
    const s = readStatus(runDir, n);
    return s === undefined ? [] : [s];
  });
  if (flags.json === true) {
    write(
      `${JSON.stringify(
        domains.map((d) => ({ name: d.name, pid: d.pid, started: d.started, devices: d.devices.length, ...(d.webUrl !== undefined ? { web: d.webUrl } : {}) })),
        null,
        2,
      )}\n`,
    );
    return;
  }
  // The browser console column only when a domain has one (the URL carries the token: the status files are owner-only, so is this reader).
  const withWeb = domains.some((d) => d.webUrl !== undefined);
  const rows = domains.map((d) => [String(d.pid), d.name, 'running', d.started, ...(withWeb ? [d.webUrl ?? '-'] : [])]);
  const header = ['Pid', 'Name', 'State', 'Started', ...(withWeb ? ['Web console'] : [])];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cols: string[]): string =>
    cols
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('   ')
      .trimEnd();
  write(`${line(header)}\n${'-'.repeat(line(header).length + 4)}\n${rows.map((r) => `${line(r)}\n`).join('')}`);
}

export async function statusAction(name: string | undefined, flags: ListFlags, { write }: CliIo): Promise<void> {
  const status = findDomain(cliRunDir(flags.runDir), name);
  if (status.qmpSocket === undefined) throw new CliError(`domain '${status.name}' has no control socket`);
  const report = await deviceReport(status, status.qmpSocket);
  if (flags.json === true) {
    const hosted = {
      ...(status.daemonSocket !== undefined ? { daemon: status.daemonSocket } : {}),
      ...(status.qemuPid !== undefined ? { 'qemu-pid': status.qemuPid } : {}),
    };
    write(
      `${JSON.stringify({ name: status.name, pid: status.pid, started: status.started, qmp: status.qmpSocket, ...hosted, ...(status.webUrl !== undefined ? { web: status.webUrl } : {}), devices: report }, null, 2)}\n`,
    );
    return;
  }
  write(`Domain ${status.name}: running, pid ${status.pid}, since ${status.started}\ncontrol socket (QMP): ${status.qmpSocket}\n`);
  if (status.daemonSocket !== undefined)
    write(`hosted by the chardev daemon (control socket ${status.daemonSocket})${status.qemuPid !== undefined ? `, QEMU pid ${status.qemuPid}` : ''}\n`);
  if (status.webUrl !== undefined) write(`web console: ${status.webUrl}\n`);
  const header = ['Device', 'Type', 'From guest', 'To guest', 'Dropped', 'Clients', 'Host interface'];
  const rows = report.map((d) => [
    d.alias,
    d.type,
    String(d.bytesFromGuest),
    String(d.bytesToGuest),
    String(d.dropped),
    d.clients.map((c) => `${c.role} ${c.label}`).join(', ') || '-',
    d.filename,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cols: string[]): string =>
    cols
      .map((c, i) => c.padEnd(widths[i] ?? 0))
      .join('  ')
      .trimEnd();
  write(`${line(header)}\n${rows.map((r) => `${line(r)}\n`).join('')}`);
}

interface DeviceReport {
  alias: string;
  label: string;
  type: string;
  filename: string;
  bytesFromGuest: number;
  bytesToGuest: number;
  dropped: number;
  clients: Array<{ id: number; kind: string; label: string; role: string; bytesSent: number; bytesMissed: number }>;
}

async function deviceReport(status: DomainStatus, qmpSocket: string): Promise<DeviceReport[]> {
  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(qmpSocket);
  } catch (e) {
    throw new CliError(`status: domain '${status.name}': ${(e as Error).message}`);
  }
  try {
    const chardevs = (await qmp.execute('query-chardev')) as Array<{ label: string; filename: string }>;
    const counters = (await qmp.execute('x-chardev-counters')) as Array<Record<string, number | string>>;
    const out: DeviceReport[] = [];
    for (const k of counters) {
      const label = String(k['label']);
      const clients = (await qmp.execute('x-chardev-clients', { id: label })) as Array<Record<string, unknown>>;
      const known = status.devices.find((d) => d.alias === aliasOfName(label));
      out.push({
        alias: known?.alias ?? label,
        label,
        type: known?.type ?? '-',
        filename: chardevs.find((c) => c.label === label)?.filename ?? '',
        bytesFromGuest: Number(k['bytes-from-guest']),
        bytesToGuest: Number(k['bytes-to-guest']),
        dropped: Number(k['dropped']),
        clients: clients.map((c) => ({
          id: Number(c['id']),
          kind: String(c['kind']),
          label: String(c['label']),
          role: String(c['role']),
          bytesSent: Number(c['bytes-sent']),
          bytesMissed: Number(c['bytes-missed']),
        })),
      });
    }
    return out;
  } finally {
    await qmp.close();
  }
}
