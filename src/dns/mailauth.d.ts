// mailauth 4.9.x ships no type declarations; this covers the one entry point the doctor uses.
declare module 'mailauth/lib/spf/index.js' {
  export interface SpfOptions {
    sender: string;
    ip: string;
    helo?: string;
    mta?: string;
    maxResolveCount?: number;
    maxVoidCount?: number;
    /** node:dns resolve(name, type): rejections must carry node's error codes (ENOTFOUND, ENODATA). */
    resolver?: (name: string, type: string) => Promise<unknown>;
  }
  export interface SpfResult {
    domain: string;
    'client-ip': string;
    /** The SPF record evaluated, when one was found. */
    rr?: string;
    status: { result: 'pass' | 'fail' | 'softfail' | 'neutral' | 'none' | 'permerror' | 'temperror'; comment?: string };
    lookups?: { limit: number; count: number; void: number };
    header: string;
    info: string;
  }
  export function spf(opts: SpfOptions): Promise<SpfResult>;
}
