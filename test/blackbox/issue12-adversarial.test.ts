/**
 * Issue 12, adversarial and black-box, on SQLite and PostgreSQL: written from the issue text and the RFCs it leans on
 * (RFC 6749 §3.3, §5.1, §5.2, §6; RFC 6750 §3.1; RFC 8693 §4.2; RFC 6265bis cookie prefixes and SameSite), without
 * reading the implementation. What the issue leaves open is discovered over HTTP: the shape of a page of messages,
 * the admin routes (GET /openapi.json), how the account page asks for its refresh cookie (the JavaScript it serves).
 * Every assertion prints what it saw.
 */
import { describe, expect, it, vi } from 'vitest';
import {
  expect422,
  type Json,
  type RegisteredUser,
  type Reply,
  registerUser,
  request,
  splitToken,
  uniqueName,
} from './support/client.ts';
import {
  allObjects,
  allStrings,
  bodyFor,
  call,
  cliSeen,
  expect4xxDetail,
  expectCookiePrefixRules,
  expectCookieRules,
  expectInsufficientScope,
  expectInvalidScope,
  expectNot5xx,
  fillPath,
  findList,
  idOf,
  isDeletion,
  loadPage,
  openapiRoutes,
  type PageAssets,
  pageOf,
  parseSetCookie,
  passwordToken,
  type Route,
  runCli,
  type SetCookie,
  scopesOf,
  seen,
  tamperedCursors,
  textOf,
  tokenRaw,
} from './support/issue12.ts';
import { DIALECTS, randomId, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 90_000, hookTimeout: 90_000 });

const READ = 'conversation:read';
const WRITE = 'conversation:write';
const MESSAGES = '/conversation/messages';
const EMOJI = '\u{1F600}';

interface Signed {
  u: RegisteredUser;
  access: string;
  refresh: string;
  tokenReply: Reply;
}

