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
  return null;
}
