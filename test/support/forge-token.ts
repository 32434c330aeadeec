import { createHmac, createPublicKey, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';

type Json = Record<string, unknown>;

const encode = (value: Json | string) =>
  Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

export function decodeToken(token: string): { header: Json; payload: Json; signature: string } {
  const [header = '', payload = '', signature = ''] = token.split('.');
  return {
    header: JSON.parse(Buffer.from(header, 'base64url').toString()),
    payload: JSON.parse(Buffer.from(payload, 'base64url').toString()),
    signature,
  };
}

export function hmacSign(header: Json, payload: Json, key: Buffer | string, hash = 'sha256'): string {
  const input = `${encode(header)}.${encode(payload)}`;
  return `${input}.${createHmac(hash, key).update(input).digest('base64url')}`;
}

export function ed25519Sign(header: Json, payload: Json, privateKey: KeyObject): string {
  const input = `${encode(header)}.${encode(payload)}`;
  return `${input}.${sign(null, Buffer.from(input), privateKey).toString('base64url')}`;
}

export interface ForgeOptions {
  /** A token the service issued, to tamper with. */
  valid: string;
  /** A token the service issued to another user, for payload swapping. */
  other: string;
  /** The service's public JWK (EdDSA), for algorithm-confusion attempts. */
  publicJwk?: Json;
  /** Signs with the service's real key, for claim-level forgeries; omitted when the test has no key. */
  signLegit?: (header: Json, payload: Json) => string;
  /** The HS256 secret when the service uses one, for algorithm substitution. */
  hmacSecret?: string;
}

/** Returns [name, token] pairs that a correct verifier must all refuse. */
export function forgedTokens(options: ForgeOptions): [string, string][] {
  const { header, payload, signature } = decodeToken(options.valid);
  const [h, p] = options.valid.split('.');
  const other = decodeToken(options.other);
  const nowSeconds = payload.iat as number;
  const cases: [string, string][] = [];

  for (const alg of ['none', 'None', 'NONE', 'nOnE']) {
    cases.push([`alg ${alg} with an empty signature`, `${encode({ ...header, alg })}.${p}.`]);
    cases.push([`alg ${alg} with the original signature`, `${encode({ ...header, alg })}.${p}.${signature}`]);
  }
  cases.push(['signature stripped', `${h}.${p}.`]);
  cases.push(['signature truncated', `${h}.${p}.${signature.slice(0, -4)}`]);
  const flipped = Buffer.from(signature, 'base64url');
  flipped[0] = (flipped[0] ?? 0) ^ 1;
  cases.push(['one signature bit flipped', `${h}.${p}.${flipped.toString('base64url')}`]);
  cases.push(['padding appended to the signature', `${h}.${p}.${signature}=`]);
  cases.push([
    'payload of another user under this signature',
    `${h}.${options.other.split('.')[1]}.${signature}`,
  ]);
  cases.push(['sub changed in place', `${h}.${encode({ ...payload, sub: other.payload.sub })}.${signature}`]);
  cases.push([
    'exp extended in place',
    `${h}.${encode({ ...payload, exp: nowSeconds + 86400 * 365 })}.${signature}`,
  ]);
  cases.push(['two segments', `${h}.${p}`]);
  cases.push(['four segments', `${h}.${p}.${signature}.${signature}`]);
  cases.push([
    'five segments shaped like a JWE',
    `${encode({ alg: 'dir', enc: 'A256GCM' })}.${p}.${p}.${p}.${p}`,
  ]);
  cases.push(['JWS JSON serialisation', JSON.stringify({ payload: p, protected: h, signature })]);
  cases.push(['whitespace inside the token', `${h}. ${p}.${signature}`]);
  cases.push(['garbage', 'not-a-token']);
  // Past the verifier's length limit, within the 16 KiB of headers a request may carry (past them: 431).
  cases.push(['a 12 KiB token', `${h}.${'A'.repeat(12 * 1024)}.${signature}`]);

  if (options.publicJwk) {
    const jwk = options.publicJwk;
    const publicKey = createPublicKey({ key: jwk as never, format: 'jwk' });
    const pem = publicKey.export({ type: 'spki', format: 'pem' }).toString();
    const confusionKeys: [string, Buffer | string][] = [
      ['the public key PEM', pem],
      ['the public key PEM with a leading newline', `\n${pem}`],
      ['the public key PEM with a leading space', ` ${pem}`],
      ['the public key PEM with a zero-width prefix', `\u200b${pem}`],
      ['the public key DER', publicKey.export({ type: 'spki', format: 'der' })],
      ['the public JWK JSON', JSON.stringify(jwk)],
      ['the JWKS document', JSON.stringify({ keys: [jwk] })],
      ['the raw public key bytes', Buffer.from(String(jwk.x), 'base64url')],
    ];
    for (const [name, key] of confusionKeys) {
      for (const [alg, hash] of [
        ['HS256', 'sha256'],
        ['HS512', 'sha512'],
      ]) {
        cases.push([`${alg} signed with ${name}`, hmacSign({ ...header, alg }, payload, key, hash)]);
      }
    }
  }

  const attacker = generateKeyPairSync('ed25519');
  const attackerJwk = attacker.publicKey.export({ format: 'jwk' });
  cases.push([
    'embedded jwk header with the attacker key',
    ed25519Sign({ ...header, jwk: attackerJwk }, payload, attacker.privateKey),
  ]);
  cases.push([
    'jku header pointing elsewhere, signed by the attacker',
    ed25519Sign(
      { ...header, kid: 'attacker', jku: 'http://127.0.0.1:9/jwks.json' },
      payload,
      attacker.privateKey,
    ),
  ]);
  cases.push(['attacker key under the real kid', ed25519Sign(header, payload, attacker.privateKey)]);

  if (options.hmacSecret) {
    cases.push([
      're-signed with HS384',
      hmacSign({ ...header, alg: 'HS384' }, payload, options.hmacSecret, 'sha384'),
    ]);
    cases.push([
      're-signed with HS512',
      hmacSign({ ...header, alg: 'HS512' }, payload, options.hmacSecret, 'sha512'),
    ]);
  }

  const legit = options.signLegit;
  if (legit) {
    const without = (key: string) =>
      Object.fromEntries(Object.entries(payload).filter(([name]) => name !== key));
    const withoutHeader = (key: string) =>
      Object.fromEntries(Object.entries(header).filter(([name]) => name !== key));
    cases.push([
      'expired an hour ago',
      legit(header, { ...payload, iat: nowSeconds - 7200, exp: nowSeconds - 3600 }),
    ]);
    cases.push(['no exp claim', legit(header, without('exp'))]);
    cases.push(['exp as a string', legit(header, { ...payload, exp: String(nowSeconds + 600) })]);
    cases.push(['exp as a boolean', legit(header, { ...payload, exp: true })]);
    cases.push(['nbf in the future', legit(header, { ...payload, nbf: nowSeconds + 3600 })]);
    cases.push([
      'iat in the future',
      legit(header, { ...payload, iat: nowSeconds + 3600, exp: nowSeconds + 4000 }),
    ]);
    cases.push(['wrong issuer', legit(header, { ...payload, iss: 'https://evil.example' })]);
    cases.push(['no issuer', legit(header, without('iss'))]);
    cases.push(['wrong audience', legit(header, { ...payload, aud: 'another-api' })]);
    cases.push(['audience array without this API', legit(header, { ...payload, aud: ['a', 'b'] })]);
    cases.push(['no audience', legit(header, without('aud'))]);
    cases.push(['typ JWT', legit({ ...header, typ: 'JWT' }, payload)]);
    cases.push(['typ rt+jwt', legit({ ...header, typ: 'rt+jwt' }, payload)]);
    cases.push(['no typ', legit(withoutHeader('typ'), payload)]);
    cases.push(['no kid', legit(withoutHeader('kid'), payload)]);
    for (const kid of [
      '../../../../dev/null',
      "' OR '1'='1",
      '$' + '{jndi:ldap://127.0.0.1/a}',
      'k'.repeat(2000),
      123,
    ]) {
      cases.push([`kid ${String(kid).slice(0, 24)}`, legit({ ...header, kid }, payload)]);
    }
    cases.push(['crit with an unknown extension', legit({ ...header, crit: ['foo'], foo: 1 }, payload)]);
    cases.push(['b64 false', legit({ ...header, b64: false, crit: ['b64'] }, payload)]);
    cases.push(['sub as a number', legit(header, { ...payload, sub: Number(payload.sub) })]);
    cases.push(['sub of nobody', legit(header, { ...payload, sub: '999999' })]);
    cases.push(['sub not an id', legit(header, { ...payload, sub: 'alice' })]);
    cases.push(['no jti', legit(header, without('jti'))]);
    cases.push(['lifetime longer than configured', legit(header, { ...payload, exp: nowSeconds + 86400 })]);
  }
  return cases;
}

/** The token with its signature's last character swapped for each other one that decodes to the same bytes. */
export function nonCanonicalSignatureVariants(token: string): string[] {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const body = token.slice(0, -1);
  const signature = token.slice(token.lastIndexOf('.') + 1);
  const bytes = Buffer.from(signature, 'base64url');
  return [...alphabet]
    .filter((last) => last !== token.at(-1))
    .filter((last) => Buffer.from(signature.slice(0, -1) + last, 'base64url').equals(bytes))
    .map((last) => body + last);
}
