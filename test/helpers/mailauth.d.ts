// mailauth 4.9.x ships no type declarations; this covers the DKIM verifier the tests use.
declare module 'mailauth/lib/dkim/verify.js' {
  export interface DkimResult {
    signingDomain: string;
    selector: string;
    status: { result: 'pass' | 'fail' | 'neutral' | 'none' | 'policy' | 'temperror' | 'permerror'; comment?: string; aligned?: string };
    canonBodyLength?: number;
    signingHeaders?: { keys: string; headers: string[]; canonicalizedHeader?: Buffer };
    format?: string;
  }
  export function dkimVerify(
    input: Buffer,
    options?: { resolver?: (name: string, type: string) => Promise<unknown>; sender?: string; curTime?: Date },
  ): Promise<{ headerFrom: string[]; results: DkimResult[] }>;
}
