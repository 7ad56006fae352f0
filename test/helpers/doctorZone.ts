import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import selfsigned from 'selfsigned';
import { reverseName, type Rr } from './dnsd.js';

/**
 * A relay whose DNS is right in every way `postern doctor` checks: outbound IP 203.0.113.25,
 * PTR mail.example.net (null MX, null SPF), HELO mta-out.example.net and greeting name
 * smtp.example.net (postmaster@ either goes to example.net's MX, mx.example.net), envelope
 * domain example.com signed with selector s1. Tests break it one way at a time.
 */
export const IP = '203.0.113.25';
export const PTR = 'mail.example.net';
export const HELO = 'mta-out.example.net';
export const HOSTNAME = 'smtp.example.net';
export const DOMAIN = 'example.com';
export const SELECTOR = 's1';

export const dkimValue = (key: KeyObject) => `v=DKIM1; k=rsa; p=${key.export({ type: 'spki', format: 'der' }).toString('base64')}`;

/** 1024 bits by default: fast to make, and the doctor's comparison does not depend on size. */
export function newRsaKey(bits = 1024): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('rsa', { modulusLength: bits });
}

export function goodZone(dkimPublicKey: KeyObject): Rr[] {
  return [
    { type: 'PTR', name: reverseName(IP), data: PTR },
    { type: 'A', name: PTR, data: IP },
    { type: 'MX', name: PTR, data: { preference: 0, exchange: '.' } },
    { type: 'TXT', name: PTR, data: 'v=spf1 -all' },
    { type: 'A', name: HELO, data: IP },
    { type: 'TXT', name: HELO, data: `v=spf1 ip4:${IP} -all` },
    { type: 'MX', name: HELO, data: { preference: 10, exchange: 'mx.example.net' } },
    { type: 'RP', name: HELO, data: { mbox: 'postmaster.example.net', txt: '.' } },
    { type: 'SRV', name: `_client._smtp.${HELO}`, data: { priority: 1, weight: 2, port: 0, target: HELO } },
    { type: 'A', name: HOSTNAME, data: IP },
    { type: 'MX', name: HOSTNAME, data: { preference: 10, exchange: 'mx.example.net' } },
    { type: 'MX', name: 'example.net', data: { preference: 10, exchange: 'mx.example.net' } },
    { type: 'A', name: 'mx.example.net', data: '198.51.100.10' },
    { type: 'TXT', name: '_spf.example.net', data: `v=spf1 ip4:${IP} -all` },
    { type: 'TXT', name: DOMAIN, data: 'v=spf1 include:_spf.example.net -all' },
    { type: 'TXT', name: `_dmarc.${DOMAIN}`, data: 'v=DMARC1; p=reject; rua=mailto:dmarc@example.com' },
    { type: 'TXT', name: `${SELECTOR}._domainkey.${DOMAIN}`, data: dkimValue(dkimPublicKey) },
    { type: 'MX', name: DOMAIN, data: { preference: 10, exchange: 'mx1.example.com' } },
    { type: 'A', name: 'mx1.example.com', data: '198.51.100.20' },
  ];
}

/** A self-signed certificate for name, valid from `from` to `to` (ms since the epoch). */
export async function certificate(name: string, from: number, to: number): Promise<{ cert: string; key: string }> {
  const pems = await selfsigned.generate([{ name: 'commonName', value: name }], {
    keyType: 'ec',
    curve: 'P-256',
    algorithm: 'sha256',
    notBeforeDate: new Date(from),
    notAfterDate: new Date(to),
    extensions: [{ name: 'subjectAltName', altNames: [{ type: 2, value: name }] }],
  });
  return { cert: pems.cert, key: pems.private };
}

// Zone edits, so each test case reads as "the good zone, except ...".
export type Edit = (zone: Rr[]) => Rr[];
export const drop =
  (type: Rr['type'], name: string): Edit =>
  (zone) =>
    zone.filter((r) => !(r.type === type && r.name === name));
export const put =
  (rr: Rr): Edit =>
  (zone) => [...drop(rr.type, rr.name)(zone), rr];
export const add =
  (rr: Rr): Edit =>
  (zone) => [...zone, rr];
export const edit = (zone: Rr[], edits: Edit[]) => edits.reduce((z, e) => e(z), zone);
