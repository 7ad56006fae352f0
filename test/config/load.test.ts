import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { ConfigError, loadConfig, parseConfig } from '../../src/config/load.js';
import { tempDir } from '../helpers/relay.js';

describe('config', () => {
  it('fills every default and resolves data_dir against the config file', () => {
    const dir = tempDir();
    const file = path.join(dir, 'p.toml');
    writeFileSync(file, '[server]\nhostname = "smtp.example.com"\ndata_dir = "state"\n');
    const cfg = loadConfig(file);
    expect(cfg.server.data_dir).toBe(path.join(dir, 'state'));
    expect(cfg.submission).toMatchObject({ listen: ['[::]:587'], listen_tls: ['[::]:465'], max_message_bytes: 26_214_400, max_recipients: 100 });
    expect(cfg.auth.argon2_memory_kib).toBe(19_456);
  });

  it.each([
    [{ server: { hostname: 'x.example', colour: 'blue' } }, 'unknown key server.colour'],
    [{ sever: {} }, 'unknown key sever'],
    [{ server: { hostname: 'bad_name.example' } }, 'server.hostname: must be a host name'],
    [{ submission: { max_recipients: 0 } }, 'submission.max_recipients: Too small'],
    [{ submission: { listen: ['587'] } }, 'submission.listen.0: must be "address:port"'],
    [{ delivery: { port: 'twenty-five' } }, 'delivery.port: Invalid input: expected number, received string'],
    [{ tls: { cert: 'a.pem' } }, 'tls.cert and tls.key must be set together'],
    [{ geo: { country_db: 25 } }, 'geo.country_db: must be "" (the data bundled with Postern), a path, or a list of CSV paths'],
    [{ geo: { asn_db: ['GeoLite2-ASN.mmdb', 'asn-ipv6.csv'] } }, 'geo.asn_db: a .mmdb file must be the only file of its database (a list is for CSV files)'],
    [{ geo: { country_db: ['v4.csv', ''] } }, 'geo.country_db.1: a path in the list is empty'],
    [{ geo: { city_db: 'x.mmdb' } }, 'unknown key geo.city_db'],
  ])('refuses %j naming the key', (doc, message) => {
    expect(() => parseConfig(doc, '/tmp')).toThrow(ConfigError);
    expect(() => parseConfig(doc, '/tmp')).toThrow(message);
  });

  it('reads [geo] paths (one, or a list of CSV files) against the config file, and "" as the bundled data', () => {
    const dir = tempDir();
    const file = path.join(dir, 'p.toml');
    writeFileSync(file, '[server]\nhostname = "smtp.example.com"\n');
    expect(loadConfig(file).geo).toEqual({ country_db: '', asn_db: '' });
    writeFileSync(file, '[server]\nhostname = "smtp.example.com"\n[geo]\ncountry_db = ["geo/country-ipv4.csv", "/srv/geo/country-ipv6.csv"]\nasn_db = "GeoLite2-ASN.mmdb"\n');
    expect(loadConfig(file).geo).toEqual({ country_db: [path.join(dir, 'geo/country-ipv4.csv'), '/srv/geo/country-ipv6.csv'], asn_db: path.join(dir, 'GeoLite2-ASN.mmdb') });
  });

  it('names the file and the line when the TOML does not parse', () => {
    const file = path.join(tempDir(), 'bad.toml');
    writeFileSync(file, '[server]\nhostname = "x"\nbad line here\n');
    let message = '';
    try {
      loadConfig(file);
    } catch (e) {
      message = (e as Error).message;
    }
    // file:line:column, what is wrong, and the lines around it with a caret under the spot.
    expect(message).toBe(`${file}:3:5: not valid TOML: illegal character in key\n2:  hostname = "x"\n3:  bad line here\n        ^`);
  });
});

