/**
 * A QMP command's arguments as QEMU's visitor checks them: required and optional members,
 * their JSON types, enums, nested objects, and every member not asked for refused
 * (`Parameter 'x' is unexpected`), all in QEMU's words; and a command's failure as QMP
 * reports it.
 */
import type { Json, JsonObject } from './qmp-json.ts';

export type QmpErrorClass = 'GenericError' | 'CommandNotFound';

/** A command's failure as QMP reports it: `{"error": {"class", "desc"}}`. */
export class QmpError extends Error {
  readonly errorClass: QmpErrorClass;
  constructor(errorClass: QmpErrorClass, desc: string) {
    super(desc);
    this.name = 'QmpError';
    this.errorClass = errorClass;
  }
}

export const generic = (desc: string): QmpError => new QmpError('GenericError', desc);

export function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

type ArgType = 'string' | 'integer' | 'boolean' | 'object' | 'array';

function hasType(v: Json, type: ArgType): boolean {
  switch (type) {
    case 'string':
      return typeof v === 'string';
    case 'integer':
      return typeof v === 'number' && Number.isSafeInteger(v);
    case 'boolean':
      return typeof v === 'boolean';
    case 'object':
      return isObject(v);
    case 'array':
      return Array.isArray(v);
  }
}

/**
 * One QAPI struct being visited, with QEMU's input-visitor errors: members are checked in
 * the order they are read, then done() refuses members nobody read.
 */
/** A command's arguments, checked as QEMU's QAPI visitor checks them (types, missing, unexpected). */
export class Args {
  readonly #obj: JsonObject;
  readonly #prefix: string;
  readonly #used = new Set<string>();

  constructor(obj: JsonObject, prefix = '') {
    this.#obj = obj;
    this.#prefix = prefix;
  }

  #get(name: string, type: ArgType, required: boolean): Json | undefined {
    this.#used.add(name);
    const v = Object.hasOwn(this.#obj, name) ? this.#obj[name] : undefined;
    if (v === undefined) {
      if (required) throw generic(`Parameter '${this.#prefix}${name}' is missing`);
      return undefined;
    }
    if (!hasType(v, type)) throw generic(`Invalid parameter type for '${this.#prefix}${name}', expected: ${type}`);
    return v;
  }

  str(name: string): string {
    return this.#get(name, 'string', true) as string;
  }
  optStr(name: string): string | undefined {
    return this.#get(name, 'string', false) as string | undefined;
  }
  int(name: string): number {
    return this.#get(name, 'integer', true) as number;
  }
  optInt(name: string): number | undefined {
    return this.#get(name, 'integer', false) as number | undefined;
  }
  optBool(name: string): boolean | undefined {
    return this.#get(name, 'boolean', false) as boolean | undefined;
  }
  obj(name: string): Args {
    return new Args(this.#get(name, 'object', true) as JsonObject, `${this.#prefix}${name}.`);
  }
  optObj(name: string): Args | undefined {
    const v = this.#get(name, 'object', false) as JsonObject | undefined;
    return v === undefined ? undefined : new Args(v, `${this.#prefix}${name}.`);
  }
  /** A member of any type (one we only refuse when present). */
  optAny(name: string): Json | undefined {
    this.#used.add(name);
    return Object.hasOwn(this.#obj, name) ? this.#obj[name] : undefined;
  }
  optArray(name: string): Json[] | undefined {
    return this.#get(name, 'array', false) as Json[] | undefined;
  }
  /** An enum member; QEMU names only the member (not its path) in this error. */
  optEnum<T extends string>(name: string, values: readonly T[]): T | undefined {
    const v = this.optStr(name);
    if (v !== undefined && !(values as readonly string[]).includes(v)) throw generic(`Parameter '${name}' does not accept value '${v}'`);
    return v as T | undefined;
  }
  /** The members not read yet, as they came (a command passed on with what it did not use). */
  rest(): JsonObject {
    const out = Object.create(null) as JsonObject;
    for (const key of Object.keys(this.#obj)) {
      if (this.#used.has(key)) continue;
      this.#used.add(key);
      out[key] = this.#obj[key] as Json;
    }
    return out;
  }
  done(): void {
    for (const key of Object.keys(this.#obj)) {
      if (!this.#used.has(key)) throw generic(`Parameter '${this.#prefix}${key}' is unexpected`);
    }
  }
}
