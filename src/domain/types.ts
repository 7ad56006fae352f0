/** Spool states of one message (house rule 5: states of one spool, never copies). */
export const QUEUE_STATES = ['queued', 'held', 'waiting-quota'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

export type UserStatus = 'active' | 'suspended';

/**
 * A user's or device's identity in the state it leaves (quota usage, domain history, delivery
 * outcomes, limit overrides, spool rows, incidents): a number never reused, so a user deleted
 * and added again under the same name starts afresh.
 */
export type PrincipalRef = number & { readonly __principal: true };

export interface User {
  id: number;
  principalRef: PrincipalRef;
  username: string;
  passwordHash: string;
  status: UserStatus;
  statusReason: string | null;
  /** Bumped on every change that must invalidate cached credentials. */
  authEpoch: number;
  /** Where notices about this account go; null = its first exact sender. */
  notifyAddress: string | null;
  suspendedAt: number | null;
  createdAt: number;
  updatedAt: number;
}

export interface Device {
  id: number;
  principalRef: PrincipalRef;
  name: string;
  status: UserStatus;
  statusReason: string | null;
  suspendedAt: number | null;
  /** Refuse the device's mail unless it used STARTTLS first. */
  requireTls: boolean;
  createdAt: number;
  updatedAt: number;
}

export const INCIDENT_KINDS = ['foreign-network', 'foreign-sender', 'foreign-recipient', 'device-foreign-sender', 'rate-limit', 'remote-rejections', 'manual'] as const;
export type IncidentKind = (typeof INCIDENT_KINDS)[number] | (string & {});

export interface Incident {
  id: number;
  principalKind: 'user' | 'device';
  principalId: number | null;
  principalName: string;
  kind: IncidentKind;
  clientIp: string | null;
  sender: string | null;
  detail: string | null;
  createdAt: number;
  resolvedAt: number | null;
  resolvedBy: string | null;
  notified: boolean;
}

/** Who submitted a message, as recorded in the spool and logs. */
export interface Principal {
  kind: 'user' | 'device';
  /** The user's or device's id. */
  id: number;
  name: string;
  ref: PrincipalRef;
  /**
   * A user's auth_epoch when the session logged in: a new password, a reset, a suspension
   * lifted or an app password revoked moves it, and the session must log in again.
   */
  epoch?: number;
}

/** A principal as stored state names it: its number, and its kind and name for logs and notices. */
export type PrincipalName = Pick<Principal, 'ref' | 'kind' | 'name'>;

/** How listings (and Redis keys) name a principal: "user:alice", "device:printer-3"; logs give principal and principal_kind. */
export const principalLabel = (p: { kind: string; name: string }): string => `${p.kind}:${p.name}`;

/** Envelope and provenance of a message being accepted. */
export interface Envelope {
  mailFrom: string;
  rcptTo: string[];
}

export interface NewMessage {
  id: string;
  envelope: Envelope;
  principal: Principal | null;
  clientIp: string;
  receivedAt: number;
  state: QueueState;
  data: Buffer;
  /** Score and reasons when policy assessed the message (quarantine). */
  assessment?: Assessment;
  /** The node that accepted it ([server] node_id, else the host name); the spool sets it. */
  acceptedBy?: string | null;
}

export interface QueuedMessage {
  id: string;
  state: QueueState;
  mailFrom: string;
  rcptTo: string[];
  /** Who submitted it, as listings name them ("user:alice"); null for Postern's own notices. */
  principal: string | null;
  principalRef: PrincipalRef | null;
  clientIp: string;
  size: number;
  receivedAt: number;
  attempts: number;
  nextAttemptAt: number | null;
  /** The node that accepted it; null for mail accepted before nodes were recorded. */
  acceptedBy: string | null;
  /** The delivery claim: its holder ("node:pid:tag") and until when, or null when unclaimed. */
  claimOwner: string | null;
  claimUntil: number | null;
}

/** One named signal that contributed to a message's score. */
export interface ScoreReason {
  id: string;
  weight: number;
  detail?: string;
}

/** What policy decided about an accepted message: where it goes in the spool, and why. */
export interface Assessment {
  state: QueueState;
  score: number;
  reasons: ScoreReason[];
}

export interface AssessInput {
  id: string;
  data: Buffer;
  envelope: Envelope;
  principal: Principal;
  clientIp: string;
  now: number;
}

/** Scores a message before it is committed (quarantine, rate limits). Must not write state. */
export type MessageAssessor = (input: AssessInput) => Assessment | Promise<Assessment>;

/** Runs after the message is durably in the spool (held notices, counters). */
export type AcceptedHook = (input: AssessInput, assessment: Assessment) => void | Promise<void>;

/** A directory password as a compromise records it: its keyed fingerprint and the directory's name for the account. */
export interface CaughtPassword {
  fingerprint: string;
  account: string;
}
