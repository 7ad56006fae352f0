// SMTP sinks for the delivery benchmark, in their own process so that receiving mail does not
// take CPU from the process being measured. Listens on 127.0.0.10 .. 127.0.0.(9+N), one port,
// offers STARTTLS, accepts everything; prints {"event":"ready","port":P} and then
// {"received":N} every 100 ms. Exits when stdin closes (its parent went away).
import selfsigned from 'selfsigned';
import { SMTPServer } from 'smtp-server';

const n = Number(process.argv[2] ?? 10);
const pems = await selfsigned.generate([{ name: 'commonName', value: 'mx.bench.example' }], { keyType: 'ec', curve: 'P-256', algorithm: 'sha256' });
let received = 0;
async function start(host, port) {
  const server = new SMTPServer({
    key: pems.private,
    cert: pems.cert,
    disabledCommands: ['AUTH'],
    authOptional: true,
    disableReverseLookup: true,
    logger: false,
    size: 50 * 1024 * 1024,
    onData(stream, _session, cb) {
      stream.on('data', () => {});
      stream.on('end', () => {
        received++;
        cb();
      });
    },
  });
  server.on('error', () => {});
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  return server.server.address().port;
}
const port = await start('127.0.0.10', 0);
for (let i = 1; i < n; i++) await start(`127.0.0.${10 + i}`, port);
console.log(JSON.stringify({ event: 'ready', port }));
setInterval(() => console.log(JSON.stringify({ received })), 100);
process.stdin.on('close', () => process.exit(0));
process.stdin.resume();
