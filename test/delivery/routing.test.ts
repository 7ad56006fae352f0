import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createResolver } from '../../src/dns/resolver.js';
import { Router, type Route } from '../../src/delivery/routing.js';
import { startDnsServer, type DnsServer, type Rr } from '../helpers/dnsd.js';

let dns: DnsServer;
beforeAll(async () => {
  dns = await startDnsServer();
});
afterAll(() => dns.close());

const mx = (name: string, preference: number, exchange: string): Rr => ({ type: 'MX', name, data: { preference, exchange } });
const a = (name: string, data: string): Rr => ({ type: 'A', name, data });

function router(random: () => number = () => 0, smarthost = '') {
  return new Router({ resolver: createResolver([dns.address]), port: 2525, smarthost, random, family: 4 });
}
const names = (r: Route) => (r.kind === 'hosts' ? r.hosts.map((h) => h.name) : r);

describe('MX routing over a real DNS server', () => {
  it.each([
    ['orders MX hosts by preference', [mx('d.example', 30, 'c.d.example'), mx('d.example', 10, 'a.d.example'), mx('d.example', 20, 'b.d.example')], ['a.d.example', 'b.d.example', 'c.d.example']],
    ['skips an MX host without an address', [mx('d.example', 10, 'nowhere.d.example'), mx('d.example', 20, 'b.d.example')], ['b.d.example']],
    ['uses the domain itself as implicit MX without MX records', [a('d.example', '127.0.0.5')], ['d.example']],
  ] as const)('%s', async (_name, records, expected) => {
    dns.setRecords([...records, a('a.d.example', '127.0.0.2'), a('b.d.example', '127.0.0.3'), a('c.d.example', '127.0.0.4')]);
    expect(names(await router().route('d.example'))).toEqual(expected);
  });

  it('shuffles MX hosts of equal preference with the injected random source', async () => {
    dns.setRecords([mx('d.example', 10, 'a.d.example'), mx('d.example', 10, 'b.d.example'), mx('d.example', 5, 'c.d.example'), a('a.d.example', '127.0.0.2'), a('b.d.example', '127.0.0.3'), a('c.d.example', '127.0.0.4')]);
    const orders = new Set<string>();
    for (const r of [0, 0.99]) {
      const route = await router(() => r).route('d.example');
      const order = names(route) as string[];
      expect(order[0]).toBe('c.d.example');
      orders.add(order.join(','));
    }
    expect(orders).toEqual(new Set(['c.d.example,a.d.example,b.d.example', 'c.d.example,b.d.example,a.d.example']));
  });

  it.each([
    ['a null MX fails permanently with 5.1.10', [mx('d.example', 0, '.')], { kind: 'fail', status: '5.1.10' }],
    ['a domain that does not exist fails permanently with 5.1.2', [], { kind: 'fail', status: '5.1.2' }],
    ['a domain with neither MX nor address fails with 5.1.2', [{ type: 'TXT', name: 'd.example', data: 'v=spf1 -all' } as Rr], { kind: 'fail', status: '5.1.2' }],
    ['MX hosts that all lack addresses defer with 4.4.3', [mx('d.example', 10, 'nowhere.d.example')], { kind: 'defer', status: '4.4.3' }],
  ] as const)('%s', async (_name, records, expected) => {
    dns.setRecords([...records]);
    expect(await router().route('d.example')).toMatchObject(expected);
  });

  it('sends everything to the smarthost when one is set', async () => {
    dns.setRecords([a('relay.isp.example', '127.0.0.7')]);
    expect(await router(undefined, 'relay.isp.example:587').route('anything.example')).toEqual({
      kind: 'hosts',
      hosts: [{ name: 'relay.isp.example', addresses: ['127.0.0.7'], port: 587 }],
    });
  });
});
