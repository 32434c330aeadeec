/**
 * Helpers for the adversarial issue 14 suites (TOTP, recovery codes, passkeys), written from the issue text, the
 * contract (briefs/issue14-contract.md) and AUTH-FLOWS.md §3, §4, §6, §7.3, §7.4 alone: nothing from src/ is read or
 * imported. TOTP codes are computed here from the secret (RFC 4226 / RFC 6238, node:crypto), and a software WebAuthn
 * authenticator (fmt "none", ES256, a minimal CBOR encoder) answers the server's ceremonies, so that the suites can
 * forge what a browser never would: bogus signatures, foreign origins and RP IDs, clones with lower counters.
 */
import {
  createHash,
  createHmac,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign as signData,
} from 'node:crypto';
import { expect } from 'vitest';
import {
  type Json,
  postForm,
  postJson,
  type RegisteredUser,
  type Reply,
  request,
  splitToken,
} from './client.ts';
import { type Grant, toGrant } from './grants.ts';
import { type MailContext, newAccount, seen } from './issue13.ts';

// ---------- TOTP (RFC 4226, RFC 6238) ----------

export const PERIOD_S = 30;
const B32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** RFC 4648 base32, case-insensitive, padding and spaces ignored; throws on any other character. */
export function base32Decode(s: string): Buffer {
  const clean = s.replace(/[\s=]/g, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const out: number[] = [];
  for (const ch of clean) {
    const v = B32.indexOf(ch);
    if (v < 0) throw new Error(`not base32: ${JSON.stringify(ch)}`);
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

/** RFC 4226 §5.3 HOTP with dynamic truncation. */
export function hotp(
  key: Buffer,
  counter: number,
  digits = 6,
  hash: 'sha1' | 'sha256' | 'sha512' = 'sha1',
): string {
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac(hash, key).update(msg).digest();
  const offset = (mac[mac.length - 1] ?? 0) & 0x0f;
  const bin = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(bin % 10 ** digits).padStart(digits, '0');
}

export function stepAt(ms = Date.now()): number {
  return Math.floor(ms / 1000 / PERIOD_S);
}

/** The 6-digit SHA-1 code of a base32 secret for a time step. */
export function totp(secret: string, step: number): string {
  return hotp(base32Decode(secret), step);
}

/** RFC 6238 Appendix B: the SHA-1 rows (8 digits, ASCII secret "12345678901234567890"). */
export const RFC6238_SHA1_VECTORS: Array<[number, string]> = [
  [59, '94287082'],
  [1111111109, '07081804'],
  [1111111111, '14050471'],
  [1234567890, '89005924'],
  [2000000000, '69279037'],
  [20000000000, '65353130'],
];

export async function pause(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Waits, if needed, so that at least `secondsLeft` of the current step remain (codes for "now" stay "now"). */
export async function awayFromBoundary(secondsLeft = 5): Promise<void> {
  const intoStep = (Date.now() / 1000) % PERIOD_S;
  if (PERIOD_S - intoStep < secondsLeft) await pause((PERIOD_S - intoStep) * 1000 + 300);
}

/** Waits until the server's (shared, real) clock is in `step` or later. */
export async function untilStep(step: number): Promise<void> {
  const ms = step * PERIOD_S * 1000 + 300 - Date.now();
  if (ms > 0) await pause(ms);
}

/** Six digits that are no code of `secret` within ±3 steps. */
export function wrongCode(secret: string): string {
  const now = stepAt();
  const near = new Set([-3, -2, -1, 0, 1, 2, 3].map((d) => totp(secret, now + d)));
  for (;;) {
    const c = String(randomBytes(4).readUInt32BE() % 1_000_000).padStart(6, '0');
    if (!near.has(c)) return c;
  }
}

export interface OtpauthUri {
  type: string;
  label: string;
  params: URLSearchParams;
}

export function parseOtpauth(uri: string): OtpauthUri {
  const u = new URL(uri);
  expect(u.protocol, uri).toBe('otpauth:');
  // WHATWG URL keeps "totp" as the host of a non-special scheme: //totp/LABEL
  return { type: u.host, label: decodeURIComponent(u.pathname.replace(/^\//, '')), params: u.searchParams };
}

/** Bits of a recovery code as shown: dashes and spaces removed, case ignored (the contract says so). */
export function recoveryCodeBits(code: string): number {
  const c = code.replace(/[\s-]/g, '').toUpperCase();
  if (/^[0-9]+$/.test(c)) return c.length * Math.log2(10);
  if (/^[0-9A-F]+$/.test(c)) return c.length * 4;
  if (/^[0-9A-Z]+$/.test(c)) return c.length * 5; // Crockford base32 or a 36-letter alphabet, counted low
  return 0;
}

// ---------- the TOTP routes ----------

function bearer(access: string, ip?: string): Record<string, string> {
  return { authorization: `Bearer ${access}`, ...(ip === undefined ? {} : { 'x-forwarded-for': ip }) };
}

export const mfaStatus = (ctx: MailContext, access: string) =>
  request(ctx.url('/users/me/mfa'), { headers: bearer(access) });
export const startTotp = (ctx: MailContext, access: string, body: unknown) =>
  postJson(ctx.url('/users/me/mfa/totp'), body, bearer(access));
export const confirmTotp = (ctx: MailContext, access: string, body: unknown) =>
  postJson(ctx.url('/users/me/mfa/totp/confirm'), body, bearer(access));
export const regenerateCodes = (ctx: MailContext, access: string, body: unknown) =>
  postJson(ctx.url('/users/me/mfa/recovery-codes'), body, bearer(access));
export const deleteTotp = (ctx: MailContext, access: string, body: unknown) =>
  request(ctx.url('/users/me/mfa/totp'), {
    method: 'DELETE',
    headers: { ...bearer(access), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });

export const MFA_GRANT = 'urn:gatehouse:params:oauth:grant-type:mfa';
export const WEBAUTHN_GRANT = 'urn:gatehouse:params:oauth:grant-type:webauthn';

export async function passwordGrant(
  ctx: MailContext,
  u: Pick<RegisteredUser, 'username' | 'password'>,
  mode: 'form' | 'json' = 'form',
  ip = ctx.ip(),
): Promise<Reply> {
  const fields = { grant_type: 'password', username: u.username, password: u.password };
  const h = { 'x-forwarded-for': ip };
  return mode === 'form'
    ? await postForm(ctx.url('/token'), fields, h)
    : await postJson(ctx.url('/token'), fields, h);
}

/** The contract's 403 mfa_required, checked whole; returns the (tracked) mfa_token. */
export function expectMfaRequired(
  ctx: MailContext,
  r: Reply,
  what: string,
  methods?: Array<'otp' | 'recovery_code' | 'webauthn'>,
): string {
  expect(r.status, `${what}: expected 403 mfa_required, saw ${seen(r)}`).toBe(403);
  expect(r.headers.get('content-type') ?? '', what).toMatch(/^application\/json/);
  expect(r.headers.get('cache-control') ?? '', `${what}: no-store`).toMatch(/(^|,)\s*no-store\s*(,|$)/i);
  expect(r.json?.error, `${what}: ${seen(r)}`).toBe('mfa_required');
  expect(typeof r.json?.detail, `${what}: a FastAPI detail: ${seen(r)}`).toBe('string');
  expect(typeof r.json?.error_description, `${what}: ${seen(r)}`).toBe('string');
  const token = r.json?.mfa_token;
  expect(typeof token, `${what}: an mfa_token: ${seen(r)}`).toBe('string');
  ctx.track(token);
  expect(token.length, `${what}: an mfa_token of some entropy`).toBeGreaterThanOrEqual(22);
  expect(token, `${what}: opaque, not a JWT`).not.toMatch(/^eyJ[\w-]*\.[\w-]*\./);
  expect(r.json, `${what}: no tokens with mfa_required`).not.toHaveProperty('access_token');
  expect(r.json, what).not.toHaveProperty('refresh_token');
  expect(r.headers.getSetCookie(), `${what}: no cookie with mfa_required`).toEqual([]);
  if (methods !== undefined) {
    expect([...(r.json?.mfa_methods ?? [])].sort(), `${what}: mfa_methods`).toEqual([...methods].sort());
  }
  return token;
}

export async function mfaGrant(
  ctx: MailContext,
  fields: Record<string, unknown>,
  mode: 'form' | 'json' = 'form',
  ip = ctx.ip(),
): Promise<Reply> {
  const body: Record<string, unknown> = { grant_type: MFA_GRANT, ...fields };
  const h = { 'x-forwarded-for': ip };
  if (mode === 'json') return await postJson(ctx.url('/token'), body, h);
  const form: Record<string, string> = {};
  for (const [k, v] of Object.entries(body)) form[k] = typeof v === 'string' ? v : JSON.stringify(v);
  return await postForm(ctx.url('/token'), form, h);
}

/** A 400 invalid_grant from /token that issues nothing. */
export function expectGrantRefused(r: Reply, what: string): void {
  expect(r.status, `${what}: expected 400 invalid_grant, saw ${seen(r)}`).toBe(400);
  expect(r.json?.error, `${what}: ${seen(r)}`).toBe('invalid_grant');
  expect(r.json, `${what}: no token`).not.toHaveProperty('access_token');
  expect(r.headers.getSetCookie(), `${what}: no cookie`).toEqual([]);
}

/**
 * A refusal of malformed /token input: 400 OAuth-shaped, 413 for a body past the size limit (RFC 9110 §15.5.14), or
 * 422 FastAPI-shaped; no tokens, never 5xx.
 */
export function expectTokenInputRefused(r: Reply, what: string): void {
  expect(r.status, `${what}: ${seen(r)}`).not.toBe(200);
  expect(r.status >= 400 && r.status < 500, `${what}: a 4xx, saw ${seen(r)}`).toBe(true);
  if (r.status === 422) {
    expect(Array.isArray(r.json?.detail), `${what}: FastAPI 422: ${seen(r)}`).toBe(true);
  } else {
    expect([400, 413], `${what}: ${seen(r)}`).toContain(r.status);
    expect(['invalid_request', 'invalid_grant'], `${what}: ${seen(r)}`).toContain(r.json?.error);
  }
  expect(r.text, `${what}: no token`).not.toMatch(/access_token|refresh_token/);
}

export function amrOf(access: string): string[] {
  const amr = splitToken(access).payload.amr;
  expect(Array.isArray(amr), `amr must be a JSON array (RFC 8176), saw ${JSON.stringify(amr)}`).toBe(true);
  return amr as string[];
}

// ---------- accounts with TOTP ----------

export interface TotpAccount {
  u: RegisteredUser;
  /** A grant from before enrolment (amr pwd). */
  grant: Grant;
  secret: string;
  otpauthUri: string;
  recoveryCodes: string[];
  /** The last step the server has seen claimed (confirm or a successful use). */
  lastStep: number;
}

/**
 * Registers, signs in, enrols TOTP and confirms it with the previous step's code (accepted: ±30 s), so that the
 * current and the next step's codes are left for the test without waiting for a new step.
 */
export async function totpAccount(ctx: MailContext): Promise<TotpAccount> {
  const { u, grant } = await newAccount(ctx);
  const start = await startTotp(ctx, grant.access, { password: u.password });
  expect(start.status, `enrol: ${seen(start)}`).toBe(200);
  const secret = ctx.track(start.json.secret as string);
  await awayFromBoundary(4);
  const step = stepAt() - 1;
  const conf = await confirmTotp(ctx, grant.access, { code: totp(secret, step) });
  expect(conf.status, `confirm: ${seen(conf)}`).toBe(200);
  const recoveryCodes = conf.json.recovery_codes as string[];
  for (const c of recoveryCodes) ctx.track(c);
  return { u, grant, secret, otpauthUri: start.json.otpauth_uri, recoveryCodes, lastStep: step };
}

/** A code of a step the server has not seen claimed and still accepts (waits for the next step when none is left). */
export async function freshCode(a: TotpAccount): Promise<string> {
  for (;;) {
    await awayFromBoundary(3);
    const now = stepAt();
    for (const s of [now, now + 1]) {
      if (s > a.lastStep) {
        a.lastStep = s;
        return totp(a.secret, s);
      }
    }
    await untilStep(a.lastStep);
  }
}

/** Password grant → mfa_required → the mfa_token. */
export async function mfaTokenFor(
  ctx: MailContext,
  u: RegisteredUser,
  methods?: Array<'otp' | 'recovery_code' | 'webauthn'>,
): Promise<string> {
  return expectMfaRequired(ctx, await passwordGrant(ctx, u), `password grant of ${u.username}`, methods);
}

/** Full MFA sign-in with a fresh code; returns the grant. */
export async function mfaLoginWithCode(ctx: MailContext, a: TotpAccount): Promise<Grant> {
  const mfaToken = await mfaTokenFor(ctx, a.u);
  const r = await mfaGrant(ctx, { mfa_token: mfaToken, otp: await freshCode(a) });
  return toGrant(ctx, r, `MFA grant of ${a.u.username}`);
}

// ---------- CBOR (RFC 8949), just what attestation objects and COSE keys need ----------

export type Cbor =
  | number
  | string
  | Uint8Array
  | boolean
  | null
  | Cbor[]
  | Map<Cbor, Cbor>
  | { [k: string]: Cbor };

function cborHead(major: number, n: number): Buffer {
  if (n < 24) return Buffer.from([(major << 5) | n]);
  if (n < 0x100) return Buffer.from([(major << 5) | 24, n]);
  if (n < 0x10000) {
    const b = Buffer.alloc(3);
    b[0] = (major << 5) | 25;
    b.writeUInt16BE(n, 1);
    return b;
  }
  const b = Buffer.alloc(5);
  b[0] = (major << 5) | 26;
  b.writeUInt32BE(n, 1);
  return b;
}

export function cbor(v: Cbor): Buffer {
  if (typeof v === 'number') {
    if (!Number.isInteger(v)) throw new Error('CBOR: integers only');
    return v >= 0 ? cborHead(0, v) : cborHead(1, -1 - v);
  }
  if (typeof v === 'string') {
    const b = Buffer.from(v, 'utf8');
    return Buffer.concat([cborHead(3, b.length), b]);
  }
  if (v instanceof Uint8Array) return Buffer.concat([cborHead(2, v.length), Buffer.from(v)]);
  if (v === false) return Buffer.from([0xf4]);
  if (v === true) return Buffer.from([0xf5]);
  if (v === null) return Buffer.from([0xf6]);
  if (Array.isArray(v)) return Buffer.concat([cborHead(4, v.length), ...v.map(cbor)]);
  const entries: Array<[Cbor, Cbor]> = v instanceof Map ? [...v.entries()] : Object.entries(v);
  return Buffer.concat([cborHead(5, entries.length), ...entries.flatMap(([k, x]) => [cbor(k), cbor(x)])]);
}

// ---------- a software WebAuthn authenticator ----------

export const FLAG_UP = 0x01;
export const FLAG_UV = 0x04;
export const FLAG_BE = 0x08;
export const FLAG_BS = 0x10;
export const FLAG_AT = 0x40;

const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest();
const b64u = (b: Buffer) => b.toString('base64url');

export interface SoftCredential {
  id: Buffer;
  privateKey: KeyObject;
  publicKey: KeyObject;
  rpId: string;
  userHandle: Buffer;
  /** Next counter to report; `zeroCounter` credentials always report 0 (synced passkeys do). */
  counter: number;
  zeroCounter: boolean;
  backupEligible: boolean;
  backupState: boolean;
}

/** What a ceremony may forge; anything unset is what an honest authenticator on ORIGIN would send. */
export interface Forge {
  origin?: string;
  /** RP ID hashed into authenticatorData. */
  rpId?: string;
  /** clientDataJSON.type. */
  type?: string;
  /** The challenge, base64url, instead of the options' one. */
  challenge?: string;
  up?: boolean;
  uv?: boolean;
  be?: boolean;
  bs?: boolean;
  /** The counter to report in this assertion (the credential's running counter is not advanced). */
  counter?: number;
  bogusSignature?: boolean;
  /** null: no userHandle at all. */
  userHandle?: Buffer | null;
}

function flagsOf(f: Forge, cred: Pick<SoftCredential, 'backupEligible' | 'backupState'>, extra = 0): number {
  let flags = extra;
  if (f.up ?? true) flags |= FLAG_UP;
  if (f.uv ?? true) flags |= FLAG_UV;
  if (f.be ?? cred.backupEligible) flags |= FLAG_BE;
  if (f.bs ?? cred.backupState) flags |= FLAG_BS;
  return flags;
}

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0);
  return b;
}

export class SoftAuthenticator {
  readonly origin: string;
  readonly rpId: string;
  constructor(origin: string, rpId = 'localhost') {
    this.origin = origin;
    this.rpId = rpId;
  }

  /** Answers PublicKeyCredentialCreationOptionsJSON with a RegistrationResponseJSON (fmt none, ES256). */
  register(
    options: Json,
    opts: Forge & { zeroCounter?: boolean; backupEligible?: boolean; backupState?: boolean } = {},
  ): { credential: SoftCredential; response: Json } {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = publicKey.export({ format: 'jwk' });
    const credential: SoftCredential = {
      id: randomBytes(32),
      privateKey,
      publicKey,
      rpId: this.rpId,
      userHandle: Buffer.from(String(options.user?.id ?? ''), 'base64url'),
      counter: 0,
      zeroCounter: opts.zeroCounter ?? false,
      backupEligible: opts.backupEligible ?? false,
      backupState: opts.backupState ?? false,
    };
    const cose = new Map<Cbor, Cbor>([
      [1, 2],
      [3, -7],
      [-1, 1],
      [-2, Buffer.from(jwk.x ?? '', 'base64url')],
      [-3, Buffer.from(jwk.y ?? '', 'base64url')],
    ]);
    const idLen = Buffer.alloc(2);
    idLen.writeUInt16BE(credential.id.length);
    const authData = Buffer.concat([
      sha256(opts.rpId ?? this.rpId),
      Buffer.from([flagsOf(opts, credential, FLAG_AT)]),
      u32(opts.counter ?? 0),
      Buffer.alloc(16), // AAGUID: none
      idLen,
      credential.id,
      cbor(cose),
    ]);
    const clientData = Buffer.from(
      JSON.stringify({
        type: opts.type ?? 'webauthn.create',
        challenge: opts.challenge ?? options.challenge,
        origin: opts.origin ?? this.origin,
        crossOrigin: false,
      }),
    );
    const attestationObject = cbor({ fmt: 'none', attStmt: {}, authData });
    const response: Json = {
      id: b64u(credential.id),
      rawId: b64u(credential.id),
      type: 'public-key',
      response: {
        clientDataJSON: b64u(clientData),
        attestationObject: b64u(attestationObject),
        authenticatorData: b64u(authData),
        transports: ['internal'],
        publicKeyAlgorithm: -7,
        publicKey: b64u(publicKey.export({ format: 'der', type: 'spki' })),
      },
      authenticatorAttachment: 'platform',
      clientExtensionResults: {},
    };
    return { credential, response };
  }

  /** Answers PublicKeyCredentialRequestOptionsJSON with an AuthenticationResponseJSON signed by `cred`. */
  assert(cred: SoftCredential, options: Json, f: Forge = {}): Json {
    let counter: number;
    if (f.counter !== undefined) counter = f.counter;
    else if (cred.zeroCounter) counter = 0;
    else {
      cred.counter += 1;
      counter = cred.counter;
    }
    const authData = Buffer.concat([
      sha256(f.rpId ?? cred.rpId),
      Buffer.from([flagsOf(f, cred)]),
      u32(counter),
    ]);
    const clientData = Buffer.from(
      JSON.stringify({
        type: f.type ?? 'webauthn.get',
        challenge: f.challenge ?? options.challenge,
        origin: f.origin ?? this.origin,
        crossOrigin: false,
      }),
    );
    const signed = Buffer.concat([authData, sha256(clientData)]);
    const signature = signData('sha256', f.bogusSignature ? randomBytes(64) : signed, cred.privateKey);
    const userHandle = f.userHandle === undefined ? cred.userHandle : f.userHandle;
    return {
      id: b64u(cred.id),
      rawId: b64u(cred.id),
      type: 'public-key',
      response: {
        clientDataJSON: b64u(clientData),
        authenticatorData: b64u(authData),
        signature: b64u(signature),
        ...(userHandle === null ? {} : { userHandle: b64u(userHandle) }),
      },
      authenticatorAttachment: 'platform',
      clientExtensionResults: {},
    };
  }

  /** The same key material with an older counter: what a cloned authenticator would hold. */
  clone(cred: SoftCredential, counter: number): SoftCredential {
    return { ...cred, counter };
  }
}

// ---------- the passkey routes ----------

export const passkeyRegistrationOptions = (ctx: MailContext, access: string, body: unknown) =>
  postJson(ctx.url('/users/me/passkeys/registration/options'), body, bearer(access));
export const passkeyRegistrationVerify = (ctx: MailContext, access: string, body: unknown) =>
  postJson(ctx.url('/users/me/passkeys/registration/verify'), body, bearer(access));
export const listPasskeys = (ctx: MailContext, access: string) =>
  request(ctx.url('/users/me/passkeys'), { headers: bearer(access) });
export const renamePasskey = (ctx: MailContext, access: string, id: string, body: unknown) =>
  request(ctx.url(`/users/me/passkeys/${encodeURIComponent(id)}`), {
    method: 'PATCH',
    headers: { ...bearer(access), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
export const deletePasskey = (ctx: MailContext, access: string, id: string, body: unknown) =>
  request(ctx.url(`/users/me/passkeys/${encodeURIComponent(id)}`), {
    method: 'DELETE',
    headers: { ...bearer(access), 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
export const passwordlessOptions = (ctx: MailContext, body: unknown = {}, ip = ctx.ip()) =>
  postJson(ctx.url('/passkeys/authentication/options'), body, { 'x-forwarded-for': ip });
export const mfaWebauthnOptions = (ctx: MailContext, mfaToken: unknown, ip = ctx.ip()) =>
  postJson(ctx.url('/mfa/webauthn/options'), { mfa_token: mfaToken }, { 'x-forwarded-for': ip });

export async function webauthnGrant(
  ctx: MailContext,
  challengeId: unknown,
  response: unknown,
  mode: 'form' | 'json' = 'json',
  ip = ctx.ip(),
): Promise<Reply> {
  const h = { 'x-forwarded-for': ip };
  if (mode === 'json') {
    return await postJson(
      ctx.url('/token'),
      { grant_type: WEBAUTHN_GRANT, challenge_id: challengeId, webauthn_response: response },
      h,
    );
  }
  return await postForm(
    ctx.url('/token'),
    {
      grant_type: WEBAUTHN_GRANT,
      challenge_id: String(challengeId),
      webauthn_response: typeof response === 'string' ? response : JSON.stringify(response),
    },
    h,
  );
}

export interface PasskeyAccount {
  u: RegisteredUser;
  grant: Grant;
  auth: SoftAuthenticator;
  cred: SoftCredential;
  record: Json;
}

/** Options + verify over HTTP; returns the credential and the 201 record. */
export async function addPasskey(
  ctx: MailContext,
  auth: SoftAuthenticator,
  u: RegisteredUser,
  access: string,
  opts: Parameters<SoftAuthenticator['register']>[1] & { name?: string } = {},
): Promise<{ cred: SoftCredential; record: Json; options: Json }> {
  const o = await passkeyRegistrationOptions(ctx, access, { password: u.password });
  expect(o.status, `registration options: ${seen(o)}`).toBe(200);
  const { credential, response } = auth.register(o.json.options, opts);
  const v = await passkeyRegistrationVerify(ctx, access, {
    challenge_id: o.json.challenge_id,
    response,
    ...(opts.name === undefined ? {} : { name: opts.name }),
  });
  expect(v.status, `registration verify: ${seen(v)}`).toBe(201);
  return { cred: credential, record: v.json, options: o.json.options };
}

export async function passkeyAccount(
  ctx: MailContext,
  auth: SoftAuthenticator,
  opts: Parameters<typeof addPasskey>[4] = {},
): Promise<PasskeyAccount> {
  const { u, grant } = await newAccount(ctx);
  const { cred, record } = await addPasskey(ctx, auth, u, grant.access, opts);
  return { u, grant, auth, cred, record };
}

/** Public options, then an assertion forged as told, then the passwordless grant. */
export async function passwordlessLogin(
  ctx: MailContext,
  a: Pick<PasskeyAccount, 'auth' | 'cred'>,
  f: Forge = {},
  mode: 'form' | 'json' = 'json',
): Promise<Reply> {
  const o = await passwordlessOptions(ctx);
  expect(o.status, `public options: ${seen(o)}`).toBe(200);
  return await webauthnGrant(ctx, o.json.challenge_id, a.auth.assert(a.cred, o.json.options, f), mode);
}

/**
 * The access token of a passwordless login with the passkey: once an account has a second factor, changing factors
 * needs, besides the password, a code or a session that logged in with one a moment ago. A passkey has no code.
 */
export async function passkeySession(
  ctx: MailContext,
  a: Pick<PasskeyAccount, 'auth' | 'cred'>,
): Promise<string> {
  return toGrant(ctx, await passwordlessLogin(ctx, a), 'a passkey sign-in').access;
}
