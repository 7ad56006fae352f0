import { describe, expect, it } from 'vitest';
import { anchors, isExecutable, mimeFacts, parseFacts, plainFacts, zipEntryNames } from '../../src/quarantine/parse.js';
import { fakePe, mime, zip } from '../helpers/mime.js';

describe('parsing a message into scoring facts', () => {
  it('decodes an RFC 2047 display name, so an encoded address in it is still seen', async () => {
    const name = Buffer.from('ceo@bank.example', 'utf8').toString('base64');
    const facts = await parseFacts(Buffer.from(`From: =?UTF-8?B?${name}?= <x@evil.example>\r\nSubject: hi\r\n\r\nhi\r\n`));
    expect(facts.from).toEqual([{ address: 'x@evil.example', name: 'ceo@bank.example' }]);
  });

  it('lists each From: mailbox, group members included', async () => {
    const facts = await parseFacts(Buffer.from('From: a@one.example, Team: b@two.example, c@three.example;\r\n\r\nhi\r\n'));
    expect(facts.from.map((f) => f.address)).toEqual(['a@one.example', 'b@two.example', 'c@three.example']);
  });

  it('finds attachments, zip entry names, PE content, HTML anchors and text URLs', async () => {
    const body = mime({ From: 'a@corp.example', Subject: 's' }, [
      { type: 'text/plain', body: 'see https://bit.ly/abc and http://192.0.2.1/x.\n' },
      { type: 'application/pdf', filename: 'report.pdf', body: fakePe() },
      { type: 'application/octet-stream', filename: 'photos.dat', body: zip([{ name: 'dir/IMG_1.jpg.lnk', data: 'x' }]) },
      { type: 'text/html', filename: 'page.html', body: '<a href="x">y</a>' },
    ]);
    const facts = await parseFacts(Buffer.from(body));
    expect(facts.attachments).toEqual([
      { filename: 'report.pdf', contentType: 'application/pdf', executableContent: true, archiveEntries: null },
      { filename: 'photos.dat', contentType: 'application/octet-stream', executableContent: false, archiveEntries: ['dir/IMG_1.jpg.lnk'] },
      { filename: 'page.html', contentType: 'text/html', executableContent: false, archiveEntries: null },
    ]);
    expect(facts.textUrls).toEqual(['https://bit.ly/abc', 'http://192.0.2.1/x']);
  });

  it('reads anchors with decoded entities and the text a reader sees, nested markup included', async () => {
    expect(await anchors('<p><A HREF="https://evil.test/?a=1&amp;b=2"><b>www.</b>bank.example</A> <area href="http://10.0.0.1/" alt="map"><a name="x">no href</a>')).toEqual([
      { href: 'https://evil.test/?a=1&b=2', text: 'www.bank.example' },
      { href: 'http://10.0.0.1/', text: 'map' },
    ]);
  });

  it('lists zip entries without extracting, and gives null for what is not a zip', async () => {
    expect(await zipEntryNames(zip([{ name: 'a.txt', data: 'a' }, { name: 'b/c.vbs', data: 'c' }]))).toEqual(['a.txt', 'b/c.vbs']);
    expect(await zipEntryNames(Buffer.from('PK\x03\x04 but not really a zip'))).toBeNull();
  });

  it('tells a PE or ELF program from a file that merely starts with MZ', () => {
    expect(isExecutable(fakePe())).toBe(true);
    expect(isExecutable(Buffer.from('\x7fELF\x02\x01\x01', 'latin1'))).toBe(true);
    expect(isExecutable(Buffer.from(`MZ${'x'.repeat(100)}`))).toBe(false);
  });
});

