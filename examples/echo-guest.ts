/**
 * A guest written in Node: an "emulator" whose serial port echoes what it
 * receives, upper-cased. Run it, then attach to the printed pty:
 *
 *   npx tsx examples/echo-guest.ts
 *   socat -,raw,echo=0 /dev/pts/N      # in another terminal; Ctrl-C in the first to stop
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { open } from '../src/index.ts';

const dir = mkdtempSync(join(tmpdir(), 'chardev-example-'));
const domain = await open(
  `<domain><name>echo</name><os><type arch='x86_64'>hvm</type></os><devices>
     <serial type='pty'><log file='${dir}/serial0.log'/></serial>
   </devices></domain>`,
  { logDir: dir },
);
const serial = domain.device('serial0');
if (!serial) throw new Error('no serial0');
serial.on('open', () => serial.write(Buffer.from('echo guest ready\r\n')));
serial.on('data', (bytes: Buffer) => serial.write(Buffer.from(bytes.toString('latin1').toUpperCase(), 'latin1')));
for (const line of domain.describe()) process.stdout.write(`${line}\n`);
process.stdout.write(`guest output is also logged to ${dir}/serial0.log\n`);
const stop = () => void domain.stop().then(() => process.exit(0));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
