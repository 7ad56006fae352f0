import argon2 from 'argon2';
import { randomBytes } from 'node:crypto';

export interface Argon2Params {
  memoryCost: number; // KiB
  timeCost: number;
  parallelism: number;
}

export const DEFAULT_ARGON2: Argon2Params = { memoryCost: 19_456, timeCost: 2, parallelism: 1 };

export function hashPassword(password: string, p: Argon2Params): Promise<string> {
  return argon2.hash(password, { type: argon2.argon2id, ...p });
}

export function verifyPassword(hash: string, password: string): Promise<boolean> {
  return argon2.verify(hash, password).catch(() => false);
}

export function needsRehash(hash: string, p: Argon2Params): boolean {
  try {
    return argon2.needsRehash(hash, { ...p });
  } catch {
    return true;
  }
}

/** 144 random bits, URL-safe: strong enough to need no policy, short enough to type once. */
export function generatePassword(): string {
  return randomBytes(18).toString('base64url');
}

export const MIN_PASSWORD_LENGTH = 12;

/** Why a chosen password is refused, or null when it is acceptable. */
export function passwordProblem(pw: string): string | null {
  if (pw.length < MIN_PASSWORD_LENGTH) return `password must be at least ${MIN_PASSWORD_LENGTH} characters`;
  if (pw.length > 1024) return 'password must be at most 1024 characters';
  if (/[\0\r\n]/.test(pw)) return 'password must not contain NUL, CR or LF';
  // That shape selects an app password's hash at login: the main password would never be tried.
  if (appPasswordId(pw)) return 'password must not have the form of an app password (ap-...-...); choose another';
  return null;
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
const base32 = (n: number) => [...randomBytes(n)].map((b) => BASE32[b & 31]).join('');

/**
 * An app password: "ap-" + an 8-character public id + "-" + 24 secret characters, lower-case
 * letters and digits 2-7 (easy on a phone's keyboard; 120 secret bits). The public id names
 * the one hash to verify, so a login costs one argon2 verification however many app passwords
 * a user has; it is stored in clear and says nothing about the secret.
 */
export function generateAppPassword(): { publicId: string; password: string } {
  const publicId = base32(8);
  return { publicId, password: `ap-${publicId}-${base32(24)}` };
}

const APP_PASSWORD = /^ap-([a-z2-7]{8})-[a-z2-7]{24}$/;

/** The public id of something shaped like an app password, else null. */
export function appPasswordId(password: string): string | null {
  return APP_PASSWORD.exec(password)?.[1] ?? null;
}

/**
 * The password hash of a user without a password of Postern's own: a directory user (auth
 * backend "dovecot"), or a user imported before the admin set one. It verifies nothing.
 */
export const NO_PASSWORD = '';
