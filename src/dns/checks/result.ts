import type { X509Certificate } from 'node:crypto';
import type { Config } from '../../config/schema.js';
import type { LocalCertificate, LocalDkimKey } from '../local.js';
import type { DoctorDns } from '../lookup.js';

/** SKIP: not run, because something it needs failed (the row that failed says what). */
export type Status = 'PASS' | 'WARN' | 'FAIL' | 'INFO' | 'SKIP';

/** One verdict of the doctor. `fix` is what to publish, in zone-file syntax (lines starting ";" are advice). */
export interface CheckResult {
  id: string;
  /** The name, address or file the verdict is about. */
  subject: string;
  status: Status;
  reason: string;
  fix?: string;
}

const verdict =
  (status: Status) =>
  (id: string, subject: string, reason: string, fix?: string): CheckResult =>
    fix ? { id, subject, status, reason, fix } : { id, subject, status, reason };

export const pass = verdict('PASS');
export const warn = verdict('WARN');
export const fail = verdict('FAIL');
export const info = verdict('INFO');
export const skip = verdict('SKIP');

/** Everything a check may look at; built once per run, before any check. */
export interface DoctorContext {
  dns: DoctorDns;
  now: number;
  cfg: Config;
  /** [identity] outbound_ip when it is an address, else null. */
  ip: string | null;
  family: 4 | 6;
  helo: string;
  heloOk: boolean;
  /** [server] hostname, normalised: the 220 greeting name and the sender of notices (postmaster@). */
  hostname: string;
  hostnameOk: boolean;
  /** [identity] ptr, normalised; '' when unset. */
  cfgPtr: string;
  /** PTR names the outbound IP has in DNS. */
  observedPtr: string[];
  /** The observed PTR name we judge: the configured one when DNS has it, else the first. */
  ptrSeen: string | null;
  /** The PTR name HELO is compared with: configured, else observed. */
  ptrName: string | null;
  domains: string[];
  dkimKeys: LocalDkimKey[];
  certificate: LocalCertificate;
  x509: X509Certificate | { error: string } | null;
}

export type Found = CheckResult | CheckResult[] | null;

/** Facts a check depends on; a check whose needs are unmet is skipped, its cause reported elsewhere. */
export type Need = 'ip' | 'helo' | 'hostname' | 'ptr' | 'ptrName';

export interface Check {
  /** The id reported when the check cannot run at all (a DNS failure). */
  id: string;
  needs: Need[];
  /** false: looks at the config, the certificate or facts already gathered, never asks DNS. */
  dns?: false;
  /** An optional record: a lookup that fails is INFO, like the record's absence, never FAIL. */
  optional?: true;
  run(c: DoctorContext): Promise<Found> | Found;
}

/** Run once per envelope domain; it needs nothing beyond the domain. */
export interface DomainCheck {
  id: string;
  run(c: DoctorContext, domain: string): Promise<Found>;
}
