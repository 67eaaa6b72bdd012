/** The telnet server codec: QEMU's greeting, and IAC stripping that survives any chunking. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { TELNET_SERVER_GREETING, TELNET_SUBNEGOTIATION_LIMIT, TelnetDecoder, telnetServerGreeting } from '../../src/protocols/telnet.ts';

type Event = { readonly data: Buffer } | 'break';

/** Decode `chunks` in order; every sink call is recorded as it was made. */
function decode(chunks: readonly Buffer[]): Event[] {
  const events: Event[] = [];
  const decoder = new TelnetDecoder({
    data: (chunk) => events.push({ data: Buffer.from(chunk) }),
    break: () => events.push('break'),
  });
  for (const c of chunks) decoder.feed(c);
  return events;
}

/** All data bytes, and for each BREAK how many data bytes preceded it. */
function flatten(events: readonly Event[]): { data: Buffer; breaks: number[] } {
  const parts: Buffer[] = [];
  const breaks: number[] = [];
  let offset = 0;
  for (const e of events) {
    if (e === 'break') {
      breaks.push(offset);
    } else {
      assert.ok(e.data.length > 0, 'an empty buffer was delivered');
      parts.push(e.data);
      offset += e.data.length;
    }
  }
  return { data: Buffer.concat(parts), breaks };
}

const b = (...bytes: number[]): Buffer => Buffer.from(bytes);
const s = (text: string): Buffer => Buffer.from(text, 'latin1');
const data = (text: string): Event => ({ data: s(text) });

