import { describe, expect, it } from 'vitest';
import { configSchema } from '../../src/config/schema.js';
import { hostInText, nearRateLimit, scoreMessage, urlHost, type AttachmentFacts, type MessageFacts, type ScoringState } from '../../src/policy/scoring.js';
import { domainTools, scoringConfig } from '../../src/quarantine/index.js';

const defaults = configSchema.parse({}).quarantine;
const cfg = scoringConfig(defaults);

const clean: MessageFacts = { from: [{ address: 'alice@corp.example', name: 'Alice' }], otherSenders: [], attachments: [], htmlLinks: [], textUrls: [] };
const quiet: ScoringState = {
  rcptTo: ['bob@partner.example'],
  allowedSenders: ['alice@corp.example'],
  newDomains: [],
  openIncident: false,
  nearRateLimit: false,
  remoteOutcomes: { total: 0, rejected: 0 },
};
const att = (a: Partial<AttachmentFacts>): AttachmentFacts => ({ filename: null, contentType: 'application/octet-stream', executableContent: false, archiveEntries: null, ...a });
const rcpts = (n: number, domains: number) => Array.from({ length: n }, (_, i) => `r${i}@d${i % domains}.example`);

type Row = [string, Partial<MessageFacts>, Partial<ScoringState>, number, Array<[string, number, string?]>, 'queued' | 'held'];

