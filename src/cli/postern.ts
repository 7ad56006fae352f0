import { runCli } from './run.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const code = await runCli(process.argv.slice(2), {
  stdout: (s) => process.stdout.write(s),
  stdoutBytes: (b) => process.stdout.write(b),
  stderr: (s) => process.stderr.write(s),
  stdin: readStdin,
  env: process.env,
  // https://no-color.org: any non-empty NO_COLOR turns colour off.
  colour: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
});
process.exitCode = code;
