/**
 * The one domain document builder of the tests: an x86 KVM domain named `name` with the given
 * device elements. chardev's extension namespace (`cd:`) is declared whenever the devices use
 * it, so no test patches it in.
 */
export const CD_NAMESPACE = 'urn:chardev:1';

export function domainXml(devices: string, name = 't'): string {
  const ns = devices.includes('<cd:') ? ` xmlns:cd='${CD_NAMESPACE}'` : '';
  return `<domain type='kvm'${ns}>\n  <name>${name}</name>\n  <os><type arch='x86_64'>hvm</type></os>\n  <devices>\n${devices}\n  </devices>\n</domain>\n`;
}
