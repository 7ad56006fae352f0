import { describe, expect, it } from 'vitest';
import { anchors, isExecutable, parseFacts, zipEntryNames } from '../../src/quarantine/parse.js';
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

  it('reads anchors with decoded entities and the text a reader sees, nested markup included', () => {
    expect(anchors('<p><A HREF="https://evil.test/?a=1&amp;b=2"><b>www.</b>bank.example</A> <area href="http://10.0.0.1/" alt="map"><a name="x">no href</a>')).toEqual([
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
