/**
 * The domain `chardev run` uses when no FILE is given: the guest on a pty console, every
 * byte it writes also in a file log under the log directory, and a stdio device whose
 * output goes to the rotating domain log. Later issues add telnet and the browser console.
 */
export const DEFAULT_DOMAIN_NAME = 'chardev';

function xmlAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/'/g, '&apos;').replace(/</g, '&lt;').replace(/"/g, '&quot;');
}

/** The embedded default domain, with its serial log placed in `logDir`. */
export function defaultDomainXml(logDir: string): string {
  const serialLog = xmlAttr(`${logDir.replace(/\/+$/, '')}/serial0.log`);
  return `<domain type='kvm'>
  <name>${DEFAULT_DOMAIN_NAME}</name>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <devices>
    <serial type='pty'>
      <log file='${serialLog}' append='on'/>
      <target port='0'/>
    </serial>
    <serial type='stdio'>
      <target port='1'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>
`;
}
