/** The QEMU command line `chardev qemu` builds: guest ports, hubs, the monitor, controllers. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { load } from '../core/helpers.ts';
import { ChardevError } from '../../src/errors.ts';
import * as net from 'node:net';
import { describePorts, planQemuPorts, qemuDeviceArgs } from '../../src/qemu/launch.ts';
import { QmpClient } from '../../src/control/qmp-client.ts';

const paths = { portSocket: (i: number) => `/run/x/p${i}`, qmpSocket: '/run/x/qmp' };

describe('chardev qemu: planning the guest ports', () => {
  it('one port per device; the console that is serial 0 is that same device', () => {
    const loaded = load(`<serial type='pty'/><serial type='null'/><console type='pty'><target type='serial' port='0'/></console>`);
    const ports = planQemuPorts(loaded);
    assert.deepEqual(
      ports.map((p) => [p.id, p.role, p.devices.map((d) => d.alias)]),
      [
        ['charserial0', 'frontend', ['serial0']],
        ['charserial1', 'frontend', ['serial1']],
      ],
    );
    assert.deepEqual(qemuDeviceArgs(ports, paths), [
      '-nodefaults',
      '-chardev',
      'socket,id=charmonitor,path=/run/x/qmp',
      '-mon',
      'chardev=charmonitor,id=monitor,mode=control',
      '-chardev',
      'socket,id=charserial0,path=/run/x/p0',
      '-device',
      '{"driver":"isa-serial","chardev":"charserial0","id":"serial0","index":0}',
      '-chardev',
      'socket,id=charserial1,path=/run/x/p1',
      '-device',
      '{"driver":"isa-serial","chardev":"charserial1","id":"serial1","index":1}',
    ]);
  });

  it('--hub folds devices into the first one’s port; --monitor gives a port to HMP instead of a frontend', () => {
    const loaded = load(`<serial type='pty'/><serial type='null'/><serial type='null'/><serial type='null'/>`);
    const ports = planQemuPorts(loaded, { hubs: [['serial0', 'charserial2']], monitors: ['serial3'] });
    assert.deepEqual(
      ports.map((p) => [p.id, p.role, p.devices.map((d) => d.alias)]),
      [
        ['charserial0', 'frontend', ['serial0', 'serial2']],
        ['charserial1', 'frontend', ['serial1']],
        ['charserial3', 'monitor', ['serial3']],
      ],
    );
    const args = qemuDeviceArgs(ports, paths, [], 'keyval');
    assert.deepEqual(args.slice(5), [
      '-chardev',
      'socket,id=charserial0,path=/run/x/p0',
      '-device',
      'isa-serial,chardev=charserial0,id=serial0,index=0',
      '-chardev',
      'socket,id=charserial1,path=/run/x/p1',
      '-device',
      'isa-serial,chardev=charserial1,id=serial1,index=1',
      '-chardev',
      'socket,id=charserial3,path=/run/x/p2',
      '-mon',
      'chardev=charserial3,mode=readline',
    ]);
    assert.deepEqual(describePorts(ports), [
      'charserial0, charserial2: guest serial0 (-device isa-serial)',
      'charserial1: guest serial1 (-device isa-serial)',
      'charserial3: QEMU monitor (HMP)',
    ]);
  });

  it('refuses unknown devices, a device in two hubs, a hub of one', () => {
    const loaded = load(`<serial type='pty'/><serial type='null'/>`);
    const refused = (f: () => unknown, re: RegExp) =>
      assert.throws(f, (e: unknown) => e instanceof ChardevError && e.code === 'ERR_USAGE' && re.test(e.message));
    refused(() => planQemuPorts(loaded, { monitors: ['serial7'] }), /^qemu: --monitor serial7: no device 'serial7' in domain t \(has: serial0, serial1\)$/);
    refused(
      () =>
        planQemuPorts(loaded, {
          hubs: [
            ['serial0', 'serial1'],
            ['serial1', 'serial0'],
          ],
        }),
      /serial1 is already in a hub/,
    );
    refused(() => planQemuPorts(loaded, { hubs: [['serial0']] }), /a hub joins at least two devices/);
  });

  it('virtio consoles and channels get their virtio-serial controller unless the command line has it; -nodefaults once; commas doubled', () => {
    const loaded = load(
      `<console type='pty'><target type='virtio'/></console><channel type='unix'><source mode='bind' path='/tmp/a,b'/><target type='virtio' name='org.example.0'/></channel>`,
    );
    const ports = planQemuPorts(loaded);
    const args = qemuDeviceArgs(ports, { portSocket: (i) => `/run/x,y/p${i}`, qmpSocket: '/run/x,y/qmp' });
    assert.ok(args.includes('{"driver":"virtio-serial-pci","id":"virtio-serial0"}'), args.join(' '));
    assert.ok(args.includes('socket,id=charchannel0,path=/run/x,,y/p0'), args.join(' '));
    assert.ok(
      args.some((a) =>
        a.startsWith('{"driver":"virtserialport","bus":"virtio-serial0.0","nr":1,"chardev":"charchannel0","id":"channel0","name":"org.example.0"}'),
      ),
      args.join(' '),
    );
    assert.ok(
      args.some((a) => a.startsWith('{"driver":"virtconsole"')),
      args.join(' '),
    );
    const user = ['-nodefaults', '-device', 'virtio-serial-pci,id=virtio-serial0'];
    const withUser = qemuDeviceArgs(ports, paths, user);
    assert.equal(withUser.filter((a) => a === '-nodefaults').length, 0, 'the user already said -nodefaults');
    assert.equal(
      withUser.some((a) => a.includes('virtio-serial-pci')),
      false,
      'the user has the controller',
    );
  });

  it('platform serials use -serial chardev:', () => {
    const loaded = load(`<serial type='pty'><target type='system-serial'><model name='pl011'/></target></serial>`);
    const args = qemuDeviceArgs(planQemuPorts(loaded), paths);
    assert.deepEqual(args.slice(-4), ['-chardev', 'socket,id=charserial0,path=/run/x/p0', '-serial', 'chardev:charserial0']);
  });
});

describe('chardev qemu: the QMP connection QEMU opens to chardev', () => {
  it('QmpClient.over negotiates on a connected stream; QEMU resetting the connection as it quits is no error', { timeout: 10000 }, async () => {
    const [ours, theirs] = await new Promise<[net.Socket, net.Socket]>((resolve) => {
      const server = net.createServer((s) => {
        server.close();
        resolve([client, s]);
      });
      let client: net.Socket;
      server.listen(0, '127.0.0.1', () => {
        client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
      });
    });
    // The QEMU side: greeting, then an empty return for each command; `quit` ends in a reset.
    theirs.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
    theirs.on('data', (b: Buffer) => {
      for (const line of b
        .toString()
        .split('\n')
        .filter((l) => l.trim() !== '')) {
        theirs.write('{"return": {}}\r\n');
        if (line.includes('"quit"')) setTimeout(() => theirs.resetAndDestroy(), 20);
      }
    });
    const qmp = await QmpClient.over(ours, 2000);
    assert.deepEqual(await qmp.execute('quit'), {});
    await new Promise((r) => ours.once('close', r));
    await qmp.close();
  });
});
