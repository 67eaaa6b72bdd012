/**
 * A QMP session in Python, speaking the wire protocol with nothing but socket + json, as any
 * QMP client would: the tests' independent peer for the control socket.
 */
import { spawn } from 'node:child_process';

/**
 * A QMP client in Python. stdin: a JSON list of steps; stdout: one JSON line per step,
 * {"lines": [raw messages], "events": [raw events skipped while waiting], "eof": bool}.
 * Steps: {"connect": C} (reads the greeting) · {"conn": C, "send": TEXT, "read": N}
 * (N non-event messages, default 1) · {"conn": C, "sendRepeat": [HEAD, FILL, COUNT]}
 * · {"conn": C, "untilEvent": NAME} · {"conn": C, "expectEof": true} · {"openPty": PATH,
 * "as": F} · {"closeFd": F} · {"tcpConnect": PORT, "as": F} (adds "local": its port) ·
 * {"closeSock": F} · {"sleep": SECONDS}. Every socket read times out after 5 s.
 */
const PY = String.raw`
import json, os, socket, sys, time
path = sys.argv[1]
steps = json.loads(sys.stdin.read())
conns = {}
bufs = {}
fds = {}
def read_msg(c):
    while b'\r\n' not in bufs[c]:
        chunk = conns[c].recv(65536)
        if not chunk:
            return None
        bufs[c] += chunk
    line, bufs[c] = bufs[c].split(b'\r\n', 1)
    return line.decode('ascii')
for st in steps:
    out = {'lines': [], 'events': [], 'eof': False}
    if 'connect' in st:
        c = st['connect']
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(path)
        conns[c] = s
        bufs[c] = b''
        out['lines'].append(read_msg(c))
    elif 'openPty' in st:
        fds[st['as']] = os.open(st['openPty'], os.O_RDWR | os.O_NOCTTY)
    elif 'closeFd' in st:
        os.close(fds.pop(st['closeFd']))
    elif 'tcpConnect' in st:
        t = socket.create_connection(('127.0.0.1', st['tcpConnect']), timeout=5)
        fds[st['as']] = t
        out['local'] = t.getsockname()[1]
    elif 'closeSock' in st:
        fds.pop(st['closeSock']).close()
    elif 'sleep' in st:
        time.sleep(st['sleep'])
    else:
        c = st['conn']
        try:
            if 'send' in st:
                conns[c].sendall(st['send'].encode())
            if 'sendRepeat' in st:
                head, fill, count = st['sendRepeat']
                conns[c].sendall(head.encode() + fill.encode() * count)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if 'untilEvent' in st:
            while True:
                m = read_msg(c)
                if m is None:
                    out['eof'] = True
                    break
                if json.loads(m).get('event') == st['untilEvent']:
                    out['lines'].append(m)
                    break
                out['events'].append(m)
        elif st.get('expectEof'):
            try:
                while True:
                    m = read_msg(c)
                    if m is None:
                        out['eof'] = True
                        break
                    out['lines'].append(m)
            except ConnectionResetError:
                out['eof'] = True
        else:
            for _ in range(st.get('read', 1)):
                while True:
                    m = read_msg(c)
                    if m is None:
                        out['eof'] = True
                        break
                    if 'event' in json.loads(m):
                        out['events'].append(m)
                        continue
                    out['lines'].append(m)
                    break
                if out['eof']:
                    break
    print(json.dumps(out), flush=True)
`;

export interface StepResult {
  readonly lines: string[];
  readonly events: string[];
  readonly eof: boolean;
  readonly local?: number;
}
export type Step = Record<string, unknown>;

/** Run one Python session; rejects if it fails or takes longer than `timeoutMs`. */
export function pyQmp(socketPath: string, steps: Step[], timeoutMs = 10000): Promise<StepResult[]> {
  return new Promise((resolve, reject) => {
    const child = spawn('python3', ['-c', PY, socketPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`python QMP session timed out after ${timeoutMs} ms; stdout so far:\n${out}\nstderr:\n${err}`));
    }, timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) {
        reject(new Error(`python QMP session exited ${code}:\n${err}\nstdout:\n${out}`));
        return;
      }
      resolve(
        out
          .trim()
          .split('\n')
          .map((l) => JSON.parse(l) as StepResult),
      );
    });
    child.stdin.end(JSON.stringify(steps));
  });
}

export const NEGOTIATE: Step[] = [{ connect: 'a' }, { conn: 'a', send: '{"execute": "qmp_capabilities"}' }];
