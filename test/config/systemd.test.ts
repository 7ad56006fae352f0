import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { tempDir } from '../helpers/relay.js';

const UNIT = readFileSync(path.resolve('config/postern.service'), 'utf8');
const hasAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

describe('systemd unit', () => {
  it('runs unprivileged with only the capability to bind low ports, and reloads on SIGHUP', () => {
    const keys = new Map(UNIT.split('\n').filter((l) => /^[A-Z]\w+=/.test(l)).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
    expect(Object.fromEntries(['User', 'AmbientCapabilities', 'CapabilityBoundingSet', 'NoNewPrivileges', 'ProtectSystem', 'ReadWritePaths', 'Restart', 'ExecReload'].map((k) => [k, keys.get(k)]))).toEqual({
      User: 'postern',
      AmbientCapabilities: 'CAP_NET_BIND_SERVICE',
      CapabilityBoundingSet: 'CAP_NET_BIND_SERVICE',
      NoNewPrivileges: 'yes',
      ProtectSystem: 'strict',
      ReadWritePaths: '/var/lib/postern',
      Restart: 'on-failure',
      ExecReload: '/bin/kill -HUP $MAINPID',
    });
  });

  it.skipIf(!hasAnalyze)(`passes systemd-analyze verify${hasAnalyze ? '' : ' (skipped: systemd-analyze is not installed here)'}`, () => {
    // verify checks that ExecStart's binary exists on this machine; point it at this node.
    const dir = tempDir('postern-unit-');
    const file = path.join(dir, 'postern.service');
    writeFileSync(file, UNIT.replace('/usr/bin/node ', `${process.execPath} `));
    const out = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
    expect({ status: out.status, stderr: out.stderr.split('\n').filter((l) => l.includes('postern.service')).join('\n') }).toEqual({ status: 0, stderr: '' });
  });
});
