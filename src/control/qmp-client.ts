/**
 * The smallest QMP client that works: connect, negotiate capabilities, run commands one
 * at a time. Used by `chardev status`; anything else (Python's qemu.qmp, socat) speaks to
 * the same socket.
 */
import * as net from 'node:net';

export class QmpClientError extends Error {}

export class QmpClient {
  readonly #sock: net.Socket;
  #buf = '';
  /** Waiting for an answer, in order; `gone` fails them when the connection ends. */
  readonly #pending: Array<{ answer: (msg: Record<string, unknown>) => void; gone: () => void }> = [];
  readonly #closed: Promise<void>;

  private constructor(sock: net.Socket) {
    this.#sock = sock;
    sock.setEncoding('utf8');
    sock.on('data', (s: string) => this.#feed(s));
    // A peer that goes away (QEMU quitting resets the connection) ends in 'close'.
    sock.on('error', () => {});
    this.#closed = new Promise((resolve) =>
      sock.once('close', () => {
        for (const p of this.#pending.splice(0)) p.gone();
        resolve();
      }),
    );
  }

  /** Connect, read the greeting and send qmp_capabilities. */
  static async connect(path: string, timeoutMs = 5000): Promise<QmpClient> {
    const sock = net.connect({ path });
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', resolve);
      sock.once('error', (e) => reject(new QmpClientError(`cannot reach ${path}: ${e.message}`)));
    });
    return QmpClient.over(sock, timeoutMs);
  }

  /** Speak QMP on a connected stream (e.g. QEMU connecting to us): greeting, capabilities. */
  static async over(sock: net.Socket, timeoutMs = 5000): Promise<QmpClient> {
    const client = new QmpClient(sock);
    const greeting = await client.#next(timeoutMs);
    if (!('QMP' in greeting)) throw new QmpClientError(`${sock.remoteAddress ?? 'the peer'} does not speak QMP`);
    await client.execute('qmp_capabilities', undefined, timeoutMs);
    return client;
  }

  // QEMU ends every message with CRLF and never puts a raw newline inside one.
  #feed(s: string): void {
    this.#buf += s;
    let nl: number;
    while ((nl = this.#buf.indexOf('\n')) >= 0) {
      const line = this.#buf.slice(0, nl).trim();
      this.#buf = this.#buf.slice(nl + 1);
      if (line === '') continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      if ('event' in msg) continue;
      this.#pending.shift()?.answer(msg);
    }
  }

  #next(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      if (this.#sock.destroyed) {
        reject(new QmpClientError('the connection is closed'));
        return;
      }
      const entry = {
        answer: (msg: Record<string, unknown>): void => {
          clearTimeout(timer);
          resolve(msg);
        },
        gone: (): void => {
          clearTimeout(timer);
          reject(new QmpClientError('the connection closed before an answer'));
        },
      };
      const timer = setTimeout(() => {
        // Whatever answers later belongs to this question: keep the entry, silenced.
        entry.answer = () => {};
        entry.gone = () => {};
        reject(new QmpClientError(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.push(entry);
    });
  }

  /** Run one command; rejects with QMP's `desc` on an error answer. */
  async execute(command: string, args?: Record<string, unknown>, timeoutMs = 5000): Promise<unknown> {
    const answer = this.#next(timeoutMs);
    this.#sock.write(`${JSON.stringify(args === undefined ? { execute: command } : { execute: command, arguments: args })}\n`);
    const msg = await answer;
    if ('error' in msg) {
      const err = msg['error'] as { desc?: unknown };
      throw new QmpClientError(typeof err.desc === 'string' ? err.desc : JSON.stringify(msg['error']));
    }
    return msg['return'];
  }

  async close(): Promise<void> {
    this.#sock.end();
    await this.#closed;
  }
}