describe('telnet server', () => {
  it("greets with QEMU's 12 bytes: WILL ECHO, WILL SGA, WILL BINARY, DO BINARY", () => {
    const expected = b(0xff, 0xfb, 0x01, 0xff, 0xfb, 0x03, 0xff, 0xfb, 0x00, 0xff, 0xfd, 0x00);
    assert.deepEqual(TELNET_SERVER_GREETING, expected);
    const copy = telnetServerGreeting();
    assert.deepEqual(copy, expected);
    copy[0] = 0;
    assert.deepEqual(telnetServerGreeting(), expected, 'each copy is private');
    assert.deepEqual(TELNET_SERVER_GREETING, expected);
  });

  it('passes plain bytes through untouched, CR and NUL included', () => {
    assert.deepEqual(decode([b(0x61, 0x0d, 0x00, 0x0d, 0x0a, 0xfe)]), [{ data: b(0x61, 0x0d, 0x00, 0x0d, 0x0a, 0xfe) }]);
  });

  it('strips option negotiation (3 bytes), delivering the rest as one buffer', () => {
    assert.deepEqual(decode([b(0x61, 0xff, 0xfd, 0x01, 0x62)]), [data('ab')]);
    for (const verb of [0xfb, 0xfc, 0xfd, 0xfe]) {
      assert.deepEqual(decode([b(0xff, verb, 0xff, 0x63)]), [data('c')], 'the option byte may be 0xFF');
    }
  });

  it('IAC IAC is one 0xFF data byte', () => {
    assert.deepEqual(decode([b(0xff, 0xff)]), [{ data: b(0xff) }]);
    assert.deepEqual(decode([b(0x61, 0xff, 0xff, 0x62)]), [{ data: b(0x61, 0xff, 0x62) }]);
    assert.deepEqual(decode([b(0xff), b(0xff), b(0xff, 0xff)]), [{ data: b(0xff) }, { data: b(0xff) }]);
  });

  it('IAC BREAK is a break event, in order with the data around it', () => {
    assert.deepEqual(decode([s('ab\xff\xf3cd')]), [data('ab'), 'break', data('cd')]);
    assert.deepEqual(decode([s('ab\xff'), s('\xf3cd')]), [data('ab'), 'break', data('cd')]);
    assert.deepEqual(decode([s('\xff\xf3\xff\xf3')]), ['break', 'break']);
  });

  it('two-byte commands (NOP, GA, ...) do not swallow the next byte, unlike QEMU', () => {
    assert.deepEqual(decode([b(0xff, 0xf1, 0x78)]), [data('x')]);
    for (const cmd of [0xef, 0xf0, 0xf1, 0xf2, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9, 0x00, 0x41, 0xee]) {
      assert.deepEqual(decode([b(0x61, 0xff, cmd, 0x62)]), [data('ab')], `IAC ${cmd.toString(16)}`);
      assert.deepEqual(decode([b(0x61, 0xff), b(cmd), b(0x62)]), [data('a'), data('b')]);
    }
  });

  it('strips a subnegotiation (NAWS 80x24) entirely, unlike QEMU', () => {
    const naws = b(0xff, 0xfa, 0x1f, 0x00, 0x50, 0x00, 0x18, 0xff, 0xf0);
    assert.deepEqual(decode([naws]), []);
    assert.deepEqual(decode([s('a'), naws, s('b')]), [data('a'), data('b')]);
    assert.deepEqual(decode([Buffer.concat([s('a'), naws, s('b')])]), [data('ab')]);
    assert.deepEqual(decode([...naws].map((x) => b(x))), [], 'byte at a time');
  });

  it('inside a subnegotiation, IAC IAC is escaped payload and does not end it', () => {
    // Width 0xFF00 has its 0xFF doubled; the F0 after it is payload, not SE.
    const naws = b(0xff, 0xfa, 0x1f, 0xff, 0xff, 0xf0, 0x00, 0x18, 0xff, 0xf0);
    assert.deepEqual(decode([s('a'), naws, s('b')]), [data('a'), data('b')]);
    // A malformed IAC x (x not SE) inside is discarded with the payload.
    assert.deepEqual(decode([s('a\xff\xfa\x18\xff\xf1zz\xff\xf0b')]), [data('ab')]);
  });

  it(`an unterminated subnegotiation is abandoned after ${TELNET_SUBNEGOTIATION_LIMIT} bytes; what follows is data`, () => {
    // 10000 payload bytes and no SE: the first LIMIT are discarded, the rest are guest input.
    const payload = Buffer.alloc(10_000, 0x78);
    const stream = Buffer.concat([s('a\xff\xfa'), payload, s('tail')]);
    const expected = Buffer.concat([s('a'), payload.subarray(TELNET_SUBNEGOTIATION_LIMIT), s('tail')]);
    assert.deepEqual(flatten(decode([stream])).data, expected);
    const pieces: Buffer[] = [];
    for (let i = 0; i < stream.length; i += 7) pieces.push(stream.subarray(i, i + 7));
    assert.deepEqual(flatten(decode(pieces)).data, expected);

    // A long stream of payload keeps nothing: 1 MiB without SE comes out minus one bound's worth.
    let received = 0;
    const decoder = new TelnetDecoder({ data: (c) => (received += c.length), break: () => assert.fail('no break') });
    decoder.feed(s('\xff\xfa'));
    const block = Buffer.alloc(64 * 1024, 0x20);
    for (let i = 0; i < 16; i++) decoder.feed(block);
    assert.equal(received, 16 * block.length - TELNET_SUBNEGOTIATION_LIMIT);

    // An IAC that is the last discarded byte stays pending: with the next byte it is a command.
    const cut = Buffer.concat([s('\xff\xfa'), Buffer.alloc(TELNET_SUBNEGOTIATION_LIMIT - 1, 0x78), s('\xff\xf3z')]);
    assert.deepEqual(decode([cut]), ['break', data('z')]);
  });

  it('never delivers empty buffers, and one buffer per chunk between breaks', () => {
    assert.deepEqual(decode([b(0xff), b(0xfd), b(0x01), b()]), []);
    assert.deepEqual(decode([s('a\xff\xff\xff\xf1b\xff\xfb\x01c\xff\xfa\x01\xff\xf0d')]), [data('a\xffbcd')]);
  });
});

// ---- property: any chunking of an encoded stream decodes to the model's output ----

/** One unit of a client's stream: its encoding, and what the guest should get. */
interface Token {
  readonly wire: readonly number[];
  readonly out: readonly number[];
  readonly isBreak?: true;
}

