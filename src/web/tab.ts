/**
 * One browser tab's WebSocket on one device: a hub client of the device, like a `chardev
 * console` session. Binary frames are guest bytes both ways; text frames are JSON control
 * messages (docs/browser.md is the wire reference).
 */
import { WebSocket, type RawData } from 'ws';
import type { Chardev } from '../core/chardev.ts';
import type { Domain } from '../core/domain.ts';
import { HubFullError, type ClientRole, type ClientSink, type HubClient } from '../core/hub.ts';

/** Frames of guest output are at most this big (history replays can be MiBs). */
const MAX_OUT_FRAME = 256 * 1024;
/** Most columns or rows a resize may ask for (struct winsize holds 16 bits). */
const MAX_TERMINAL_CELLS = 0xffff;

/** Close codes the page understands (4000–4999 are the application's). */
export const CLOSE_DEVICE_GONE = 4001;
export const CLOSE_HUB_FULL = 4002;

/** Bumped when a message changes meaning; new optional fields and messages do not bump it. */
export const WIRE_VERSION = 1;

interface TabOptions {
  readonly label: string;
  readonly readonly: boolean;
  readonly force: boolean;
}

/** What a page may ask for in a text frame. */
type PageMessage =
  | { readonly type: 'resize'; readonly cols: number; readonly rows: number }
  | { readonly type: 'break' }
  | { readonly type: 'take' }
  | { readonly type: 'counters' };

/** A text frame from the page as a message, or why it is not one. */
export function parsePageMessage(text: string): PageMessage | string {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return 'a text frame must be a JSON object (guest input goes in binary frames)';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'a text frame must be a JSON object (guest input goes in binary frames)';
  const o = v as Record<string, unknown>;
  const cells = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0 && n <= MAX_TERMINAL_CELLS;
  switch (o['type']) {
    case 'resize':
      return cells(o['cols']) && cells(o['rows'])
        ? { type: 'resize', cols: o['cols'], rows: o['rows'] }
        : `resize needs whole cols and rows from 1 to ${MAX_TERMINAL_CELLS}`;
    case 'break':
    case 'take':
    case 'counters':
      return { type: o['type'] };
    default:
      return `unknown message type ${JSON.stringify(o['type'] ?? null)}`;
  }
}

function rawToBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/**
 * One tab: a hub client whose transport is the WebSocket.
 * @internal the web server's own; its signature names ws's types, which the package's .d.ts must not need
 */
export function serveTab(domain: Domain, device: Chardev, ws: WebSocket, opts: TabOptions): void {
  // Guest output and notices wait until hello (which needs the role) is out.
  let held: Array<{ data: Buffer | string; binary: boolean }> | undefined = [];
  let heldBytes = 0;
  let client: HubClient | undefined;
  let toldRole: ClientRole | undefined;
  const out = (data: Buffer | string, binary: boolean): void => {
    if (held !== undefined) {
      held.push({ data, binary });
      heldBytes += data.length;
      return;
    }
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(data, { binary }, (err) => {
      if (err !== undefined && err !== null) ws.terminate();
      // A frame went out: the guest may be waiting for this tab to take more.
      else client?.drained();
    });
  };
  const control = (msg: Record<string, unknown>): void => out(JSON.stringify(msg), false);
  const sink: ClientSink = {
    send: (data) => {
      for (let off = 0; off < data.length; off += MAX_OUT_FRAME) out(data.subarray(off, off + MAX_OUT_FRAME), true);
    },
    get queuedBytes() {
      return ws.bufferedAmount + heldBytes;
    },
    notice: (text) => {
      control({ type: 'notice', text });
      // The hub sets the new role before it tells the client; the page wants it as data too.
      if (client !== undefined && toldRole !== undefined && client.role !== toldRole) {
        toldRole = client.role;
        control({ type: 'role', role: client.role });
      }
    },
    close: (reason) => {
      control({ type: 'notice', text: reason });
      if (ws.readyState === WebSocket.OPEN) ws.close(CLOSE_DEVICE_GONE, reason.slice(0, 100));
    },
    pause: () => ws.pause(),
    resume: () => ws.resume(),
  };
  ws.on('error', () => ws.terminate());
  try {
    client = device.hub.attach(sink, {
      kind: 'browser',
      label: opts.label,
      readonly: opts.readonly,
      force: opts.force && !opts.readonly,
    });
  } catch (e) {
    const text = e instanceof HubFullError ? `${device.id}: ${e.message}` : (e as Error).message;
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ type: 'notice', text }));
      ws.close(CLOSE_HUB_FULL, text.slice(0, 100));
    }
    return;
  }
  const c = client;
  toldRole = c.role;
  const pending = held;
  held = undefined;
  heldBytes = 0;
  control({
    type: 'hello',
    version: WIRE_VERSION,
    domain: domain.name,
    device: device.alias,
    label: device.id,
    deviceType: device.type,
    role: c.role,
    readonly: c.readonly,
    interactive: device.type === 'vc',
  });
  for (const f of pending) out(f.data, f.binary);
  const onMessage = (msg: PageMessage): void => {
    switch (msg.type) {
      case 'resize':
        c.resize({ cols: msg.cols, rows: msg.rows });
        return;
      case 'break':
        if (c.role !== 'writer') control({ type: 'error', text: 'a BREAK needs the writer role' });
        else c.break();
        return;
      case 'take':
        if (c.readonly) control({ type: 'error', text: 'this tab is read-only' });
        else device.hub.takeOver(c);
        return;
      case 'counters': {
        const k = device.counters;
        control({
          type: 'counters',
          bytesFromGuest: k.bytesFromGuest,
          bytesToGuest: k.bytesToGuest,
          dropped: k.dropped,
          clients: device.hub.size,
          writer: device.hub.writer?.label ?? null,
        });
        return;
      }
    }
  };
  ws.on('message', (data: RawData, isBinary: boolean) => {
    const b = rawToBuffer(data);
    if (isBinary) {
      if (b.length > 0) c.input(b);
      return;
    }
    const msg = parsePageMessage(b.toString('utf8'));
    if (typeof msg === 'string') control({ type: 'error', text: msg });
    else onMessage(msg);
  });
  ws.on('close', () => c.detach());
  // A tab that closed while we attached.
  if (ws.readyState !== WebSocket.OPEN) c.detach();
}
