import dgram from 'node:dgram';
import dnsPacket, { type Answer, type Question } from 'dns-packet';

/**
 * A real authoritative DNS server on loopback UDP for tests (no mocked resolver).
 * Records are plain objects; names are matched case-insensitively without the trailing dot.
 */
export type Rr =
  | { type: 'A' | 'AAAA' | 'CNAME' | 'PTR' | 'NS'; name: string; data: string; ttl?: number }
  | { type: 'MX'; name: string; data: { preference: number; exchange: string }; ttl?: number }
  | { type: 'TXT'; name: string; data: string | string[]; ttl?: number }
  | { type: 'SRV'; name: string; data: { priority: number; weight: number; port: number; target: string }; ttl?: number }
  | { type: 'RP'; name: string; data: { mbox: string; txt: string }; ttl?: number }
  /** Not a record: questions about `name` (of type `data` only, when given) get SERVFAIL. */
  | { type: 'SERVFAIL'; name: string; data?: string; ttl?: number };

export interface DnsServer {
  /** "127.0.0.1:PORT", ready for [delivery] dns_servers. */
  address: string;
  port: number;
  /** Replace the zone (break it one way at a time). */
  setRecords(records: Rr[]): void;
  /** Questions received so far, "TYPE name". */
  readonly log: string[];
  close(): Promise<void>;
}

const norm = (n: string) => n.toLowerCase().replace(/\.$/, '');

/** The PTR owner name of an IPv4 or IPv6 address (in-addr.arpa / ip6.arpa). */
export function reverseName(ip: string): string {
  if (ip.includes(':')) {
    const parts = ip.split('::');
    const head = parts[0] ? parts[0].split(':') : [];
    const tail = parts.length > 1 && parts[1] ? parts[1].split(':') : [];
    const groups = [...head, ...Array(8 - head.length - tail.length).fill('0'), ...tail];
    const nibbles = groups.map((g) => g.padStart(4, '0')).join('');
    return `${nibbles.split('').reverse().join('.')}.ip6.arpa`;
  }
  return `${ip.split('.').reverse().join('.')}.in-addr.arpa`;
}

function answer(rr: Rr): Answer {
  const ttl = rr.ttl ?? 60;
  if (rr.type === 'TXT') {
    // One TXT record may hold several strings; long ones are split at 255 bytes.
    const strings = (Array.isArray(rr.data) ? rr.data : [rr.data]).flatMap((s) => s.match(/[\s\S]{1,255}/g) ?? ['']);
    return { type: 'TXT', name: rr.name, ttl, data: strings } as Answer;
  }
  return { type: rr.type, name: rr.name, ttl, data: rr.data } as Answer;
}

export async function startDnsServer(records: Rr[] = []): Promise<DnsServer> {
  let zone = records;
  const log: string[] = [];
  const socket = dgram.createSocket('udp4');

  function resolve(q: Question): { rcode: 'NOERROR' | 'NXDOMAIN' | 'SERVFAIL'; answers: Answer[] } {
    if (zone.some((r) => r.type === 'SERVFAIL' && norm(r.name) === norm(q.name) && (!r.data || r.data === q.type))) return { rcode: 'SERVFAIL', answers: [] };
    const answers: Answer[] = [];
    let name = norm(q.name);
    for (let hops = 0; hops < 8; hops++) {
      const here = zone.filter((r) => norm(r.name) === name);
      if (!here.length) return { rcode: answers.length ? 'NOERROR' : 'NXDOMAIN', answers };
      const cname = here.find((r) => r.type === 'CNAME');
      if (cname && q.type !== 'CNAME') {
        answers.push(answer(cname));
        name = norm(cname.data as string);
        continue;
      }
      answers.push(...here.filter((r) => r.type === q.type || (q.type as string) === 'ANY').map(answer));
      return { rcode: 'NOERROR', answers };
    }
    return { rcode: 'NOERROR', answers };
  }

  socket.on('message', (msg, rinfo) => {
    let query;
    try {
      query = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const q = query.questions?.[0];
    if (!q) return;
    log.push(`${q.type} ${norm(q.name)}`);
    const { rcode, answers } = resolve(q);
    const flags = dnsPacket.AUTHORITATIVE_ANSWER | { NOERROR: 0, SERVFAIL: 2, NXDOMAIN: 3 }[rcode];
    const res = dnsPacket.encode({ id: query.id, type: 'response', flags, questions: [q], answers });
    socket.send(res, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const port = socket.address().port;
  return {
    address: `127.0.0.1:${port}`,
    port,
    setRecords: (r) => {
      zone = r;
    },
    log,
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}
