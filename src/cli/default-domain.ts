/**
 * The domain `chardev run` uses when no FILE is given: the guest on a pty console, every
 * byte it writes also in a file log under the log directory, and a stdio device whose
 * output goes to the rotating domain log, a telnet server on 127.0.0.1, and a virtual
 * console in the browser (`vc`, served on 127.0.0.1 at a free port); the three the guest is
 * on keep 1 MiB of history and take up to 8 clients (one writer, the rest viewers).
 * They also set a 30 s stall limit: the shell is shared by three consoles, and a writer
 * left suspended (a `chardev console` stopped with ^Z, a frozen tab) must not freeze it
 * for the others; a writer that reads again holds the shell again.
 */
export const DEFAULT_DOMAIN_NAME = 'chardev';

/** The guest shell is on the pty console, the telnet server and the browser console. */
export const DEFAULT_DOMAIN_ATTACH: readonly string[] = ['serial0', 'serial2', 'serial3'];

function xmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
}

/** Loopback only; `service='0'` would pick a free port, but a fixed one can be typed from memory. */
export const DEFAULT_TELNET_PORT = 4555;

/** The embedded default domain, with its serial log placed in `logDir`. */
export function defaultDomainXml(logDir: string, telnetPort = DEFAULT_TELNET_PORT): string {
  const serialLog = xmlAttr(`${logDir.replace(/\/+$/, '')}/serial0.log`);
  return `<domain type='kvm' xmlns:cd='urn:chardev:1'>
  <name>${DEFAULT_DOMAIN_NAME}</name>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <devices>
    <serial type='pty'>
      <log file='${serialLog}' append='on'/>
      <target port='0'/>
      <cd:history size='1048576'/>
      <cd:clients max='8'/>
      <cd:stall timeout='30'/>
    </serial>
    <serial type='stdio'>
      <target port='1'/>
    </serial>
    <serial type='tcp'>
      <source mode='bind' host='127.0.0.1' service='${telnetPort}'/>
      <protocol type='telnet'/>
      <target port='2'/>
      <cd:history size='1048576'/>
      <cd:clients max='8'/>
      <cd:stall timeout='30'/>
    </serial>
    <serial type='vc'>
      <target port='3'/>
      <cd:history size='1048576'/>
      <cd:clients max='8'/>
      <cd:stall timeout='30'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;
}