describe.each(DIALECTS)('issue 12, adversarial (%s)', (dialect) => {
  const ctx = useServer(dialect);

  async function signedIn(extra: Record<string, string> = {}, prefix = 'u'): Promise<Signed> {
    const u = await registerUser(ctx, { username: uniqueName(prefix) });
    const r = await passwordToken(ctx, u, extra);
    expect(r.status, `login ${u.username} ${JSON.stringify(extra)}: ${seen(r)}`).toBe(200);
    return { u, access: r.json.access_token, refresh: r.json.refresh_token, tokenReply: r };
  }

  const post = (access: string | undefined, body: unknown, headers: Record<string, string> = {}) =>
    call(ctx, 'POST', MESSAGES, access, body, headers);
  const list = (access: string | undefined, query = '') => call(ctx, 'GET', `${MESSAGES}${query}`, access);

  function expectStored(r: Reply, text: string, what: string): void {
    expect([200, 201], `${what}: expected 201 (or 200) with the message, saw ${seen(r)}`).toContain(r.status);
    expect(
      allStrings(r.json),
      `${what}: the answer must carry the stored (trimmed) text: ${seen(r)}`,
    ).toContain(text);
  }

  async function newestTexts(access: string, what: string): Promise<string[]> {
    const page = pageOf(await list(access), what);
    return page.items.map((m) => textOf(m, what));
  }

  async function expectSeedShape(access: string, username: string, what: string): Promise<void> {
    const r = await call(ctx, 'GET', '/conversation', access);
    expect(r.status, `${what}: ${seen(r)}`).toBe(200);
    expect(Object.keys(r.json ?? {}).sort(), `${what}: seed shape: ${seen(r)}`).toEqual([
      'conversation',
      'current_user',
    ]);
    expect(typeof r.json.conversation, `${what}: conversation must be a string: ${seen(r)}`).toBe('string');
    expect(r.json.current_user, `${what}: current_user: ${seen(r)}`).toBe(username);
  }

  // ------------------------------------------------------------------------------------------------------------
  describe('the seed contract and the JSON token flow (unchanged)', () => {
    it('GET /conversation answers exactly {conversation: string, current_user: username}', async () => {
      const a = await signedIn();
      await expectSeedShape(a.access, a.u.username, 'GET /conversation');
    });

    it('POST /token (form and JSON) still answers a bearer token with refresh_token in the body and sets no cookie', async () => {
      const u = await registerUser(ctx);
      for (const mode of ['form', 'json'] as const) {
        const r = await passwordToken(ctx, u, {}, mode);
        expect(r.status, `${mode}: ${seen(r)}`).toBe(200);
        expect(typeof r.json.access_token, `${mode}: ${seen(r)}`).toBe('string');
        expect(String(r.json.token_type).toLowerCase(), `${mode}: ${seen(r)}`).toBe('bearer');
        expect(
          typeof r.json.refresh_token,
          `${mode}: API clients keep the refresh token in the body: ${seen(r)}`,
        ).toBe('string');
        expect(r.headers.getSetCookie(), `${mode}: an API login must not set cookies: ${seen(r)}`).toEqual(
          [],
        );
      }
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe('POST /conversation/messages', () => {
    it('appends the trimmed text (201/200 with the message); GET lists it newest first; the seed shape holds', async () => {
      const a = await signedIn();
      const mk = randomId();
      const r1 = await post(a.access, { text: `  \n hello  world ${mk}\t ` });
      expectStored(r1, `hello  world ${mk}`, 'POST padded text');
      expect(allStrings(r1.json), `the answer must not keep the padding: ${seen(r1)}`).not.toContain(
        `  \n hello  world ${mk}\t `,
      );
      const r2 = await post(a.access, { text: `second ${mk}` });
      expectStored(r2, `second ${mk}`, 'POST second');
      const texts = await newestTexts(a.access, 'GET messages');
      expect(texts.slice(0, 2), `newest first: ${JSON.stringify(texts.slice(0, 5))}`).toEqual([
        `second ${mk}`,
        `hello  world ${mk}`,
      ]);
      await expectSeedShape(a.access, a.u.username, 'GET /conversation after posting');
    });

    it('without a token both routes are 401 with WWW-Authenticate: Bearer', async () => {
      for (const r of [await post(undefined, { text: 'x' }), await list(undefined)]) {
        expect(r.status, `no token: ${seen(r)}`).toBe(401);
        expect(r.headers.get('www-authenticate') ?? '', `no token: ${seen(r)}`).toMatch(/^Bearer/);
      }
    });

    it('1 and 4000 characters are accepted, 4001 is 422 at body.text; characters are code points, not UTF-16 units', async () => {
      const a = await signedIn();
      expectStored(await post(a.access, { text: 'a' }), 'a', 'one character');
      const max = `${randomId()}`.padEnd(4000, 'x');
      expectStored(await post(a.access, { text: max }), max, '4000 characters');
      expect((await newestTexts(a.access, 'after 4000'))[0], '4000 characters stored whole').toBe(max);
      const over = await post(a.access, { text: `${max}y` });
      expect422(over, 'text');
      expect((await newestTexts(a.access, 'after 4001'))[0], '4001 characters must store nothing').toBe(max);

      const emoji = EMOJI.repeat(4000);
      expectStored(
        await post(a.access, { text: emoji }),
        emoji,
        '4000 astral code points (8000 UTF-16 units)',
      );
      expect422(await post(a.access, { text: emoji + EMOJI }), 'text');

      const padded = await post(a.access, { text: ` ${max} ` });
      expectNot5xx(padded, '4000 characters with padding');
      if (padded.status < 300) {
        expect((await newestTexts(a.access, 'padded max'))[0], 'padding is trimmed before storing').toBe(max);
      } else {
        expect422(padded, 'text');
      }
    });

    it('empty, whitespace-only and control characters are 422 at body.text, and store nothing', async () => {
      const a = await signedIn();
      const mk = `keep ${randomId()}`;
      expectStored(await post(a.access, { text: mk }), mk, 'baseline');
      const refused: Array<[string, string]> = [
        ['empty', ''],
        ['one space', ' '],
        ['whitespace only', ' \t \n \r  '],
        ['NUL inside', 'a\u0000b'],
        ['NUL at the end', 'abc\u0000'],
        ['BEL', 'ring\u0007'],
        ['ESC sequence', '\u001b[31mred\u001b[0m'],
        ['DEL', 'a\u007fb'],
        ['C1 CSI', 'a\u009b31mb'],
        ['C1 NEL', 'a\u0085b'],
        ['backspace', 'abc\u0008\u0008\u0008xyz'],
      ];
      for (const [what, text] of refused) {
        const r = await post(a.access, { text });
        expect(r.status, `${what} (${JSON.stringify(text)}): expected 422, saw ${seen(r)}`).toBe(422);
        expect422(r, 'text');
      }
      expect((await newestTexts(a.access, 'after refusals'))[0], 'a refused message must not be stored').toBe(
        mk,
      );
    });

    // Corrected after the first run: the suite demanded a CRLF be stored as sent or refused. The issue forbids control
    // characters, which CR is, so storing it as sent breaks the issue; and clients that send CRLF line breaks (HTML
    // form submission normalises a textarea's line breaks to CRLF) are not wrong. Storing the line break as LF keeps
    // the text and obeys the issue, so it is a third acceptable answer, provided the answer and the list agree.
    it('newline and tab inside a message: accepted as sent (a CRLF may become LF) or refused with 422, never a 5xx', async () => {
      const a = await signedIn();
      for (const text of [
        `line one\nline two ${randomId()}`,
        `a\tb ${randomId()}`,
        `crlf\r\nx ${randomId()}`,
      ]) {
        const r = await post(a.access, { text });
        expectNot5xx(r, JSON.stringify(text));
        if (r.status < 300) {
          const stored = allStrings(r.json).includes(text) ? text : text.replaceAll('\r\n', '\n');
          expectStored(r, stored, JSON.stringify(text));
          expect((await newestTexts(a.access, 'inner whitespace'))[0], 'stored as answered').toBe(stored);
        } else {
          expect422(r, 'text');
        }
      }
    });

    it('lone surrogates and invalid UTF-8: 4xx, or stored well-formed; never a 5xx, and the list still answers', async () => {
      const a = await signedIn();
      const raw: Array<[string, Buffer]> = [
        ['lone high surrogate', Buffer.from('{"text":"a\\ud800b"}')],
        ['lone low surrogate', Buffer.from('{"text":"\\udc00"}')],
        ['reversed pair', Buffer.from('{"text":"x\\udc00\\ud800y"}')],
        [
          'invalid UTF-8 byte',
          Buffer.concat([Buffer.from('{"text":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('b"}')]),
        ],
        [
          'overlong UTF-8 slash',
          Buffer.concat([Buffer.from('{"text":"a'), Buffer.from([0xc0, 0xaf]), Buffer.from('"}')]),
        ],
        [
          'CESU-8 surrogate',
          Buffer.concat([Buffer.from('{"text":"a'), Buffer.from([0xed, 0xa0, 0x80]), Buffer.from('"}')]),
        ],
      ];
      for (const [what, body] of raw) {
        const r = await post(a.access, body);
        expectNot5xx(r, what);
        if (r.status < 300) {
          for (const s of allStrings(r.json))
            expect(s.isWellFormed(), `${what}: stored text ill-formed: ${seen(r)}`).toBe(true);
        } else {
          expect4xxDetail(r, what);
        }
        const l = await list(a.access);
        expect(l.status, `${what}: GET after it: ${seen(l)}`).toBe(200);
        for (const s of allStrings(l.json))
          expect(s.isWellFormed(), `${what}: listed text ill-formed`).toBe(true);
      }
    });

    it('wrong types and bodies: 422 at body.text for a JSON object, a FastAPI-shaped 4xx otherwise, never a 5xx', async () => {
      const a = await signedIn();
      const mk = `keep ${randomId()}`;
      expectStored(await post(a.access, { text: mk }), mk, 'baseline');
      for (const body of [
        { text: 123 },
        { text: null },
        { text: [] },
        { text: ['a'] },
        { text: {} },
        { text: true },
        {},
        { txt: 'a' },
      ]) {
        const r = await post(a.access, body);
        expect(r.status, `${JSON.stringify(body)}: expected 422, saw ${seen(r)}`).toBe(422);
        expect422(r, 'text');
      }
      for (const body of [
        '[]',
        'null',
        '"text"',
        '123',
        '{',
        '{"text":"a"',
        'not json',
        '{"text":"a","text":"b"',
      ]) {
        const r = await post(a.access, body);
        expect4xxDetail(r, `body ${body}`);
      }
      const cases: Array<[string, RequestInit]> = [
        ['JSON content type, no body', { method: 'POST', headers: { 'content-type': 'application/json' } }],
        ['no content type, no body', { method: 'POST', headers: {} }],
        ['text/plain', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello' }],
        [
          'form',
          {
            method: 'POST',
            headers: { 'content-type': 'application/x-www-form-urlencoded' },
            body: 'text=hello',
          },
        ],
        [
          'multipart',
          { method: 'POST', headers: { 'content-type': 'multipart/form-data; boundary=x' }, body: '--x--' },
        ],
      ];
      for (const [what, init] of cases) {
        const headers = { ...(init.headers as Record<string, string>), authorization: `Bearer ${a.access}` };
        const r = await request(ctx.url(MESSAGES), { ...init, headers });
        expect4xxDetail(r, what);
      }
      expect((await newestTexts(a.access, 'after bad bodies'))[0], 'nothing stored by a refused body').toBe(
        mk,
      );
    });

    it('huge bodies: 413 or another 4xx, never a 5xx', async () => {
      const a = await signedIn();
      const r1 = await post(a.access, { text: 'x'.repeat(20_000) });
      expect4xxDetail(r1, '20,000 characters');
      try {
        const r2 = await post(a.access, { text: 'y'.repeat(1 << 20) });
        expect4xxDetail(r2, '1 MiB');
      } catch (e) {
        // A server may answer 413 and close before the client has written the whole body; fetch then throws.
        expect(String(e), '1 MiB body: only a connection cut after an early answer is tolerated').toMatch(
          /fetch failed|socket|EPIPE|ECONNRESET|other side closed/i,
        );
      }
      const again = await list(a.access);
      expect(again.status, `the server still answers: ${seen(again)}`).toBe(200);
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe('GET /conversation/messages paging', () => {
    it('25 messages paged with limit=10: newest first, each exactly once, an opaque cursor, and a last page', async () => {
      const a = await signedIn();
      const mk = randomId();
      const sent: string[] = [];
      for (let i = 1; i <= 25; i++) {
        const text = `m${String(i).padStart(2, '0')} ${mk}`;
        expectStored(await post(a.access, { text }), text, `message ${i}`);
        sent.push(text);
      }
      const pages: Json[][] = [];
      let before: string | null | undefined;
      for (let n = 0; n < 10; n++) {
        const q = before === undefined ? '?limit=10' : `?limit=10&before=${encodeURIComponent(before ?? '')}`;
        const reply = await list(a.access, q);
        const page = pageOf(reply, `page ${n + 1} (${q})`);
        expect(
          page.items.length,
          `page ${n + 1}: at most 10 items, saw ${page.items.length}`,
        ).toBeLessThanOrEqual(10);
        pages.push(page.items);
        if (n === 0) {
          expect(
            page.nextKey,
            `page 1: the answer must carry a cursor (looked for next/next_cursor/cursor): ${seen(reply)}`,
          ).toBeDefined();
        }
        if (page.next === null || page.next === undefined) break;
        before = page.next;
      }
      const seenTexts = pages.flat().map((m) => textOf(m, 'paging'));
      expect(pages.length, `pages: ${pages.map((p) => p.length).join(', ')}`).toBeGreaterThanOrEqual(3);
      expect(pages[0]?.length, 'page 1 full').toBe(10);
      expect(pages[1]?.length, 'page 2 full').toBe(10);
      expect(new Set(seenTexts).size, `a message twice across pages: ${JSON.stringify(seenTexts)}`).toBe(
        seenTexts.length,
      );
      const ids = pages
        .flat()
        .map(idOf)
        .filter((x) => x !== undefined);
      expect(new Set(ids).size, `an id twice across pages: ${JSON.stringify(ids)}`).toBe(ids.length);
      expect(
        seenTexts.filter((t) => t.endsWith(mk)),
        'all 25, newest first, each once',
      ).toEqual([...sent].reverse());
    });

    it('bad limit values: a 4xx or a clamped page, never a 5xx', async () => {
      const a = await signedIn();
      for (let i = 0; i < 3; i++)
        expectStored(await post(a.access, { text: `l${i}` }), `l${i}`, `message ${i}`);
      expect(pageOf(await list(a.access, '?limit=2'), 'limit=2').items.length, 'limit=2 is honoured').toBe(2);
      for (const v of [
        '0',
        '-1',
        '1e9',
        '1000000000',
        '99999999999999999999',
        'abc',
        '',
        '1.5',
        '10abc',
        '%00',
        '0x10',
        ' 5',
        'NaN',
        'Infinity',
      ]) {
        const r = await list(a.access, `?limit=${v}`);
        expectNot5xx(r, `limit=${v}`);
        if (r.status < 300) pageOf(r, `limit=${v}`);
        else expect4xxDetail(r, `limit=${v}`);
      }
      const dup = await list(a.access, '?limit=1&limit=2');
      expectNot5xx(dup, 'limit twice');
    });

    it("a garbage, tampered or another user's cursor never yields another user's messages", async () => {
      const a = await signedIn({}, 'ca');
      const b = await signedIn({}, 'cb');
      const mkA = `A-${randomId()}`;
      const mkB = `B-${randomId()}`;
      for (let i = 0; i < 12; i++) {
        expectStored(await post(a.access, { text: `${mkA} ${i}` }), `${mkA} ${i}`, `A ${i}`);
        expectStored(await post(b.access, { text: `${mkB} ${i}` }), `${mkB} ${i}`, `B ${i}`);
      }
      const first = pageOf(await list(a.access, '?limit=5'), 'A page 1');
      expect(typeof first.next, `A page 1 must give a cursor: ${JSON.stringify(first)}`).toBe('string');
      const cursor = first.next as string;
      const bFirst = pageOf(await list(b.access, '?limit=5'), 'B page 1');
      const cursorB = typeof bFirst.next === 'string' ? bFirst.next : cursor;

      const leaks = (r: Reply, foreign: string) => allStrings(r.json).filter((s) => s.includes(foreign));
      const garbage = [
        '',
        'garbage',
        "' OR 1=1 --",
        '%00',
        'A'.repeat(4096),
        '-1',
        '0',
        '99999999999',
        '[]',
        '{}',
        '..%2F..%2F',
        cursor.toUpperCase(),
      ];
      const attempts: Array<[string, string, string, string]> = [
        ["B with A's cursor", b.access, cursor, mkA],
        ...tamperedCursors(cursor).map((c): [string, string, string, string] => [
          `B with tampered A cursor ${c}`,
          b.access,
          c,
          mkA,
        ]),
        ...tamperedCursors(cursorB).map((c): [string, string, string, string] => [
          `A with tampered B cursor ${c}`,
          a.access,
          c,
          mkB,
        ]),
        ...garbage.map((c): [string, string, string, string] => [
          `B with garbage ${c.slice(0, 30)}`,
          b.access,
          c,
          mkA,
        ]),
        ["A with B's cursor", a.access, cursorB, mkB],
      ];
      for (const [what, token, c, foreign] of attempts) {
        const r = await list(token, `?limit=50&before=${encodeURIComponent(c)}`);
        expectNot5xx(r, what);
        expect(leaks(r, foreign), `${what}: another user's messages: ${seen(r)}`).toEqual([]);
        if (r.status >= 400) expect4xxDetail(r, what);
      }
      // Query parameters naming the other user change nothing either.
      const q = `?limit=50&user_id=${a.u.id}&username=${encodeURIComponent(a.u.username)}&conversation_id=${a.u.id}&owner=${a.u.id}`;
      const r = await list(b.access, q);
      expectNot5xx(r, 'B naming A in the query');
      expect(leaks(r, mkA), `B naming A in the query: ${seen(r)}`).toEqual([]);
      const own = pageOf(await list(a.access, '?limit=50'), 'A, all');
      expect(
        own.items.map((m) => textOf(m, 'A')).filter((t) => t.includes(mkB)),
        'A sees none of B',
      ).toEqual([]);
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe('scopes', () => {
    it(`the default token grants ${READ} and ${WRITE}, in the answer and in the JWT, and never admin`, async () => {
      const a = await signedIn();
      const granted = scopesOf(a.tokenReply.json.scope);
      expect(granted, `response scope: ${seen(a.tokenReply)}`).toEqual(expect.arrayContaining([READ, WRITE]));
      expect(granted, 'response scope').not.toContain('admin');
      const claim = splitToken(a.access).payload.scope;
      expect(
        typeof claim,
        `JWT scope must be a space-delimited string (RFC 8693 §4.2): ${JSON.stringify(claim)}`,
      ).toBe('string');
      expect(scopesOf(claim), `JWT scope: ${JSON.stringify(claim)}`).toEqual(
        expect.arrayContaining([READ, WRITE]),
      );
      expect(scopesOf(claim), 'JWT scope').not.toContain('admin');
      expect(new Set(scopesOf(claim)), 'the answer names what the token carries (RFC 6749 §5.1)').toEqual(
        new Set(granted),
      );
    });

    for (const mode of ['form', 'json'] as const) {
      it(`scope=${READ} (${mode}): GET works, POST ${MESSAGES} is 403 insufficient_scope scope="${WRITE}"`, async () => {
        const a = await signedIn();
        const r = await passwordToken(ctx, a.u, { scope: READ }, mode);
        expect(r.status, `narrow login: ${seen(r)}`).toBe(200);
        if (r.json.scope !== undefined)
          expect(scopesOf(r.json.scope), `response scope: ${seen(r)}`).toEqual([READ]);
        const claim = splitToken(r.json.access_token).payload.scope;
        expect(scopesOf(claim), `JWT scope ${JSON.stringify(claim)}`).toEqual([READ]);
        const access = r.json.access_token as string;
        await expectSeedShape(access, a.u.username, 'GET /conversation with a read token');
        const l = await list(access);
        expect(l.status, `GET messages with a read token: ${seen(l)}`).toBe(200);
        const p = await post(access, { text: `denied ${randomId()}` });
        expectInsufficientScope(p, WRITE, 'POST with a read token');
        const texts = pageOf(await list(access), 'after').items.map((m) => textOf(m, 'after'));
        expect(
          texts.some((t) => t.startsWith('denied ')),
          'a 403 write must store nothing',
        ).toBe(false);
      });
    }

    it(`scope=${WRITE}: writing works, reading is 403 insufficient_scope scope="${READ}"`, async () => {
      const a = await signedIn();
      const r = await passwordToken(ctx, a.u, { scope: WRITE });
      expect(r.status, `write-only login: ${seen(r)}`).toBe(200);
      const access = r.json.access_token as string;
      expect(scopesOf(splitToken(access).payload.scope), 'JWT scope').toEqual([WRITE]);
      expectStored(await post(access, { text: 'w only' }), 'w only', 'POST with a write token');
      expectInsufficientScope(await list(access), READ, `GET ${MESSAGES} with a write-only token`);
      expectInsufficientScope(
        await call(ctx, 'GET', '/conversation', access),
        READ,
        'GET /conversation with a write-only token',
      );
    });

    it('asking for more than the user may have, or for an unknown or malformed scope, is 400 invalid_scope with no token', async () => {
      const a = await signedIn();
      const cases: Array<[string, 'form' | 'json']> = [
        ['admin', 'form'],
        ['admin', 'json'],
        [`${READ} admin`, 'form'],
        [`${READ} ${WRITE} admin`, 'form'],
        ['nonsense', 'form'],
        ['conversation:delete', 'form'],
        ['conversation:*', 'form'],
        [`${READ} nonsense`, 'json'],
      ];
      for (const [scope, mode] of cases) {
        const r = await passwordToken(ctx, a.u, { scope }, mode);
        expectInvalidScope(r, `scope="${scope}" (${mode})`);
        expect(r.json?.access_token, `scope="${scope}": no token on a refusal`).toBeUndefined();
      }
      for (const scope of [`${READ}\u0000`, `${READ}\t${WRITE}`, `${READ}"`, `${READ}\\`]) {
        const r = await passwordToken(ctx, a.u, { scope });
        expect(
          r.status,
          `scope=${JSON.stringify(scope)} (RFC 6749 §3.3 forbids those characters): ${seen(r)}`,
        ).toBe(400);
        expect(['invalid_scope', 'invalid_request'], `scope=${JSON.stringify(scope)}: ${seen(r)}`).toContain(
          r.json?.error,
        );
      }
    });

    it('refresh never widens a narrowed grant', async () => {
      const a = await signedIn();
      const narrow = async () => {
        const r = await passwordToken(ctx, a.u, { scope: READ });
        expect(r.status, `narrow login: ${seen(r)}`).toBe(200);
        return r.json.refresh_token as string;
      };
      const plain = await tokenRaw(ctx, { grant_type: 'refresh_token', refresh_token: await narrow() });
      expect(plain.status, `refresh without scope: ${seen(plain)}`).toBe(200);
      expect(
        scopesOf(splitToken(plain.json.access_token).payload.scope),
        'refresh without scope keeps the grant',
      ).toEqual([READ]);
      if (plain.json.scope !== undefined)
        expect(scopesOf(plain.json.scope), `response scope: ${seen(plain)}`).toEqual([READ]);
      expectInsufficientScope(
        await post(plain.json.access_token, { text: 'x' }),
        WRITE,
        'refreshed narrow token writing',
      );

      for (const wider of [`${READ} ${WRITE}`, WRITE, 'admin', `${READ} admin`]) {
        const r = await tokenRaw(ctx, {
          grant_type: 'refresh_token',
          refresh_token: await narrow(),
          scope: wider,
        });
        expectNot5xx(r, `refresh asking "${wider}"`);
        if (r.status === 200) {
          const got = scopesOf(splitToken(r.json.access_token).payload.scope);
          expect(got, `refresh asking "${wider}" widened the grant: ${seen(r)}`).not.toContain(WRITE);
          expect(got, `refresh asking "${wider}" widened the grant: ${seen(r)}`).not.toContain('admin');
          expect(
            r.json.scope,
            `a grant differing from the request must say so (RFC 6749 §5.1): ${seen(r)}`,
          ).toBeDefined();
          expect(new Set(scopesOf(r.json.scope)), `response scope vs JWT: ${seen(r)}`).toEqual(new Set(got));
        } else {
          expectInvalidScope(r, `refresh asking "${wider}"`);
        }
      }
    });

    it('a refresh that narrows is honoured or refused, and the answer always names what the token carries', async () => {
      const a = await signedIn();
      const r = await tokenRaw(ctx, { grant_type: 'refresh_token', refresh_token: a.refresh, scope: READ });
      expectNot5xx(r, 'narrowing refresh');
      if (r.status === 200) {
        const got = scopesOf(splitToken(r.json.access_token).payload.scope);
        const said = r.json.scope === undefined ? [READ] : scopesOf(r.json.scope);
        expect(
          new Set(got),
          `RFC 6749 §5.1: the JWT carries what the answer says (or what was asked): ${seen(r)}`,
        ).toEqual(new Set(said));
      } else {
        expectInvalidScope(r, 'narrowing refresh');
      }
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe("nobody reads or writes another user's data", () => {
    async function sessionIdOf(s: Signed): Promise<string> {
      const r = await call(ctx, 'GET', '/users/me/sessions', s.access);
      expect(r.status, `sessions: ${seen(r)}`).toBe(200);
      const items = findList(r.json, ['sessions']) ?? [];
      const current = items.find((x) => x.current === true) ?? items[0];
      expect(current?.id, `a current session with an id: ${seen(r)}`).toBeDefined();
      return String(current?.id);
    }

    it("B ending A's session (DELETE /users/me/sessions/{A's id}) is 404 and A stays signed in", async () => {
      const a = await signedIn({}, 'ia');
      const b = await signedIn({}, 'ib');
      const ids = new Set([await sessionIdOf(a), String(splitToken(a.access).payload.sid)]);
      for (const id of ids) {
        const r = await call(ctx, 'DELETE', `/users/me/sessions/${encodeURIComponent(id)}`, b.access);
        expect(r.status, `B deleting A's session ${id}: ${seen(r)}`).toBe(404);
      }
      await expectSeedShape(a.access, a.u.username, 'A after B tried to end their session');
      expect(await sessionIdOf(a), "A's session still listed").toBe([...ids][0]);
      const refreshed = await tokenRaw(ctx, { grant_type: 'refresh_token', refresh_token: a.refresh });
      expect(refreshed.status, `A's refresh token still works: ${seen(refreshed)}`).toBe(200);
    });

    it("B naming A in bodies and queries writes and reads only B's own data", async () => {
      const a = await signedIn({}, 'wa');
      const b = await signedIn({}, 'wb');
      const mk = `from-b ${randomId()}`;
      const r = await post(b.access, {
        text: mk,
        user_id: a.u.id,
        userId: a.u.id,
        conversation_id: a.u.id,
        username: a.u.username,
        owner: a.u.id,
        id: 1,
      });
      expectStored(r, mk, "B posting with A's ids in the body");
      expect((await newestTexts(b.access, 'B'))[0], "the message is B's").toBe(mk);
      expect((await newestTexts(a.access, 'A')).includes(mk), "A must not receive B's message").toBe(false);
      const conv = await call(
        ctx,
        'GET',
        `/conversation?user_id=${a.u.id}&username=${encodeURIComponent(a.u.username)}`,
        b.access,
      );
      expect(conv.json?.current_user, `GET /conversation naming A: ${seen(conv)}`).toBe(b.u.username);
      const patch = await call(ctx, 'PATCH', '/users/me', b.access, {
        id: a.u.id,
        user_id: a.u.id,
        username: a.u.username,
        age: 77,
      });
      expectNot5xx(patch, "PATCH /users/me with A's ids");
      const me = await call(ctx, 'GET', '/users/me', a.access);
      expect(me.json?.age, `A's record unchanged: ${seen(me)}`).toBe(a.u.age);
      expect(me.json?.username, `A's record unchanged: ${seen(me)}`).toBe(a.u.username);
    });

    it("walking every route in /openapi.json with B's token and A's ids never returns A's data nor touches it", async () => {
      const a = await signedIn({}, 'xa');
      const b = await signedIn({}, 'xb');
      const mk = `secret-of-a ${randomId()}`;
      const posted = await post(a.access, { text: mk });
      const msgId =
        posted.status < 300
          ? allObjects(posted.json)
              .map(idOf)
              .find((x) => x !== undefined)
          : undefined;
      const sid = await sessionIdOf(a);
      const markers = [mk, a.u.email, a.u.username];
      const leak = (r: Reply) => markers.filter((m) => r.text.toLowerCase().includes(m.toLowerCase()));
      const routes = (await openapiRoutes(ctx)).filter((r) => !r.path.startsWith('/admin/'));
      const log: string[] = [];
      for (const route of routes) {
        if (route.params.length === 0) {
          if (route.method !== 'GET') continue;
          const r = await call(ctx, 'GET', route.path, b.access);
          log.push(`GET ${route.path} → ${r.status}`);
          expectNot5xx(r, `GET ${route.path}`);
          expect(leak(r), `GET ${route.path} as B leaked A's data: ${seen(r)}`).toEqual([]);
          continue;
        }
        for (const param of route.params) {
          const candidates: Array<[string, boolean]> = [];
          if (/session/i.test(param) || (/^(id|sid)$/i.test(param) && /session/i.test(route.path)))
            candidates.push([sid, true]);
          else if (/message/i.test(param) || /messages/i.test(route.path)) {
            if (msgId !== undefined) candidates.push([msgId, true]);
          } else if (/user|name|account/i.test(param))
            candidates.push([String(a.u.id), true], [a.u.username, true]);
          else
            candidates.push(
              [sid, false],
              [String(a.u.id), false],
              [a.u.username, false],
              ...(msgId === undefined ? [] : [[msgId, false] as [string, boolean]]),
            );
          for (const [value, typed] of candidates) {
            const values = Object.fromEntries(route.params.map((p) => [p, value]));
            const p = fillPath(route.path, values);
            const body =
              route.method === 'GET' || route.method === 'DELETE'
                ? undefined
                : { text: 'hijack', email: `${randomId()}@example.com` };
            const r = await call(ctx, route.method, p, b.access, body);
            log.push(`${route.method} ${p} → ${r.status}`);
            expectNot5xx(r, `${route.method} ${p}`);
            expect(
              r.status >= 200 && r.status < 300,
              `${route.method} ${p} as B with A's ${param}: must be refused, saw ${seen(r)}`,
            ).toBe(false);
            if (typed)
              expect([403, 404], `${route.method} ${p} as B with A's ${param}: ${seen(r)}`).toContain(
                r.status,
              );
            expect(leak(r), `${route.method} ${p} as B leaked A's data: ${seen(r)}`).toEqual([]);
          }
        }
      }
      await expectSeedShape(a.access, a.u.username, `A after the walk (${log.join('; ')})`);
      expect(await sessionIdOf(a), "A's session survived the walk").toBe(sid);
      if (posted.status < 300)
        expect((await newestTexts(a.access, 'A after the walk'))[0], "A's message survived").toBe(mk);
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe('admin API under /admin/', () => {
    let adminPromise: Promise<RegisteredUser> | undefined;
    async function makeAdmin(prefix = 'adm'): Promise<RegisteredUser> {
      const u = await registerUser(ctx, { username: uniqueName(prefix) });
      const r = await runCli(ctx.db.url, ['users', 'grant-role', u.username, 'admin']);
      expect(r.code, `granting the admin role: ${cliSeen(r)}`).toBe(0);
      return u;
    }
    const admin = () => {
      adminPromise ??= makeAdmin();
      return adminPromise;
    };
    async function adminToken(u: RegisteredUser, scope = 'admin'): Promise<string> {
      const r = await passwordToken(ctx, u, { scope });
      expect(r.status, `admin login with scope=${scope}: ${seen(r)}`).toBe(200);
      expect(
        scopesOf(splitToken(r.json.access_token).payload.scope),
        `JWT scope of an admin-scoped token: ${seen(r)}`,
      ).toContain('admin');
      return r.json.access_token;
    }

    interface AdminApi {
      routes: Route[];
      list: Route;
      disable: Route;
      enable: Route;
      audit: Route;
    }
    async function adminApi(): Promise<AdminApi> {
      const routes = (await openapiRoutes(ctx)).filter((r) => r.path.startsWith('/admin/'));
      const listing = routes.map((r) => `${r.method} ${r.path}`).join(', ') || '(none)';
      const words = (r: Route) => `${r.path} ${r.op.operationId ?? ''} ${r.op.summary ?? ''}`;
      const pick = (what: string, f: (r: Route) => boolean): Route => {
        const found = routes.find(f);
        if (!found)
          throw new Error(`no admin route to ${what} in /openapi.json; its /admin/ routes: ${listing}`);
        return found;
      };
      const byPath = (re: RegExp) => (r: Route) => r.method !== 'GET' && re.test(r.path);
      const byWords = (re: RegExp) => (r: Route) => r.method !== 'GET' && re.test(words(r));
      return {
        routes,
        list: pick(
          'list users (GET /admin/users...)',
          (r) => r.method === 'GET' && r.params.length === 0 && /users/i.test(r.path),
        ),
        disable: routes.find(byPath(/disabl/i)) ?? pick('disable a user', byWords(/disabl/i)),
        enable: routes.find(byPath(/enabl/i)) ?? pick('enable a user', byWords(/enabl/i)),
        audit: pick(
          "read a user's audit events",
          (r) => r.method === 'GET' && r.params.length > 0 && /audit|event|activit/i.test(words(r)),
        ),
      };
    }

    /** Calls an admin route on a user, trying the id and then the username for its path parameter. */
    async function onUser(
      route: Route,
      target: RegisteredUser,
      access: string | undefined,
      body?: unknown,
    ): Promise<Reply> {
      const send = (value: (p: string) => string) => {
        const p = fillPath(route.path, Object.fromEntries(route.params.map((x) => [x, value(x)])));
        const b = body ?? (route.method === 'GET' || route.method === 'DELETE' ? undefined : {});
        return call(ctx, route.method, p, access, b);
      };
      const first = await send((p) => (/name/i.test(p) ? target.username : String(target.id)));
      if ((first.status === 404 || first.status === 422) && route.params.some((p) => !/name/i.test(p))) {
        const second = await send(() => target.username);
        if (second.status < 300) return second;
      }
      return first;
    }
    function stateBody(route: Route, disabled: boolean): unknown {
      return /disabl|enabl/i.test(route.path) ? {} : { disabled };
    }

    it("no token 401; a user's token 403; an admin's default token (no admin scope) 403 insufficient_scope; an admin-scoped token 200", async () => {
      const api = await adminApi();
      const adm = await admin();
      const none = await call(ctx, 'GET', api.list.path);
      expect(none.status, `no token: ${seen(none)}`).toBe(401);
      expect(none.headers.get('www-authenticate') ?? '', `no token: ${seen(none)}`).toMatch(/^Bearer/);

      const user = await signedIn();
      const asUser = await call(ctx, 'GET', api.list.path, user.access);
      expect(asUser.status, `a normal user's token: ${seen(asUser)}`).toBe(403);

      const def = await passwordToken(ctx, adm);
      expect(def.status, `admin default login: ${seen(def)}`).toBe(200);
      expect(
        scopesOf(def.json.scope),
        `an admin's default token must not carry admin: ${seen(def)}`,
      ).not.toContain('admin');
      expect(
        scopesOf(splitToken(def.json.access_token).payload.scope),
        "JWT of an admin's default token",
      ).not.toContain('admin');
      expectInsufficientScope(
        await call(ctx, 'GET', api.list.path, def.json.access_token),
        'admin',
        'admin role without the admin scope',
      );

      const ok = await call(ctx, 'GET', api.list.path, await adminToken(adm));
      expect(ok.status, `admin-scoped token: ${seen(ok)}`).toBe(200);
      const search = await call(
        ctx,
        'GET',
        `${api.list.path}?search=${encodeURIComponent(user.u.username)}`,
        await adminToken(adm),
      );
      expect(search.status, `admin search: ${seen(search)}`).toBe(200);
      expect(search.text.toLowerCase(), `admin search for ${user.u.username}: ${seen(search)}`).toContain(
        user.u.username.toLowerCase(),
      );
      expect(search.text, `no password hash in an admin answer: ${seen(search)}`).not.toMatch(
        /\$argon2|\$2[aby]\$/,
      );
      const query = ((api.list.op.parameters ?? []) as Json[])
        .filter((x) => x.in === 'query')
        .map((x) => String(x.name));
      expect(
        query.some((n) => /limit|page|size|cursor|before|after|offset/i.test(n)),
        `the admin user list pages: its query parameters are ${JSON.stringify(query)}`,
      ).toBe(true);
      if (query.includes('limit')) {
        const one = await call(ctx, 'GET', `${api.list.path}?limit=1`, await adminToken(adm));
        expect(one.status, `limit=1: ${seen(one)}`).toBe(200);
        expect((findList(one.json, ['users']) ?? []).length, `limit=1: ${seen(one)}`).toBeLessThanOrEqual(1);
      }
    });

    it('normal user asking /token for scope=admin is 400 invalid_scope', async () => {
      const user = await signedIn();
      expectInvalidScope(await passwordToken(ctx, user.u, { scope: 'admin' }), 'non-admin asking admin');
    });

    it('every /admin/ route refuses tokens without admin rights (401/403) and changes nothing', async () => {
      const api = await adminApi();
      const adm = await admin();
      const victim = await signedIn({}, 'vic');
      const normal = await signedIn();
      const def = await passwordToken(ctx, adm);
      const tokens: Array<[string, string | undefined]> = [
        ['no token', undefined],
        ["a user's token", normal.access],
        ["an admin's token without the admin scope", def.json.access_token],
      ];
      for (const route of api.routes) {
        for (const [who, token] of tokens) {
          const r = await onUser(route, victim.u, token);
          expect([401, 403], `${route.method} ${route.path} with ${who}: ${seen(r)}`).toContain(r.status);
          if (token === undefined) expect(r.status, `${route.method} ${route.path} with no token`).toBe(401);
          expect(
            r.text.includes(victim.u.email),
            `${route.method} ${route.path} with ${who} leaked the victim: ${seen(r)}`,
          ).toBe(false);
        }
      }
      await expectSeedShape(victim.access, victim.u.username, "the victim's token after the attempts");
      const login = await passwordToken(ctx, victim.u);
      expect(login.status, `the victim can still log in: ${seen(login)}`).toBe(200);
    });

    it('disable: live tokens stop at once; the right password is invalid_grant "disabled", a wrong one the usual answer; enable restores; both audited with the acting admin', async () => {
      const api = await adminApi();
      const adm = await admin();
      const token = await adminToken(adm);
      const v = await signedIn({}, 'dis');
      const other = await signedIn();
      const wrong = async (username: string) => {
        const r = await tokenRaw(ctx, {
          grant_type: 'password',
          username,
          password: `Wrong-${randomId(8)}-pw`,
        });
        const { request_id: _ignored, ...body } = (r.json ?? {}) as Json;
        return { status: r.status, body, r };
      };
      const baseline = await wrong(other.u.username);
      expect(baseline.status, `baseline wrong password: ${seen(baseline.r)}`).toBe(400);

      const d = await onUser(api.disable, v.u, token, stateBody(api.disable, true));
      expect(d.status >= 200 && d.status < 300, `${api.disable.method} ${api.disable.path}: ${seen(d)}`).toBe(
        true,
      );

      for (const p of ['/conversation', '/users/me', MESSAGES]) {
        const r = await call(ctx, 'GET', p, v.access);
        expect(r.status, `disabled user's live access token on ${p}: ${seen(r)}`).toBe(401);
      }
      const refresh = await tokenRaw(ctx, { grant_type: 'refresh_token', refresh_token: v.refresh });
      expect(refresh.status, `disabled user's refresh token: ${seen(refresh)}`).toBe(400);
      expect(refresh.json?.error, `disabled user's refresh token: ${seen(refresh)}`).toBe('invalid_grant');

      const right = await passwordToken(ctx, v.u);
      expect(right.status, `disabled user, right password: ${seen(right)}`).toBe(400);
      expect(right.json?.error, `disabled user, right password: ${seen(right)}`).toBe('invalid_grant');
      expect(
        `${right.json?.error_description} ${right.json?.detail}`,
        `must say disabled: ${seen(right)}`,
      ).toMatch(/disabled/i);
      expect(right.json?.access_token, 'no token for a disabled user').toBeUndefined();

      const wrongForDisabled = await wrong(v.u.username);
      expect(
        { status: wrongForDisabled.status, body: wrongForDisabled.body },
        'a wrong password on a disabled account answers like any wrong password',
      ).toEqual({
        status: baseline.status,
        body: baseline.body,
      });
      const unknown = await wrong(uniqueName('nobody'));
      expect(
        { status: unknown.status, body: unknown.body },
        'an unknown user answers like a wrong password',
      ).toEqual({ status: baseline.status, body: baseline.body });

      const e = await onUser(api.enable, v.u, token, stateBody(api.enable, false));
      expect(e.status >= 200 && e.status < 300, `${api.enable.method} ${api.enable.path}: ${seen(e)}`).toBe(
        true,
      );
      const back = await passwordToken(ctx, v.u);
      expect(back.status, `enabled again, login: ${seen(back)}`).toBe(200);
      await expectSeedShape(back.json.access_token, v.u.username, 'a token after enabling');

      const audit = await onUser(api.audit, v.u, token);
      expect(audit.status, `${api.audit.method} ${api.audit.path}: ${seen(audit)}`).toBe(200);
      for (const [what, re] of [
        ['disable', /disabl/i],
        ['enable', /enabl/i],
      ] as const) {
        const events = allObjects(audit.json).filter((o) =>
          Object.values(o).some((x) => typeof x === 'string' && re.test(x)),
        );
        expect(events.length, `no ${what} event in the user's admin audit: ${seen(audit)}`).toBeGreaterThan(
          0,
        );
        const byAdmin = events.some((ev) => {
          const s = JSON.stringify(ev).toLowerCase();
          if (s.includes(adm.username.toLowerCase())) return true;
          return allObjects(ev).some((o) =>
            Object.entries(o).some(
              ([k, x]) => /actor|admin|by/i.test(k) && (x === adm.id || x === String(adm.id)),
            ),
          );
        });
        expect(
          byAdmin,
          `the ${what} event must name the acting admin ${adm.username} (id ${adm.id}): ${JSON.stringify(events)}`,
        ).toBe(true);
      }
    });

    it('revoking the admin role stops an admin-scoped token at once', async () => {
      const api = await adminApi();
      const second = await makeAdmin('adm2');
      const token = await adminToken(second);
      const before = await call(ctx, 'GET', api.list.path, token);
      expect(before.status, `before revoking: ${seen(before)}`).toBe(200);
      const r = await runCli(ctx.db.url, ['users', 'revoke-role', second.username, 'admin']);
      expect(r.code, cliSeen(r)).toBe(0);
      const after = await call(ctx, 'GET', api.list.path, token);
      expect([401, 403], `admin-scoped token after the role was revoked: ${seen(after)}`).toContain(
        after.status,
      );
      expectInvalidScope(
        await passwordToken(ctx, second, { scope: 'admin' }),
        'asking admin after the role was revoked',
      );
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe('the gatehouse CLI', () => {
    it('--help exits 0 and lists the commands; per-command help too', async () => {
      const r = await runCli(ctx.db.url, ['--help']);
      expect(r.code, cliSeen(r)).toBe(0);
      for (const word of ['users', 'sessions', 'keys', 'migrate', 'seed-users', 'import']) {
        expect(r.stdout + r.stderr, `--help must list ${word}: ${cliSeen(r)}`).toContain(word);
      }
      const u = await runCli(ctx.db.url, ['users', '--help']);
      expect(u.code, cliSeen(u)).toBe(0);
      for (const word of [
        'list',
        'show',
        'disable',
        'enable',
        'unlock',
        'delete',
        'grant-role',
        'revoke-role',
      ]) {
        expect(u.stdout + u.stderr, `users --help must list ${word}: ${cliSeen(u)}`).toContain(word);
      }
    });

    it('npx gatehouse --help works through the package bin', async () => {
      const r = await runCli(ctx.db.url, ['--help'], 'npx');
      expect(r.code, cliSeen(r)).toBe(0);
      expect(r.stdout + r.stderr, cliSeen(r)).toContain('users');
    });

    it('users show: a missing user exits 1 with a clear message on stderr; an existing one shows without secrets', async () => {
      const missing = `nosuch_${randomId()}`;
      const r = await runCli(ctx.db.url, ['users', 'show', missing]);
      expect(r.code, cliSeen(r)).toBe(1);
      expect(r.stderr, `stderr must say the user is missing: ${cliSeen(r)}`).toMatch(
        new RegExp(`${missing}|not found|no such|unknown user|does not exist`, 'i'),
      );
      const u = await registerUser(ctx);
      const s = await runCli(ctx.db.url, ['users', 'show', u.username, '--json']);
      expect(s.code, cliSeen(s)).toBe(0);
      let parsed: unknown;
      expect(
        () => {
          parsed = JSON.parse(s.stdout);
        },
        `users show --json must print JSON: ${cliSeen(s)}`,
      ).not.toThrow();
      expect(allStrings(parsed), cliSeen(s)).toContain(u.username);
      expect(s.stdout + s.stderr, `no password hash: ${cliSeen(s)}`).not.toMatch(/\$argon2|\$2[aby]\$/);
      const noName = await runCli(ctx.db.url, ['users', 'show']);
      expect(noName.code, `users show without NAME must fail: ${cliSeen(noName)}`).not.toBe(0);
    });

    it('users list --json prints valid JSON holding the registered users, without password hashes', async () => {
      const prefix = `ls${randomId(3)}`;
      const u1 = await registerUser(ctx, { username: `${prefix}_one` });
      const u2 = await registerUser(ctx, { username: `${prefix}_two` });
      const all = await runCli(ctx.db.url, ['users', 'list', '--json']);
      expect(all.code, cliSeen(all)).toBe(0);
      expect(
        () => JSON.parse(all.stdout),
        `users list --json must print JSON only: ${cliSeen(all)}`,
      ).not.toThrow();
      const found = await runCli(ctx.db.url, ['users', 'list', '--search', prefix, '--json']);
      expect(found.code, cliSeen(found)).toBe(0);
      const names = allStrings(JSON.parse(found.stdout));
      expect(names, cliSeen(found)).toEqual(expect.arrayContaining([u1.username, u2.username]));
      expect(all.stdout + found.stdout, 'no password hash in the listing').not.toMatch(/\$argon2|\$2[aby]\$/);
    });

    it('users disable and enable through the CLI act on the same service as the API', async () => {
      const v = await signedIn({}, 'cli');
      const d = await runCli(ctx.db.url, ['users', 'disable', v.u.username]);
      expect(d.code, cliSeen(d)).toBe(0);
      const live = await call(ctx, 'GET', '/conversation', v.access);
      expect(live.status, `a live token after \`users disable\`: ${seen(live)}`).toBe(401);
      const right = await passwordToken(ctx, v.u);
      expect(right.json?.error, `login after \`users disable\`: ${seen(right)}`).toBe('invalid_grant');
      expect(`${right.json?.error_description} ${right.json?.detail}`, seen(right)).toMatch(/disabled/i);
      const e = await runCli(ctx.db.url, ['users', 'enable', v.u.username]);
      expect(e.code, cliSeen(e)).toBe(0);
      const back = await passwordToken(ctx, v.u);
      expect(back.status, `login after \`users enable\`: ${seen(back)}`).toBe(200);
      const missing = await runCli(ctx.db.url, ['users', 'disable', `nosuch_${randomId()}`]);
      expect(missing.code, `disabling a missing user: ${cliSeen(missing)}`).toBe(1);
    });

    it('an unknown command exits 2 (at least non-zero) with usage', async () => {
      const r = await runCli(ctx.db.url, [`frobnicate${randomId(2)}`]);
      expect(r.code, cliSeen(r)).not.toBe(0);
      expect(r.code, `exit codes mean something: 2 is usage: ${cliSeen(r)}`).toBe(2);
      expect(r.stdout + r.stderr, cliSeen(r)).toMatch(/usage/i);
    });
  });

  // ------------------------------------------------------------------------------------------------------------
  describe('the account page at /', () => {
    let assets: Promise<PageAssets> | undefined;
    const page = () => {
      assets ??= loadPage(ctx);
      return assets;
    };

    it('GET / is 200 text/html with a CSP allowing no inline script, and the HTML has none', async () => {
      const { page: r, files } = await page();
      expect(r.status, `GET /: ${seen(r)}`).toBe(200);
      expect(r.headers.get('content-type') ?? '', `GET /: ${seen(r)}`).toMatch(/^text\/html/i);
      const csp = r.headers.get('content-security-policy');
      expect(csp, `GET /: no CSP: ${seen(r)}`).not.toBeNull();
      const directives = new Map<string, string[]>();
      for (const d of (csp ?? '').split(';')) {
        const [name, ...values] = d.trim().split(/\s+/);
        if (name) directives.set(name.toLowerCase(), values);
      }
      for (const name of ['script-src', 'script-src-elem', 'script-src-attr']) {
        const values =
          directives.get(name) ?? (name === 'script-src' ? directives.get('default-src') : undefined);
        if (values === undefined) continue;
        expect(values, `${name} must not allow inline script: ${csp}`).not.toContain("'unsafe-inline'");
      }
      expect(
        directives.has('script-src') || directives.has('default-src'),
        `CSP without script-src or default-src: ${csp}`,
      ).toBe(true);
      for (const m of r.text.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/gi)) {
        expect(
          /\bsrc\s*=/.test(m[1] ?? '') || (m[2] ?? '').trim() === '',
          `an inline <script> in the page: ${m[0].slice(0, 200)}`,
        ).toBe(true);
      }
      expect(r.text, 'inline event handlers in the page').not.toMatch(/<[^>]+\son[a-z]+\s*=/i);
      expect(files.length, `the page loads no same-origin script: ${r.text.slice(0, 500)}`).toBeGreaterThan(
        0,
      );
    });

    it('cookie sign-in: HttpOnly SameSite=Strict refresh cookie (__Host- when Secure), never in the body; a cross-site POST with it is 403 and rotates nothing', async () => {
      const found = await page();
      expect(found.page.status, `GET /: ${seen(found.page)}`).toBe(200);
      const u = await registerUser(ctx);
      const origin = ctx.server.baseUrl;
      const custom = Object.fromEntries(found.headerPairs);
      const headerSets = Object.keys(custom).length > 0 ? [custom, {}] : [{}];
      const paths = [...new Set([...found.pathCandidates, '/token'])];
      const extrasSets = Object.keys(found.passwordExtras).length > 0 ? [found.passwordExtras, {}] : [{}];
      const tried: string[] = [];
      let signIn:
        | { path: string; headers: Record<string, string>; r: Reply; cookies: SetCookie[] }
        | undefined;
      search: for (const p of paths) {
        for (const hs of headerSets) {
          for (const mode of ['form', 'json'] as const) {
            for (const extras of extrasSets) {
              const { type, body } = bodyFor(mode, {
                grant_type: 'password',
                username: u.username,
                password: u.password,
                ...extras,
              });
              const r = await request(ctx.url(p), {
                method: 'POST',
                headers: { origin, 'sec-fetch-site': 'same-origin', ...hs, 'content-type': type },
                body,
              });
              const cookies = r.headers
                .getSetCookie()
                .map(parseSetCookie)
                .filter((c) => !isDeletion(c));
              tried.push(
                `POST ${p} ${mode} ${JSON.stringify({ ...hs, ...extras })} → ${r.status}, ${cookies.length} cookie(s)`,
              );
              if (r.status < 300 && cookies.length > 0) {
                signIn = { path: p, headers: hs, r, cookies };
                break search;
              }
            }
          }
        }
      }
      if (!signIn) {
        throw new Error(
          `no sign-in that sets a refresh cookie was found. Page scripts: ${found.files.join(', ') || '(none)'}; headers the JS names: ${JSON.stringify(found.headerPairs)}; paths: ${JSON.stringify(found.pathCandidates)}; body fields: ${JSON.stringify(found.passwordExtras)}\ntried:\n${tried.join('\n')}`,
        );
      }
      const refreshCookie =
        signIn.cookies.find((c) => /refresh/i.test(c.name)) ??
        [...signIn.cookies].sort((x, y) => y.value.length - x.value.length)[0];
      if (!refreshCookie) throw new Error('unreachable: a cookie was found');
      expectCookieRules(refreshCookie, `sign-in ${signIn.path}`);
      for (const c of signIn.cookies) {
        expectCookiePrefixRules(c, `sign-in cookie ${c.name}`);
      }
      expect(
        signIn.r.text.includes(refreshCookie.value),
        `the cookie-mode answer must not carry the refresh token: ${seen(signIn.r)}`,
      ).toBe(false);
      expect(
        typeof signIn.r.json?.refresh_token === 'string' && signIn.r.json.refresh_token.length > 0,
        `cookie mode: refresh_token in the body: ${seen(signIn.r)}`,
      ).toBe(false);
      const access0 = signIn.r.json?.access_token as string;
      expect(
        typeof access0,
        `cookie sign-in gives the access token in the body (kept in memory): ${seen(signIn.r)}`,
      ).toBe('string');
      await expectSeedShape(access0, u.username, 'access token from the cookie sign-in');

      const refreshEvents = async (access: string): Promise<number> => {
        const r = await call(ctx, 'GET', '/users/me/activity?limit=100', access);
        expect(r.status, `activity: ${seen(r)}`).toBe(200);
        return (findList(r.json, ['events']) ?? []).filter((e) =>
          /refresh/i.test(String(e.event ?? e.type ?? '')),
        ).length;
      };
      const n0 = await refreshEvents(access0);

      // The page's own refresh: the cookie, same origin, whatever header or field its code sends.
      const cookieHeader = (c: SetCookie) => `${c.name}=${c.value}`;
      const cookiePath = refreshCookie.attrs.get('path');
      const refreshPaths = [
        ...new Set([
          ...(cookiePath && cookiePath !== '/' ? [cookiePath] : []),
          signIn.path,
          ...found.pathCandidates,
          '/token',
        ]),
      ];
      const refreshBodies: Array<{ type?: string; body?: string; label: string }> = [
        { ...bodyFor('form', { grant_type: 'refresh_token', ...found.refreshExtras }), label: 'form' },
        { ...bodyFor('json', { grant_type: 'refresh_token', ...found.refreshExtras }), label: 'json' },
        { ...bodyFor('form', { grant_type: 'refresh_token' }), label: 'form, no extras' },
        { label: 'no body' },
        { type: 'application/json', body: '{}', label: '{}' },
      ];
      const refreshTried: string[] = [];
      let legit: { path: string; type?: string; body?: string; r: Reply } | undefined;
      hunt: for (const p of refreshPaths) {
        for (const b of refreshBodies) {
          const r = await request(ctx.url(p), {
            method: 'POST',
            headers: {
              origin,
              'sec-fetch-site': 'same-origin',
              ...signIn.headers,
              cookie: cookieHeader(refreshCookie),
              ...(b.type ? { 'content-type': b.type } : {}),
            },
            ...(b.body === undefined ? {} : { body: b.body }),
          });
          refreshTried.push(`POST ${p} ${b.label} → ${r.status}`);
          if (r.status < 300 && typeof r.json?.access_token === 'string') {
            legit = {
              path: p,
              ...(b.type ? { type: b.type } : {}),
              ...(b.body === undefined ? {} : { body: b.body }),
              r,
            };
            break hunt;
          }
        }
      }
      if (!legit) throw new Error(`no cookie refresh found; tried:\n${refreshTried.join('\n')}`);
      const rotated = legit.r.headers
        .getSetCookie()
        .map(parseSetCookie)
        .filter((c) => !isDeletion(c) && c.name === refreshCookie.name);
      expect(rotated.length, `a cookie refresh rotates the cookie: ${seen(legit.r)}`).toBe(1);
      const cookie1 = rotated[0] as SetCookie;
      expectCookieRules(cookie1, `refresh ${legit.path}`);
      expect(
        legit.r.text.includes(cookie1.value),
        `refresh answer carries the refresh token: ${seen(legit.r)}`,
      ).toBe(false);
      const access1 = legit.r.json.access_token as string;
      const n1 = await refreshEvents(access1);
      expect(
        n1,
        'the audit trail counts the legitimate refresh (else "rotates nothing" proves nothing)',
      ).toBe(n0 + 1);

      const crossSite = async (originValue: string, variant: 'mimic' | 'form' | 'text') => {
        const fields = { grant_type: 'refresh_token', ...found.refreshExtras };
        const shaped =
          variant === 'mimic'
            ? { type: legit?.type, body: legit?.body }
            : variant === 'form'
              ? bodyFor('form', fields)
              : { type: 'text/plain', body: JSON.stringify(fields) };
        return await request(ctx.url(legit?.path ?? '/token'), {
          method: 'POST',
          headers: {
            origin: originValue,
            'sec-fetch-site': 'cross-site',
            'sec-fetch-mode': 'no-cors',
            cookie: cookieHeader(cookie1),
            ...(shaped.type ? { 'content-type': shaped.type } : {}),
          },
          ...(shaped.body === undefined ? {} : { body: shaped.body }),
        });
      };
      const otherPort = `http://127.0.0.1:${ctx.server.port === 65535 ? 65534 : ctx.server.port + 1}`;
      for (const o of ['https://evil.test', 'null', 'http://127.0.0.1.evil.test', otherPort]) {
        for (const variant of ['mimic', 'form', 'text'] as const) {
          const r = await crossSite(o, variant);
          const what = `cross-site POST ${legit.path} (${variant}) with Origin: ${o} and the cookie`;
          if (variant === 'mimic') expect(r.status, `${what}: expected 403, saw ${seen(r)}`).toBe(403);
          else
            expect(r.status >= 400 && r.status < 500, `${what}: must be refused, saw ${seen(r)}`).toBe(true);
          expect(r.json?.access_token, `${what}: handed out a token: ${seen(r)}`).toBeUndefined();
          expect(
            r.headers
              .getSetCookie()
              .map(parseSetCookie)
              .filter((c) => !isDeletion(c)),
            `${what}: set a cookie: ${seen(r)}`,
          ).toEqual([]);
        }
      }
      expect(await refreshEvents(access1), 'a refused cross-site refresh rotated something').toBe(n1);
      const after = await request(ctx.url(legit.path), {
        method: 'POST',
        headers: {
          origin,
          'sec-fetch-site': 'same-origin',
          ...signIn.headers,
          cookie: cookieHeader(cookie1),
          ...(legit.type ? { 'content-type': legit.type } : {}),
        },
        ...(legit.body === undefined ? {} : { body: legit.body }),
      });
      expect(after.status, `the page's own refresh still works with the cookie: ${seen(after)}`).toBeLessThan(
        300,
      );
    });
  });
});
