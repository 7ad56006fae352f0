/**
 * A database that cannot be used, named the way the admin wrote it:
 * `country_db = /etc/postern/geo.csv: line 12: bad address "1.2.3"`. Config loading and
 * SIGHUP show the message as it is; `key`, `file` and `line` are there for callers that
 * want them apart.
 */
export class GeoDbError extends Error {
  constructor(
    readonly key: string,
    readonly file: string,
    readonly line: number | null,
    readonly problem: string,
  ) {
    super(`${key} = ${file}: ${line === null ? '' : `line ${line}: `}${problem}`);
    this.name = 'GeoDbError';
  }
}

/** A file that cannot be opened or read: the errno code is what an admin can act on. */
export function unreadable(key: string, file: string, err: unknown): GeoDbError {
  return new GeoDbError(key, file, null, `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
}
