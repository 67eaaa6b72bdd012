/** Network addresses as people and QEMU write them. */

/** A host in `host:port`: an IPv6 address goes in brackets (`[::1]:4555`), a name or IPv4 address as it is. */
export function bracketHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}
