/** Every host interface type → its backend. Exhaustive: a new ChrType fails to compile here. */
import type { ChrSourceDef } from '../config/types.ts';
import type { Backend, BackendContext } from '../core/backend.ts';
import { ChardevError, assertNever } from '../errors.ts';
import { createDevBackend } from './dev.ts';
import { createFileBackend } from './file.ts';
import { createNullBackend } from './null.ts';
import { createPipeBackend } from './pipe.ts';
import { createPtyBackend } from './pty.ts';
import { createSocketBackend } from './socket.ts';
import { createStdioBackend } from './stdio.ts';
import { createUdpBackend } from './udp.ts';
import { createVcBackend } from './vc.ts';

function unsupported(ctx: BackendContext, source: ChrSourceDef): never {
  throw new ChardevError('ERR_BACKEND_UNSUPPORTED', `${ctx.id}: host interface type '${source.type}' is not supported yet`);
}

export function createBackend(ctx: BackendContext): Backend | Promise<Backend> {
  const source = ctx.dev.source;
  switch (source.type) {
    case 'null':
      return createNullBackend(ctx);
    case 'file':
      return createFileBackend(ctx, source);
    case 'pty':
      return createPtyBackend(ctx);
    case 'pipe':
      return createPipeBackend(ctx, source.path);
    case 'stdio':
      return createStdioBackend(ctx);
    case 'dev':
      return createDevBackend(ctx, source);
    case 'tcp':
    case 'unix':
      return createSocketBackend(ctx, source);
    case 'udp':
      return createUdpBackend(ctx, source);
    case 'vc':
      return createVcBackend(ctx);
    case 'spicevmc':
    case 'spiceport':
    case 'nmdm':
    case 'qemu-vdagent':
    case 'dbus':
      return unsupported(ctx, source);
    default:
      return assertNever(source, 'host interface type');
  }
}
