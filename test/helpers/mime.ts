import { crc32 } from 'node:zlib';

/**
 * Builders for the real MIME messages the quarantine tests submit. Written by hand rather than
 * with nodemailer's composer so each test shows exactly the bytes it sends.
 */

export interface Part {
  type: string;
  /** Content-Disposition filename (attachment). */
  filename?: string;
  body: string | Buffer;
}

const b64 = (b: Buffer) => b.toString('base64').replace(/.{76}/g, '$&\r\n');

export function mime(headers: Record<string, string>, parts: Part[]): string {
  const head = Object.entries({ 'MIME-Version': '1.0', ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  if (parts.length === 1 && !parts[0]!.filename) {
    const p = parts[0]!;
    return `${head}Content-Type: ${p.type}\r\n\r\n${String(p.body).replace(/\r?\n/g, '\r\n')}\r\n`;
  }
  const boundary = '=_postern_test_boundary';
  let out = `${head}Content-Type: multipart/mixed; boundary="${boundary}"\r\n\r\nThis is a multi-part message in MIME format.\r\n`;
  for (const p of parts) {
    out += `--${boundary}\r\n`;
    if (p.filename) {
      out += `Content-Type: ${p.type}; name="${p.filename}"\r\nContent-Disposition: attachment; filename="${p.filename}"\r\nContent-Transfer-Encoding: base64\r\n\r\n${b64(Buffer.isBuffer(p.body) ? p.body : Buffer.from(p.body))}\r\n`;
    } else {
      out += `Content-Type: ${p.type}\r\n\r\n${String(p.body).replace(/\r?\n/g, '\r\n')}\r\n`;
    }
  }
  return `${out}--${boundary}--\r\n`;
}

/** A zip of stored (uncompressed) entries, as PKZIP APPNOTE 4.3 lays it out. */
export function zip(entries: Array<{ name: string; data: string | Buffer }>): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = Buffer.from(e.name, 'utf8');
    const data = Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data);
    const crc = crc32(data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(0x0800, 6); // names are UTF-8
    local.writeUInt16LE(0, 8); // stored
    local.writeUInt16LE(0, 10);
    local.writeUInt16LE(0x21, 12); // 1980-01-01
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(0x0800, 8);
    central.writeUInt16LE(0, 10);
    central.writeUInt16LE(0, 12);
    central.writeUInt16LE(0x21, 14);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(data.length, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, data);
    centrals.push(central, name);
    offset += 30 + name.length + data.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** The smallest PE shape isExecutable accepts: "MZ", e_lfanew at 0x3c, "PE\0\0" there. */
export function fakePe(): Buffer {
  const b = Buffer.alloc(0x80);
  b.write('MZ', 0, 'latin1');
  b.writeUInt32LE(0x40, 0x3c);
  b.write('PE\0\0', 0x40, 'latin1');
  return b;
}
