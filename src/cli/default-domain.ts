/**
 * The domain `chardev run` uses when no FILE is given: the guest on a pty console, every
 * byte it writes also in a file log under the log directory, a stdio device whose output
 * goes to the rotating domain log, an owner-only UNIX socket in the run directory, and a
 * virtual console in the browser (`vc`, served on 127.0.0.1 at a free port, behind a
 * token). Nothing in it is reachable from another user or the network: the shell it
 * serves is only the user's. `--telnet HOST:PORT` adds a telnet server — on request only,
 * since whoever reaches it gets the shell.
 *
 * The consoles the guest is on keep 1 MiB of history and take up to 8 clients (one
 * writer, the rest viewers). They also set a 30 s stall limit: the shell is shared by
 * several consoles, and a writer left suspended (a `chardev console` stopped with ^Z, a
 * frozen tab) must not freeze it for the others; a writer that reads again holds the
 * shell again.
 */
import type { WebAddress } from './args.ts';

export const DEFAULT_DOMAIN_NAME = 'chardev';

/** The guest shell is on the pty console, the UNIX socket and the browser console (and the telnet server, when asked for). */
export function defaultDomainAttach(telnet: boolean): string[] {
  return telnet ? ['serial0', 'serial2', 'serial3', 'serial4'] : ['serial0', 'serial2', 'serial3'];
}

/** The UNIX socket device's path in the run directory. */
export function defaultSocketPath(runDir: string): string {
  return `${runDir.replace(/\/+$/, '')}/${DEFAULT_DOMAIN_NAME}.sock`;
}

function xmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
}

export interface DefaultDomainOptions {
  /** Where `serial0.log` goes. */
  readonly logDir: string;
  /** Where the UNIX socket goes (the run directory: private, 0700). */
  readonly runDir: string;
  /** A telnet server there too (serial4): only when the user asked for it. */
  readonly telnet?: WebAddress;
}

const SHARED_CONSOLE = `      <cd:history size='1048576'/>
      <cd:clients max='8'/>
      <cd:stall timeout='30'/>`;

/** The embedded default domain. */
export function defaultDomainXml(o: DefaultDomainOptions): string {
  const serialLog = xmlAttr(`${o.logDir.replace(/\/+$/, '')}/serial0.log`);
  const telnet =
    o.telnet === undefined
      ? ''
      : `
    <serial type='tcp'>
      <source mode='bind' host='${xmlAttr(o.telnet.host)}' service='${o.telnet.port}'/>
      <protocol type='telnet'/>
      <target port='4'/>
${SHARED_CONSOLE}
    </serial>`;
  return `<domain type='kvm' xmlns:cd='urn:chardev:1'>
  <name>${DEFAULT_DOMAIN_NAME}</name>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <devices>
    <serial type='pty'>
      <log file='${serialLog}' append='on'/>
      <target port='0'/>
${SHARED_CONSOLE}
    </serial>
    <serial type='stdio'>
      <target port='1'/>
    </serial>
    <serial type='unix'>
      <source mode='bind' path='${xmlAttr(defaultSocketPath(o.runDir))}'/>
      <target port='2'/>
${SHARED_CONSOLE}
    </serial>
    <serial type='vc'>
      <target port='3'/>
${SHARED_CONSOLE}
    </serial>${telnet}
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;
}