const table: Row[] = [
  ['a clean message scores nothing', {}, {}, 0, [], 'queued'],
  ['a first message to a new domain alone counts for nothing', {}, { newDomains: ['partner.example'] }, 0, [], 'queued'],
  ['a From: outside the sender bindings holds on its own', { from: [{ address: 'ceo@bank.example', name: 'CEO' }] }, {}, 10, [['FROM_NOT_BOUND', 10, 'ceo@bank.example']], 'held'],
  [
    'a From: outside the bindings to a new domain adds the new domain',
    { from: [{ address: 'ceo@bank.example', name: '' }] },
    { newDomains: ['partner.example'] },
    13,
    [['FROM_NOT_BOUND', 10, 'ceo@bank.example'], ['NEW_DOMAIN', 3, 'partner.example']],
    'held',
  ],
  ['a From: covered by a domain binding is fine, in any case', { from: [{ address: 'Alice@CORP.example', name: '' }] }, { allowedSenders: ['@corp.example'] }, 0, [], 'queued'],
  [
    'a Sender: or Resent-From: outside the bindings is as strong as From:',
    { otherSenders: [{ field: 'sender', address: 'ceo@bank.example' }, { field: 'resent-from', address: 'Alice@corp.example' }, { field: 'resent-from', address: 'cfo@bank.example' }] },
    {},
    10,
    [['FROM_NOT_BOUND', 10, 'Sender: ceo@bank.example, Resent-From: cfo@bank.example']],
    'held',
  ],
  ['a Reply-To: outside the bindings alone is one weak signal: not held', { otherSenders: [{ field: 'reply-to', address: 'alice@home.example' }] }, {}, 3, [['REPLY_TO_NOT_BOUND', 3, 'alice@home.example']], 'queued'],
  ['a Reply-To: inside the bindings is fine', { otherSenders: [{ field: 'reply-to', address: 'team@corp.example' }] }, { allowedSenders: ['@corp.example'] }, 0, [], 'queued'],
  ['a user without sender bindings is not judged on From:', { from: [{ address: 'ceo@bank.example', name: '' }] }, { allowedSenders: null }, 0, [], 'queued'],
  ['an address in the display name alone is one weak signal: not held', { from: [{ address: 'alice@corp.example', name: 'ceo@corp.example' }] }, {}, 7, [['FROM_DISPLAY_NAME_ADDRESS', 7, 'ceo@corp.example']], 'queued'],
  [
    'an address in the display name, to a domain never written to, is held',
    { from: [{ address: 'alice@corp.example', name: 'Payments (payments@bank.example)' }] },
    { newDomains: ['partner.example'] },
    10,
    [['FROM_DISPLAY_NAME_ADDRESS', 7, 'payments@bank.example'], ['NEW_DOMAIN', 3, 'partner.example']],
    'held',
  ],
  ['the own address as display name is not spoofing', { from: [{ address: 'alice@corp.example', name: 'ALICE@corp.example' }] }, {}, 0, [], 'queued'],
  ['an .exe attachment holds', { attachments: [att({ filename: 'invoice.exe' })] }, {}, 10, [['EXECUTABLE_ATTACHMENT', 10, 'invoice.exe']], 'held'],
  ['a script hidden behind a double extension and trailing dot holds', { attachments: [att({ filename: 'scan.pdf.js.' })] }, {}, 10, [['EXECUTABLE_ATTACHMENT', 10, 'scan.pdf.js.']], 'held'],
  ['a macro workbook holds', { attachments: [att({ filename: 'Q3.xlsm' })] }, {}, 10, [['EXECUTABLE_ATTACHMENT', 10, 'Q3.xlsm']], 'held'],
  ['a program by content type alone holds', { attachments: [att({ contentType: 'application/x-msdownload' })] }, {}, 10, [['EXECUTABLE_ATTACHMENT', 10, 'application/x-msdownload']], 'held'],
  ['a program renamed to .pdf is found by its content', { attachments: [att({ filename: 'report.pdf', contentType: 'application/pdf', executableContent: true })] }, {}, 10, [['EXECUTABLE_ATTACHMENT', 10, 'report.pdf']], 'held'],
  ['a .pdf and a .docx are fine', { attachments: [att({ filename: 'a.pdf', contentType: 'application/pdf' }), att({ filename: 'b.docx', archiveEntries: ['word/document.xml'] })] }, {}, 0, [], 'queued'],
  ['a .js inside a zip holds', { attachments: [att({ filename: 'docs.zip', archiveEntries: ['readme.txt', 'invoice.js'] })] }, {}, 10, [['ARCHIVED_EXECUTABLE', 10, 'docs.zip: invoice.js']], 'held'],
  ['a VBA project inside a .docx holds', { attachments: [att({ filename: 'cv.docx', archiveEntries: ['word/document.xml', 'word/vbaProject.bin'] })] }, {}, 10, [['ARCHIVED_EXECUTABLE', 10, 'cv.docx: word/vbaProject.bin']], 'held'],
  ['a link showing one site and going to another is one weak signal', { htmlLinks: [{ href: 'http://login.evil.test/x', text: 'www.bank.example' }] }, {}, 7, [['LINK_TEXT_MISMATCH', 7, 'www.bank.example -> login.evil.test']], 'queued'],
  ['a link within the same registrable domain is not a mismatch', { htmlLinks: [{ href: 'https://login.bank.example/', text: 'https://www.bank.example' }] }, {}, 0, [], 'queued'],
  ['a look-alike subdomain is a mismatch', { htmlLinks: [{ href: 'https://bank.example.evil.test/', text: 'bank.example' }] }, {}, 7, [['LINK_TEXT_MISMATCH', 7, 'bank.example -> bank.example.evil.test']], 'queued'],
  ['link text that is no host name is not compared', { htmlLinks: [{ href: 'https://evil.test/', text: 'Click here' }] }, {}, 0, [], 'queued'],
  ['a link to a hex IP address is found as the IP', { htmlLinks: [{ href: 'http://0xC0A80001/login', text: 'log in' }] }, {}, 5, [['LINK_TO_IP', 5, '192.168.0.1']], 'queued'],
  ['a shortener in the text part counts', { textUrls: ['https://bit.ly/3xYz'] }, {}, 3, [['LINK_SHORTENER', 3, 'bit.ly']], 'queued'],
  ['80 recipients over 80 domains is two weak signals together: held', {}, { rcptTo: rcpts(80, 80) }, 10, [['MANY_RECIPIENTS', 4, '80 recipients'], ['MANY_DOMAINS', 6, '80 domains']], 'held'],
  ['80 recipients in one domain is one weak signal', {}, { rcptTo: rcpts(80, 1) }, 4, [['MANY_RECIPIENTS', 4, '80 recipients']], 'queued'],
  ['an open incident alone does not hold', {}, { openIncident: true }, 6, [['OPEN_INCIDENT', 6]], 'queued'],
  [
    'an open incident with a mismatched link holds',
    { htmlLinks: [{ href: 'http://evil.test/', text: 'bank.example' }] },
    { openIncident: true },
    13,
    [['LINK_TEXT_MISMATCH', 7, 'bank.example -> evil.test'], ['OPEN_INCIDENT', 6]],
    'held',
  ],
  ['near the rate limit alone does not hold', {}, { nearRateLimit: true }, 3, [['NEAR_RATE_LIMIT', 3]], 'queued'],
  ['a high remote rejection rate over enough outcomes counts', {}, { remoteOutcomes: { total: 20, rejected: 6 } }, 6, [['REMOTE_REJECTIONS', 6, '6 of 20 rejected']], 'queued'],
  ['a high rate over too few outcomes does not', {}, { remoteOutcomes: { total: 4, rejected: 4 } }, 0, [], 'queued'],
];

