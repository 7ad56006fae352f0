// The ceiling: a bare smtp-server with the same TLS and AUTH that accepts and discards.
// Whatever Postern adds (argon2, parsing, fsync) shows as the distance from this figure.
import { SMTPServer } from 'smtp-server';
import selfsigned from 'selfsigned';

const pems = await selfsigned.generate([{ name: 'commonName', value: 'bare.localhost' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' });
const server = new SMTPServer({
  key: pems.private,
  cert: pems.cert,
  authMethods: ['PLAIN', 'LOGIN'],
  // --plain runs compare with smtp-sink, which has no AUTH.
  authOptional: process.env.BARE_PLAIN === '1',
  disableReverseLookup: true,
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
