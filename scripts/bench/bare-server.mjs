// The ceiling: a bare smtp-server with the same TLS and AUTH that accepts and discards.
// Whatever Postern adds (argon2, parsing, fsync) shows as the distance from this figure.
//
// Same greeting as Postern: smtp-server pauses 100 ms before every 220 (early-talker check),
// which Postern replaces with [submission] greeting_delay_ms (default 0). This server installs
// the very same patch (src/protocol/greeting.ts, from the build: `npx tsc -p .`) and runs with
// greetingDelayMs 0, so a login-per-message ceiling is not capped at 10 connections a second
// per client by a pause Postern does not make.
//
// TLS session resumption: smtp-server's default secure context already resumes. Node gives
// every SecureContext its own random session-ticket keys, and smtp-server sets a
// sessionIdContext, so a client that offers the session of its last connection
// (tls.connect({ session })) resumes with a ticket (TLS 1.3; isSessionReused() is true); the
// keys live as long as this process. Nothing to configure; submit.mjs --resume 1 counts the
// resumed handshakes on both targets.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { SMTPServer } from 'smtp-server';
import selfsigned from 'selfsigned';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const { installGreetingDelay } = await import(pathToFileURL(path.join(ROOT, 'dist/src/protocol/greeting.js')).href).catch((e) => {
  throw new Error(`bare-server needs the build for Postern's greeting patch (npx tsc -p .): ${e.message}`);
});
installGreetingDelay();

const pems = await selfsigned.generate([{ name: 'commonName', value: 'bare.localhost' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' });
const server = new SMTPServer({
  key: pems.private,
  cert: pems.cert,
  authMethods: ['PLAIN', 'LOGIN'],
  // --plain runs compare with smtp-sink, which has no AUTH.
  authOptional: process.env.BARE_PLAIN === '1',
  disableReverseLookup: true,
  // Read by the patched SMTPConnection.init (installGreetingDelay above): no pause, as Postern.
  greetingDelayMs: 0,
  logger: false,
  maxClients: 5000,
  size: 26_214_400,
  onAuth: (auth, _s, cb) => cb(null, { user: auth.username }),
  onData(stream, _s, cb) {
    stream.on('data', () => undefined);
    stream.on('end', () => cb(null, 'Ok'));
  },
});
server.listen(0, '127.0.0.1', () => {
  console.log(JSON.stringify({ event: 'ready', port: server.server.address().port }));
});