const byte = fc.integer({ min: 0, max: 0xff });
const nonIac = fc.integer({ min: 0, max: 0xfe });
const escapeIac = (bytes: readonly number[]): number[] => bytes.flatMap((x) => (x === 0xff ? [0xff, 0xff] : [x]));

const dataToken = fc.array(byte, { minLength: 1, maxLength: 20 }).map((bytes): Token => ({ wire: escapeIac(bytes), out: bytes }));
const optionToken = fc.tuple(fc.integer({ min: 0xfb, max: 0xfe }), byte).map(([verb, opt]): Token => ({ wire: [0xff, verb, opt], out: [] }));
/** Every 2-byte command: the named ones (not BREAK, SB) and the unassigned codes below EF. */
const commandToken = fc
  .integer({ min: 0, max: 0xf9 })
  .filter((c) => c !== 0xf3)
  .map((c): Token => ({ wire: [0xff, c], out: [] }));
const breakToken = fc.constant<Token>({ wire: [0xff, 0xf3], out: [], isBreak: true });
/** Payload pieces: plain bytes, escaped 0xFF, and malformed `IAC x` (x neither SE nor IAC). */
const subnegPiece = fc.oneof(
  nonIac.map((x) => [x]),
  fc.constant([0xff, 0xff]),
  fc
    .integer({ min: 0, max: 0xfe })
    .filter((x) => x !== 0xf0)
    .map((x) => [0xff, x]),
);
const subnegToken = fc.array(subnegPiece, { maxLength: 12 }).map((pieces): Token => ({ wire: [0xff, 0xfa, ...pieces.flat(), 0xff, 0xf0], out: [] }));
/** No SE: exactly one bound's worth of payload is discarded, then parsing resumes. */
const abandonedSubnegToken = nonIac.map(
  (fill): Token => ({
    wire: [0xff, 0xfa, ...new Array<number>(TELNET_SUBNEGOTIATION_LIMIT).fill(fill)],
    out: [],
  }),
);

const token = fc.oneof(
  { arbitrary: dataToken, weight: 6 },
  { arbitrary: optionToken, weight: 2 },
  { arbitrary: commandToken, weight: 2 },
  { arbitrary: breakToken, weight: 2 },
  { arbitrary: subnegToken, weight: 2 },
  { arbitrary: abandonedSubnegToken, weight: 1 },
);

/** The stream, the expected decoding, and cut points to split the stream at. */
const scenario = fc.array(token, { maxLength: 25 }).chain((tokens) => {
  const wire = Buffer.from(tokens.flatMap((t) => t.wire));
  const out: number[] = [];
  const breaks: number[] = [];
  for (const t of tokens) {
    if (t.isBreak) breaks.push(out.length);
    out.push(...t.out);
  }
  const cuts = fc.uniqueArray(fc.integer({ min: 0, max: wire.length }), { maxLength: 40 }).map((c) => c.sort((x, y) => x - y));
  return cuts.map((c) => ({ wire, expected: { data: Buffer.from(out), breaks }, cuts: c }));
});

function split(wire: Buffer, cuts: readonly number[]): Buffer[] {
  const pieces: Buffer[] = [];
  let from = 0;
  for (const c of [...cuts, wire.length]) {
    pieces.push(wire.subarray(from, c));
    from = c;
  }
  return pieces;
}

describe('telnet decoder properties', () => {
  it('any chunking yields the same data and break positions as one piece, and both match the model', () => {
    fc.assert(
      fc.property(scenario, ({ wire, expected, cuts }) => {
        const whole = decode([wire]);
        assert.deepEqual(flatten(whole), expected);
        assert.ok(whole.filter((e) => e !== 'break').length <= expected.breaks.length + 1, 'one buffer per run between breaks');
        assert.deepEqual(flatten(decode(split(wire, cuts))), expected);
      }),
      { numRuns: 200 },
    );
  });

  it('byte-at-a-time feeding matches the model', () => {
    fc.assert(
      fc.property(scenario, ({ wire, expected }) => {
        assert.deepEqual(flatten(decode([...wire].map((x) => Buffer.from([x])))), expected);
      }),
      { numRuns: 100 },
    );
  });
});
