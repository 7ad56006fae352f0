
export interface HeaderSummary {
  from: string;
  subject: string;
}

/** Header From: and Subject: decoded (RFC 2047), from a header section alone. */
export async function summarize(header: Buffer): Promise<HeaderSummary> {
  // Loaded on first use: most processes never summarize anything (see parse.ts).
  const { simpleParser } = await import('mailparser');
  // The body is not needed; an empty line keeps the parser from reading header as body.
  const mail = await simpleParser(Buffer.concat([header, Buffer.from('\r\n')]), { skipHtmlToText: true, skipTextToHtml: true, skipImageLinks: true, skipTextLinks: true });
  // Name and address as a person reads them, decoded and unquoted (mailparser's .text quotes).
  const from = (mail.from?.value ?? []).map((m) => (m.name ? `${m.name} <${m.address ?? ''}>` : (m.address ?? ''))).join(', ');
  return { from, subject: mail.subject ?? '' };
}