describe('[auth] with the Dovecot backend', () => {
  const parse = (auth: Record<string, unknown>) => () => parseConfig({ server: { hostname: 'smtp.example.com', data_dir: '/tmp/x' }, auth }, '/etc/postern');

  it('needs the socket, and takes a path or inet:HOST:PORT', () => {
    expect(parse({ backend: 'dovecot' })).toThrow('auth.dovecot_socket = "": auth.backend = "dovecot" needs the socket of Dovecot\'s auth service; set it, e.g. "/run/dovecot/auth-postern" or "inet:127.0.0.1:12345"');
    expect(parse({ backend: 'dovecot', dovecot_socket: 'inet:127.0.0.1:70000' })).toThrow('the port must be 1 to 65535');
    expect(parse({ backend: 'dovecot', dovecot_socket: 'inet:[::1]:12345' })().auth.dovecot_socket).toBe('inet:[::1]:12345');
  });

  it('provisions from a template only for directory users, and only from one that can make a user', () => {
    expect(parse({ provision: 'template', template: { senders: ['{user}'], networks: ['10.0.0.0/8'] } })).toThrow('auth.provision = "template": provisioning at first login is for directory users (auth.backend = "dovecot")');
    const dovecot = { backend: 'dovecot', dovecot_socket: '/run/dovecot/auth-postern', provision: 'template' };
    expect(parse({ ...dovecot, template: { networks: ['10.0.0.0/8'] } })).toThrow('auth.template: auth.provision = "template" cannot make a user: the template has no senders');
    expect(parse({ ...dovecot, template: { senders: ['{user}'] } })).toThrow('cannot make a user: the template has no networks, countries or asns');
    expect(parse({ ...dovecot, template: { senders: ['{name}@example.com'], asns: [3320] } })).toThrow('sender "{name}@example.com" names {name}: use {user}, {localpart} or {domain}');
    expect(parse({ ...dovecot, template: { senders: ['{localpart}@example.com'], countries: ['de'] } })().auth.template).toMatchObject({ senders: ['{localpart}@example.com'], countries: ['DE'] });
  });

  it('takes only ISO 3166-1 country codes in the template, as the CLI does', () => {
    const dovecot = { backend: 'dovecot', dovecot_socket: '/run/dovecot/auth-postern', provision: 'template' };
    expect(parse({ ...dovecot, template: { senders: ['{user}'], countries: ['DE', 'XX'] } })).toThrow('"XX" is not a country: use a two-letter ISO 3166-1 code such as DE, AT or PT');
    expect(parse({ ...dovecot, template: { senders: ['{user}'], countries: ['uk'] } })).toThrow('"uk" is not a country: the ISO 3166-1 code of the United Kingdom is GB');
    expect(parse({ ...dovecot, template: { senders: ['{user}'], countries: ['Germany'] } })).toThrow('"Germany" is not a country');
    expect(parse({ ...dovecot, template: { senders: ['{user}'], countries: ['DD'] } })).toThrow('"DD" is not a country: DD is a retired code: use DE (Germany)');
    expect(parse({ ...dovecot, template: { senders: ['{user}'], countries: ['XA'] } })).toThrow('"XA" is not a country: XA (Pseudo-Accents) is not a country');
    // Kept as bindings keep them: trimmed, upper case.
    expect(parse({ ...dovecot, template: { senders: ['{user}'], countries: [' de ', 'XK'] } })().auth.template.countries).toEqual(['DE', 'XK']);
  });
});

describe('[delivery] dane', () => {
  const parse = (delivery: Record<string, unknown>) => () => parseConfig({ server: { hostname: 'smtp.example.com', data_dir: '/tmp/x' }, delivery }, '/etc/postern');

  it('needs a validating resolver on this host: dns_servers on loopback', () => {
    expect(parse({ dane: 'auto' })).toThrow('delivery.dns_servers = []: DANE (delivery.dane = "auto" or a tls_policy "dane") trusts the resolver\'s DNSSEC validation, so it must be a validating resolver on this host; run unbound on loopback');
    expect(parse({ dane: 'auto', dns_servers: ['127.0.0.1:53', '8.8.8.8:53'] })).toThrow('must be a validating resolver on this host, not 8.8.8.8:53');
    expect(parse({ tls_policy: { 'bank.example': 'dane' }, dns_servers: ['9.9.9.9:53'] })).toThrow('not 9.9.9.9:53');
    expect(parse({ dane: 'auto', dns_servers: ['127.0.0.1:53'] })().delivery.dane).toBe('auto');
  });
});
