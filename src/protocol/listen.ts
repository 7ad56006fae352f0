/** "[::]:587" -> { host: "::", port: 587 }; "127.0.0.1:0" -> an ephemeral port (tests). */
export function parseListen(spec: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d+)$/.exec(spec);
  if (!m) throw new Error(`bad listen address ${spec}`);
  const port = Number(m[3]);
  if (port > 65_535) throw new Error(`bad port in ${spec}`);
  return { host: m[1] ?? m[2]!, port };
}