describe('the plain-text fast path', () => {
  const froms = [
    'a@corp.example',
    '"Alice Example" <alice@corp.example>',
    'Alice <alice@corp.example>, bob@corp.example',
    'Team: a@one.example, "B, the second" <b@two.example>;',
    'Undisclosed recipients:;',
    'alice@corp.example (Alice in a comment)',
    '<alice@corp.example>',
    '<<odd@corp.example>>',
    '""',
    'not an address at all',
    'Alice\r\n  Folded <alice@corp.example>',
    '  ceo@bank.example   <x@evil.example>  ',
  ];
  const types = [undefined, 'text/plain', 'text/plain; charset=utf-8', 'TEXT/PLAIN; charset="UTF-8"', 'text/plain;charset=us-ascii', 'text/plain; charset=ascii;'];
  const encodings = [undefined, '7bit', '8BIT'];
  const bodies = [
    'hi\r\n',
    'see https://bit.ly/abc, and http://192.0.2.1/x.\r\nHTTPS://UPPER.example/Path?q=1) and (http://in.parens/)\r\n',
    'ünïcödé https://例え.テスト/パス and https://x.example/ä\r\n',
    'split http://a.example/long\r\n/continued and <http://angle.example/> "http://q.example/"\r\n',
    '',
  ];
  const build = (h: Record<string, string | undefined>, body: string) =>
    Buffer.from(Object.entries(h).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}: ${v}\r\n`).join('') + '\r\n' + body);

  it('gives exactly what the full MIME parse gives, on every message it takes', async () => {
    let taken = 0;
    for (const from of froms) {
      for (const type of types) {
        for (const encoding of encodings) {
          for (const body of bodies) {
            const msg = build({ From: from, To: 'x@y.example', Subject: 'plain', 'Content-Type': type, 'Content-Transfer-Encoding': encoding }, body);
            const quick = plainFacts(msg);
            if (quick === null) continue;
            taken++;
            expect(quick, msg.toString()).toEqual(await mimeFacts(msg));
          }
        }
      }
    }
    // Every From above is plain ASCII without encoded words: all of them take the fast path.
    expect(taken).toBe(froms.length * types.length * encodings.length * bodies.length);
    // A message with no header/body separator, and one with no From, too.
    for (const msg of [Buffer.from('From: a@b.example\r\nSubject: x\r\n'), Buffer.from('Subject: x\r\n\r\nhttp://a.example/\r\n')]) {
      expect(plainFacts(msg)).toEqual(await mimeFacts(msg));
    }
  });

  it('leaves every other message to the full parse', () => {
    const others: Array<Record<string, string>> = [
      { 'Content-Type': 'multipart/alternative; boundary=x' },
      { 'Content-Type': 'text/html; charset=utf-8' },
      { 'Content-Type': 'text/plain; charset=iso-8859-1' },
      { 'Content-Type': 'text/plain; format=flowed; delsp=yes' },
      { 'Content-Type': 'text/plain; name="a.txt"' },
      { 'Content-Type': "text/plain; charset*=utf-8''x" },
      { 'Content-Transfer-Encoding': 'quoted-printable' },
      { 'Content-Transfer-Encoding': 'base64' },
      { 'Content-Disposition': 'attachment; filename=x.txt' },
      { From: '=?UTF-8?B?Y2VvQGJhbmsuZXhhbXBsZQ==?= <x@evil.example>' },
      { From: 'a@xn--bcher-kva.example' },
      { From: 'Jürgen <j@corp.example>' },
    ];
    for (const h of others) expect(plainFacts(build({ From: 'a@corp.example', Subject: 's', ...h }, 'hi\r\n')), JSON.stringify(h)).toBeNull();
    // Two of a header mailparser reads once, and a line that is not a header.
    expect(plainFacts(Buffer.from('From: a@x.example\r\nFrom: b@y.example\r\n\r\nhi\r\n'))).toBeNull();
    expect(plainFacts(Buffer.from('Content-Type: text/plain\r\ncontent-type: text/html\r\n\r\nhi\r\n'))).toBeNull();
    expect(plainFacts(Buffer.from('From a@x.example\r\nSubject: s\r\n\r\nhi\r\n'))).toBeNull();
  });
});
