/** Spool states of one message (house rule 5: states of one spool, never copies). */
export const QUEUE_STATES = ['queued', 'held', 'waiting-quota'] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

export type UserStatus = 'active' | 'suspended';

export interface User {
  id: number;
  username: string;
  passwordHash: string;
  status: UserStatus;
  statusReason: string | null;
  /** Bumped on every change that must invalidate cached credentials. */
  authEpoch: number;
  createdAt: number;
  updatedAt: number;
}

/** Who submitted a message, as recorded in the spool and logs. */
export interface Principal {
  kind: 'user';
  id: number;
  name: string;
}

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
}

export interface QueuedMessage {
  id: string;
  state: QueueState;
  mailFrom: string;
  rcptTo: string[];
  principal: string | null;
  clientIp: string;
  size: number;
  receivedAt: number;
  attempts: number;
  nextAttemptAt: number | null;
}
