/**
 * The built-in backends, registered with the core by type when this module is loaded (the
 * package's entry point and every command that starts a domain load it). The table is
 * exhaustive over ChrType: a new type fails to compile here until it has a backend or is
 * listed as unsupported (types that need software chardev does not have: SPICE, D-Bus, a
 * FreeBSD nmdm pair, QEMU's clipboard agent).
 */
import type { ChrSourceDef, ChrType } from '../config/types.ts';
import type { BackendContext, BackendFactory } from '../core/backend.ts';
import { registerBackend } from '../core/backend-registry.ts';
import { createDevBackend } from './dev.ts';
import { createFileBackend } from './file.ts';
import { createNullBackend } from './null.ts';
import { createPipeBackend } from './pipe.ts';
import { createPtyBackend } from './pty.ts';
import { createSocketBackend } from './socket.ts';
import { createStdioBackend } from './stdio.ts';
import { createUdpBackend } from './udp.ts';
import { createVcBackend } from './vc.ts';

/** The device's source, narrowed to one type (the registry looked the factory up by it). */
function sourceOf<T extends ChrType>(ctx: BackendContext, type: T): ChrSourceDef & { type: T } {
  const source = ctx.dev.source;
  if (source.type !== type) throw new TypeError(`${ctx.id}: a '${source.type}' device reached the '${type}' backend`);
  return source as ChrSourceDef & { type: T };
}

const BUILTIN: Record<ChrType, BackendFactory | undefined> = {
  null: (ctx) => createNullBackend(ctx),
  file: (ctx) => createFileBackend(ctx, sourceOf(ctx, 'file')),
  pty: (ctx) => createPtyBackend(ctx),
  pipe: (ctx) => createPipeBackend(ctx, sourceOf(ctx, 'pipe').path),
  stdio: (ctx) => createStdioBackend(ctx),
  dev: (ctx) => createDevBackend(ctx, sourceOf(ctx, 'dev')),
  tcp: (ctx) => createSocketBackend(ctx, sourceOf(ctx, 'tcp')),
  unix: (ctx) => createSocketBackend(ctx, sourceOf(ctx, 'unix')),
  udp: (ctx) => createUdpBackend(ctx, sourceOf(ctx, 'udp')),
  vc: (ctx) => createVcBackend(ctx),
  spicevmc: undefined,
  spiceport: undefined,
  nmdm: undefined,
  'qemu-vdagent': undefined,
  dbus: undefined,
};

for (const [type, factory] of Object.entries(BUILTIN) as [ChrType, BackendFactory | undefined][]) {
  if (factory !== undefined) registerBackend(type, factory);
}
