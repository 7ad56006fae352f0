import { createHash } from 'node:crypto';
import { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';
import { REASONS } from '../domain/reasons.js';

/**
 * [submission] greeting_delay_ms: smtp-server waits a fixed 100 ms before every 220 to catch
 * clients that talk first (SMTPConnection.init), which caps a device that connects once per
 * message at ten messages a second per connection whatever the CPU. Postfix tests for early
 * talkers on port 25 only (postscreen), never on submission; here the pause is the config's
 * (0 by default), and a client that talks during a pause above 0 is refused as before
 * ("421 ... You talk too soon", smtp-server's own check while the connection is not ready).
 *
 * smtp-server has no option for it, and its SMTPServer builds the SMTPConnection itself, so a
 * subclass cannot reach it: init is replaced here, in this one place, by the same steps with
 * the delay read from the server's options. The patch refuses to install over any other init
 * (the hash below is of 3.21.6's, whitespace folded): an upgrade that changes it fails at
 * start and in test/protocol/greeting.test.ts, and this file is then reviewed against it.
 */
const KNOWN_INIT = '67b68fcaf9a0a35f2c2a118d31a3dc780c982d1f0ce83d654df4f4e92d4269d3';

interface ConnectionInternals {
  _setListeners(cb: () => void): void;
  _server: { options: { maxClients?: number; greetingDelayMs?: number }; connections: Set<unknown> };
  name: string;
  send(code: number, message: string, command?: string | false): void;
  connectionReady(): void;
}

/** The fingerprint of smtp-server's SMTPConnection.init as installed (whitespace folded). */
export function initFingerprint(fn: () => void = originalInit): string {
  return createHash('sha256').update(fn.toString().replace(/\s+/g, ' ')).digest('hex');
}

type Init = (this: ConnectionInternals) => void;
const proto = SMTPConnection.prototype as unknown as { init: Init };
const originalInit: Init = proto.init;
let installed = false;

/** Installs the configurable greeting pause (once per process); throws if smtp-server's init is not the one reviewed. */
export function installGreetingDelay(): void {
  if (installed) return;
  const seen = initFingerprint();
  if (seen !== KNOWN_INIT) {
    throw new Error(`smtp-server's SMTPConnection.init changed (fingerprint ${seen}): review src/protocol/greeting.ts against it before upgrading`);
  }
  proto.init = function init(this: ConnectionInternals) {
    this._setListeners(() => {
      if (this._server.options.maxClients && this._server.connections.size > this._server.options.maxClients) {
        // The node-wide cap's reply (README), not smtp-server's, which has no enhanced code.
        return this.send(REASONS.TOO_MANY_CLIENTS.code, `${REASONS.TOO_MANY_CLIENTS.enhanced} ${REASONS.TOO_MANY_CLIENTS.text}`, false);
      }
      const delay = this._server.options.greetingDelayMs ?? 100;
      if (delay <= 0) return this.connectionReady();
      // A pause: whatever the client sends before the 220 is refused as an early talker.
      setTimeout(() => this.connectionReady(), delay).unref();
    });
  };
  installed = true;
}
