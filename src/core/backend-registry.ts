/**
 * Backends by host interface type. The core never imports a backend: each registers its
 * factory here (src/backends/index.ts registers the built-in ones), and a domain looks the
 * factory up by the device's type when it starts — QEMU's char.c finds a ChardevClass by name
 * the same way. This keeps the dependencies one way: backends depend on the core, not back.
 */
import type { ChrType } from '../config/types.ts';
import { ChardevError } from '../errors.ts';
import type { Backend, BackendContext, BackendFactory } from './backend.ts';

const factories = new Map<ChrType, BackendFactory>();

/** Register (or replace) the factory for a host interface type. */
export function registerBackend(type: ChrType, factory: BackendFactory): void {
  factories.set(type, factory);
}

/** Create the backend for `ctx.dev`, by its type. */
export function createBackend(ctx: BackendContext): Backend | Promise<Backend> {
  const type = ctx.dev.source.type;
  const factory = factories.get(type);
  if (factory !== undefined) return factory(ctx);
  if (factories.size === 0) {
    // A program that imported the core directly and none of the backends: say so plainly.
    throw new ChardevError(
      'ERR_BACKEND_UNSUPPORTED',
      `${ctx.id}: no host interface backends are registered (import the package's entry point, or src/backends/index.ts)`,
    );
  }
  throw new ChardevError('ERR_BACKEND_UNSUPPORTED', `${ctx.id}: host interface type '${type}' is not supported yet`);
}