describe('quarantine scoring with the default weights (threshold 10)', () => {
  it.each(table)('%s', (_name, facts, state, score, reasons, verdict) => {
    const a = scoreMessage({ ...clean, ...facts }, { ...quiet, ...state }, cfg, domainTools);
    expect(a.reasons.map((r) => [r.id, r.weight, ...(r.detail === undefined ? [] : [r.detail])])).toEqual(reasons);
    expect(a.score).toBe(score);
    expect(a.state).toBe(verdict);
  });
});

describe('no single weak signal holds mail alone', () => {
  it('does not hold on one weak signal even when an admin weights it above the threshold', () => {
    const heavy = { ...cfg, weights: { ...cfg.weights, LINK_SHORTENER: 50 } };
    const a = scoreMessage({ ...clean, textUrls: ['https://bit.ly/x'] }, quiet, heavy, domainTools);
    expect(a).toEqual({ state: 'queued', score: 50, reasons: [{ id: 'LINK_SHORTENER', weight: 50, detail: 'bit.ly' }] });
  });

  it('turns a signal off with weight 0', () => {
    const off = { ...cfg, weights: { ...cfg.weights, EXECUTABLE_ATTACHMENT: 0 } };
    expect(scoreMessage({ ...clean, attachments: [att({ filename: 'x.exe' })] }, quiet, off, domainTools)).toEqual({ state: 'queued', score: 0, reasons: [] });
  });

  it('shortens long details to three items and a count', () => {
    const a = scoreMessage({ ...clean, attachments: ['a.exe', 'b.exe', 'c.exe', 'd.exe', 'e.exe'].map((f) => att({ filename: f })) }, quiet, cfg, domainTools);
    expect(a.reasons[0]!.detail).toBe('a.exe, b.exe, c.exe (+2 more)');
  });
});

describe('link host extraction', () => {
  it.each([
    ['www.bank.example', 'www.bank.example'],
    ['https://Bank.Example/login?x=1', 'bank.example'],
    ['<bank.example>', 'bank.example'],
    ['bank.example.', 'bank.example'],
    ['192.0.2.1', '192.0.2.1'],
    ['Click here', null],
    ['support@bank.example', 'bank.example'],
  ])('visible text %j shows host %j', (text, host) => {
    expect(hostInText(text)).toBe(host);
  });

  it.each([
    ['http://2130706433/', '127.0.0.1'],
    ['https://Example.COM./a', 'example.com'],
    ['mailto:a@b.example', null],
    ['javascript:alert(1)', null],
    ['not a url', null],
  ])('target %j has host %j', (href, host) => {
    expect(urlHost(href)).toBe(host);
  });
});

describe('nearness to a rate limit', () => {
  const limits = { messagesPerHour: 100, recipientsPerHour: 1000, recipientsPerDay: 2000 };
  const usage = { messagesHour: 0, recipientsHour: 0, recipientsDay: 0, lastAt: null, oldestHourAt: null };
  it.each([
    ['nothing used', {}, false],
    ['79 of 100 messages this hour', { messagesHour: 79 }, false],
    ['80 of 100 messages this hour', { messagesHour: 80 }, true],
    ['800 of 1000 recipients this hour', { recipientsHour: 800 }, true],
    ['1600 of 2000 recipients today', { recipientsDay: 1600 }, true],
  ])('%s: %s', (_name, used, near) => {
    expect(nearRateLimit(limits, { ...usage, ...used }, 0.8)).toBe(near);
  });
});
