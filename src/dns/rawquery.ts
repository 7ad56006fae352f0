import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { isIP } from 'node:net';
import dnsPacket, { type Answer, type RecordType } from 'dns-packet';

/** An error shaped like node:dns's, so callers treat both alike. */
class DnsError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** "127.0.0.1:5353", "[::1]:53", "192.0.2.1", "2001:db8::1" as node's Resolver.getServers() gives them. */
export function parseServer(s: string): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return { host: v6[1]!, port: Number(v6[2] ?? 53) };
  if (isIP(s) === 6) return { host: s, port: 53 };
  const [host, port] = s.split(':');
  return { host: host!, port: Number(port ?? 53) };
}

/**
 * One question to one server over UDP: the reply's rcode, AD flag and answers. Only the
 * server's own reply counts (its id, source address and port); a truncated one is an error.
 */
function exchange(server: string, name: string, type: RecordType, timeoutMs: number, ad: boolean): Promise<SecureAnswer> {
  const { host, port } = parseServer(server);
  const socket = dgram.createSocket(isIP(host) === 6 ? 'udp6' : 'udp4');
  const id = randomInt(0, 65_536);
  return new Promise<SecureAnswer>((resolve, reject) => {
    const timer = setTimeout(() => finish(new DnsError(`query ${type} ${name} to ${server} timed out`, 'ETIMEOUT')), timeoutMs);
    let done = false;
    function finish(err: Error | null, res?: SecureAnswer) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(res!);
    }
    socket.on('error', (e) => finish(e));
    socket.on('message', (msg, rinfo) => {
      let res;
      try {
        res = dnsPacket.decode(msg);
      } catch {
        return;
      }
      // A reply with another id or from elsewhere is a stray or a spoofing attempt, not our answer.
      if (res.id !== id || rinfo.port !== port || (isIP(host) && rinfo.address !== host)) return;
      if (ad && res.flag_tc) return finish(new DnsError(`query ${type} ${name} to ${server}: answer truncated`, 'ETRUNCATED'));
      finish(null, { rcode: (res.flags ?? 0) & 0xf, secure: res.flag_ad === true, answers: res.answers ?? [] });
    });
    // With the AD bit (RFC 6840 5.7) and EDNS for TLSA sets over 512 bytes; no DO bit: the
    // signatures are the resolver's business.
    const query = ad
      ? dnsPacket.encode({
          type: 'query',
          id,
          flags: dnsPacket.RECURSION_DESIRED | dnsPacket.AUTHENTIC_DATA,
          questions: [{ type, name }],
          additionals: [{ type: 'OPT', name: '.', udpPayloadSize: 1232 } as Answer],
        })
      : dnsPacket.encode({ type: 'query', id, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
    socket.send(query, port, host);
  });
}

/** NXDOMAIN is an empty answer; any other failure rcode is an error shaped like node:dns's. */
async function askOne(server: string, name: string, type: RecordType, timeoutMs: number): Promise<Answer[]> {
  const res = await exchange(server, name, type, timeoutMs, false);
  if (res.rcode === 3) return [];
  if (res.rcode !== 0) throw new DnsError(`query ${type} ${name}: server ${server} answered rcode ${res.rcode}`, res.rcode === 2 ? 'ESERVFAIL' : 'EREFUSED');
  return res.answers;
}

/**
 * One question over UDP to the same servers the Resolver uses, for record types node:dns cannot
 * ask (RP). NXDOMAIN is an empty answer; a timeout moves on to the next server. Answers to such
 * questions are small, so a truncated reply is not retried over TCP.
 */
export async function rawQuery(servers: string[], name: string, type: RecordType, timeoutMs = 2000): Promise<Answer[]> {
  let last: Error = new DnsError('no DNS servers configured', 'ECONNREFUSED');
  for (const server of servers) {
    try {
      return await askOne(server, name, type, timeoutMs);
    } catch (e) {
      last = e as Error;
    }
  }
  throw last;
}

/** A validating resolver's answer: its rcode, whether it vouched for the data (AD), and the records. */
export interface SecureAnswer {
  /** 0 NOERROR, 2 SERVFAIL (a validating resolver's answer to bogus data), 3 NXDOMAIN. */
  rcode: number;
  /** The resolver validated the answer with DNSSEC (the AD flag; RFC 6840 5.7: asked for with the AD bit). */
  secure: boolean;
  answers: Answer[];
}

/**
 * One question with the AD bit set, for DANE (RFC 7672): only a resolver this host trusts
 * (on loopback) can be believed when it says an answer is secure. A timeout moves on to the
 * next server; any rcode is returned, not thrown: SERVFAIL from a validating resolver is how
 * bogus data looks, and the caller decides.
 */
export async function secureQuery(servers: string[], name: string, type: RecordType, timeoutMs = 2000): Promise<SecureAnswer> {
  let last: Error = new DnsError('no DNS servers configured', 'ECONNREFUSED');
  for (const server of servers) {
    try {
      return await exchange(server, name, type, timeoutMs, true);
    } catch (e) {
      last = e as Error;
    }
  }
  throw last;
}
