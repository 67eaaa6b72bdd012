/**
 * The configuration model: plain data for libvirt's character devices.
 * Mirrors libvirt's virDomainChrDef (host side `source` + guest side `target`).
 * Nothing here knows about sockets or files; the runtime consumes these values
 * and never re-reads XML.
 */

/** Host interface types, in libvirt's enum order (virDomainChr). */
export const CHR_TYPES = [
  'null',
  'vc',
  'pty',
  'dev',
  'file',
  'pipe',
  'stdio',
  'udp',
  'tcp',
  'unix',
  'spicevmc',
  'spiceport',
  'nmdm',
  'qemu-vdagent',
  'dbus',
] as const;
export type ChrType = (typeof CHR_TYPES)[number];

/** Device element kinds, in libvirt's enum order (virDomainChrDevice). */
export const DEVICE_KINDS = ['parallel', 'serial', 'console', 'channel'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

export const SOURCE_MODES = ['connect', 'bind'] as const;
export type SourceMode = (typeof SOURCE_MODES)[number];

export const TCP_PROTOCOLS = ['raw', 'telnet', 'telnets', 'tls'] as const;
export type TcpProtocol = (typeof TCP_PROTOCOLS)[number];

export type OnOff = 'on' | 'off';
export type YesNo = 'yes' | 'no';

export const SERIAL_TARGET_TYPES = ['isa-serial', 'usb-serial', 'pci-serial', 'spapr-vio-serial', 'system-serial', 'sclp-serial', 'isa-debug'] as const;
export type SerialTargetType = (typeof SERIAL_TARGET_TYPES)[number];

export const SERIAL_TARGET_MODELS = [
  'isa-serial',
  'usb-serial',
  'pci-serial',
  'spapr-vty',
  'pl011',
  '16550a',
  'sclpconsole',
  'sclplmconsole',
  'isa-debugcon',
] as const;
export type SerialTargetModel = (typeof SERIAL_TARGET_MODELS)[number];

export const CONSOLE_TARGET_TYPES = ['serial', 'xen', 'uml', 'virtio', 'lxc', 'openvz', 'sclp', 'sclplm'] as const;
export type ConsoleTargetType = (typeof CONSOLE_TARGET_TYPES)[number];

export const CHANNEL_TARGET_TYPES = ['guestfwd', 'virtio', 'xen'] as const;
export type ChannelTargetType = (typeof CHANNEL_TARGET_TYPES)[number];

export type ChannelState = 'connected' | 'disconnected';

/** `<seclabel>` inside `<source>`: a per-device security label override. */
export interface SeclabelDef {
  model?: string;
  relabel?: YesNo;
  labelskip?: YesNo;
  label?: string;
}

/** `<reconnect enabled timeout>`; the timeout is in seconds, as in the XML. */
export interface ReconnectDef {
  enabled: YesNo;
  timeoutSec?: number;
}

/** `<log file append>`: every byte the guest writes is copied here too. */
export interface LogDef {
  file: string;
  append?: OnOff;
}

interface SourceCommon {
  log?: LogDef;
  seclabels: SeclabelDef[];
}

export type NullSourceDef = SourceCommon & { type: 'null' };
export type VcSourceDef = SourceCommon & { type: 'vc' };
export type StdioSourceDef = SourceCommon & { type: 'stdio' };
export type SpicevmcSourceDef = SourceCommon & { type: 'spicevmc' };
/** `path` exists only in live definitions (the allocated slave). */
export type PtySourceDef = SourceCommon & { type: 'pty'; path?: string };
export type DevSourceDef = SourceCommon & { type: 'dev'; path?: string };
export type PipeSourceDef = SourceCommon & { type: 'pipe'; path?: string };
export type FileSourceDef = SourceCommon & {
  type: 'file';
  path?: string;
  append?: OnOff;
  /**
   * QEMU's `in`/`input-path`: a file or FIFO whose bytes are the guest's input. Only QMP's
   * chardev-add sets it; libvirt has no XML for it, so it is never parsed or formatted.
   */
  input?: string;
};
export type UdpSourceDef = SourceCommon & {
  type: 'udp';
  bindHost?: string;
  bindService?: string;
  connectHost?: string;
  connectService?: string;
};
export type TcpSourceDef = SourceCommon & {
  type: 'tcp';
  mode: SourceMode;
  host?: string;
  service?: string;
  protocol: TcpProtocol;
  /** The XML's `tls=` attribute; absent means "as configured for the run" (qemu.conf chardev_tls). */
  tls?: YesNo;
  reconnect?: ReconnectDef;
};
export type UnixSourceDef = SourceCommon & {
  type: 'unix';
  mode: SourceMode;
  path?: string;
  reconnect?: ReconnectDef;
};
export type SpiceportSourceDef = SourceCommon & { type: 'spiceport'; channel?: string };
export type DbusSourceDef = SourceCommon & { type: 'dbus'; channel?: string };
export type NmdmSourceDef = SourceCommon & { type: 'nmdm'; master?: string; slave?: string };
export type QemuVdagentSourceDef = SourceCommon & {
  type: 'qemu-vdagent';
  clipboardCopypaste?: YesNo;
  mouseMode?: 'client' | 'server';
};

/** The host side of a device: a tagged union on `type`. */
export type ChrSourceDef =
  | NullSourceDef
  | VcSourceDef
  | PtySourceDef
  | DevSourceDef
  | FileSourceDef
  | PipeSourceDef
  | StdioSourceDef
  | UdpSourceDef
  | TcpSourceDef
  | UnixSourceDef
  | SpicevmcSourceDef
  | SpiceportSourceDef
  | NmdmSourceDef
  | QemuVdagentSourceDef
  | DbusSourceDef;

/** `<address type=…>` with its attributes in the order libvirt writes them. */
export interface AddressDef {
  type: string;
  attrs: Array<[string, string]>;
}

/** Guest-facing device information shared by every kind. */
export interface DeviceInfoDef {
  /** A user alias (`<alias name='ua-…'/>`); libvirt keeps only these in inactive XML. */
  userAlias?: string;
  address?: AddressDef;
  acpiIndex?: number;
}

export interface SerialTargetDef {
  type?: SerialTargetType;
  port?: number;
  model?: SerialTargetModel;
}
export interface ParallelTargetDef {
  port?: number;
}
export interface ConsoleTargetDef {
  type?: ConsoleTargetType;
  port?: number;
}
export interface ChannelTargetDef {
  type: ChannelTargetType;
  /** virtio / xen port name. */
  name?: string;
  state?: ChannelState;
  /** guestfwd: IPv4 address and port the guest connects to. */
  address?: string;
  port?: number;
}

/** `<chardev:tls dir verify>`: per-device x509 credentials, overriding the run's. */
export interface TlsExtensionDef {
  /** Directory in libvirt's layout (ca-cert.pem, server-cert.pem, …). */
  dir?: string;
  verifyPeer?: boolean;
}

/** `<chardev:history size>`: a ring of recent guest output replayed to late clients. */
export interface HistoryExtensionDef {
  sizeBytes: number;
}

/** `<chardev:clients max queue slow>`: many clients at once, one writer, bounded queues. */
export interface ClientsExtensionDef {
  max: number;
  /** Per-client output queue bound. */
  queueBytes?: number;
  /** What happens to a client whose queue is full. */
  slow?: 'drop' | 'disconnect';
}

/**
 * `<chardev:stall timeout action>`: a client that holds the guest (the writer) but has taken
 * no output for `timeoutSec` stops holding it — it misses output until it catches up
 * (`drop`), or is disconnected. Without it a stalled client holds the guest, as in QEMU.
 */
export interface StallExtensionDef {
  timeoutSec: number;
  action: 'drop' | 'disconnect';
}

/**
 * `<chardev:rotate size backups>`: rotate the device's `<log>` file (and a `file` device's
 * file) by size, like virtlogd rotates the domain log.
 */
export interface RotateExtensionDef {
  /** Rotate before the active file would grow past this many bytes (`size`). */
  maxBytes: number;
  /** Rotated files kept: `.1` (newest) … `.N`. */
  backups: number;
}

/** `<chardev:web listen port>`: where the domain's browser console server listens. */
export interface WebExtensionDef {
  listen?: string;
  port?: number;
}

/** Typed settings from the `urn:chardev:1` elements of one device. */
export interface DeviceExtensions {
  web?: WebExtensionDef;
  tls?: TlsExtensionDef;
  history?: HistoryExtensionDef;
  clients?: ClientsExtensionDef;
  rotate?: RotateExtensionDef;
  stall?: StallExtensionDef;
}

interface DeviceCommon {
  source: ChrSourceDef;
  info: DeviceInfoDef;
  /** Extension elements in the urn:chardev:1 namespace, kept verbatim (serialised XML). */
  extensions: string[];
  /** What those elements configure. */
  ext: DeviceExtensions;
  /** 1-based line of the element in its document. */
  line?: number;
}

export type SerialDef = DeviceCommon & { kind: 'serial'; target: SerialTargetDef };
export type ParallelDef = DeviceCommon & { kind: 'parallel'; target: ParallelTargetDef };
export type ConsoleDef = DeviceCommon & {
  kind: 'console';
  target: ConsoleTargetDef;
  /**
   * Set by console compatibility: this console is serial port N seen again
   * (libvirt's stub console). It has no chardev of its own and is formatted
   * with serial N's source.
   */
  aliasOfSerial?: number;
};
export type ChannelDef = DeviceCommon & { kind: 'channel'; target: ChannelTargetDef };

export type ChrDeviceDef = SerialDef | ParallelDef | ConsoleDef | ChannelDef;

/** virtio-serial controllers, read for channel/console address assignment only. */
export interface VirtioSerialControllerDef {
  index: number;
  ports?: number;
  /**
   * Not in the document: libvirt added it for a virtio channel or console that needed it
   * (formatted as a new `<controller type='virtio-serial'>`, as libvirt prints it).
   */
  implicit?: true;
}

export interface DomainChardevsDef {
  /** `<name>`, when the document is a whole domain. */
  name?: string;
  /** `<os><type>` (hvm, xen, linux, exe). */
  osType?: string;
  arch?: string;
  machine?: string;
  serials: SerialDef[];
  parallels: ParallelDef[];
  consoles: ConsoleDef[];
  channels: ChannelDef[];
  virtioSerialControllers: VirtioSerialControllerDef[];
  /** Whether the domain has `<graphics type='spice'>` (undefined for a lone device element). */
  spiceGraphics?: boolean;
}

/** Runtime facts that exist only while a domain runs (live XML). */
export interface LiveState {
  /** Allocated pty slave paths by device alias (`serial0` → `/dev/pts/3`). */
  ptyPaths?: ReadonlyMap<string, string>;
  /** Actually bound TCP/UDP ports by device alias, where the XML said service='0'. */
  boundServices?: ReadonlyMap<string, string>;
}
