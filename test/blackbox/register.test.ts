import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import {
  expect422,
  expectJsonContentType,
  expectLogsFreeOf,
  expectNoStore,
  header,
  login,
  postForm,
  postJson,
  rawHead,
  rawHttp,
  registerUser,
  request,
  strongPassword,
  uniqueName,
} from './support/client.ts';
import { DIALECTS, randomId, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

const toFullwidth = (s: string) =>
  [...s].map((c) => (/[!-~]/.test(c) ? String.fromCodePoint(c.codePointAt(0)! + 0xfee0) : c)).join('');

describe.each(DIALECTS)('POST /register (%s)', (dialect) => {
  const ctx = useServer(dialect);

  const body = (over: Record<string, unknown> = {}) => {
    const username = uniqueName('r');
    return {
      username,
      email: `${username}@example.com`,
      password: ctx.track(strongPassword()),
      age: 30,
      level: 'intermediate',
      ...over,
    };
  };

  describe('success shape', () => {
    it('answers 200 with exactly {id, username, email, age, level} on /register/ and /register', async () => {
      for (const p of ['/register/', '/register']) {
        const b = body();
        const r = await postJson(ctx.url(p), b);
        expect(r.status, r.text).toBe(200);
        expectJsonContentType(r);
        expect(Object.keys(r.json).sort()).toEqual(['age', 'email', 'id', 'level', 'username']);
        expect(Number.isInteger(r.json.id)).toBe(true);
        expect(r.json.username).toBe(b.username);
        expect(r.json.email.toLowerCase()).toBe(b.email.toLowerCase());
        expect(r.json.age).toBe(30);
        expect(r.json.level).toBe('intermediate');
      }
    });

    it('gives each user a distinct integer id', async () => {
      const a = await registerUser(ctx);
      const b = await registerUser(ctx);
      expect(a.id).not.toBe(b.id);
    });

    it('accepts every level of the enum', async () => {
      for (const level of ['beginner', 'intermediate', 'advanced']) {
        const r = await postJson(ctx.url('/register/'), body({ level }));
        expect(r.status, r.text).toBe(200);
        expect(r.json.level).toBe(level);
      }
    });

    it('never returns the password or a hash (checklist 15)', async () => {
      const b = body();
      const r = await postJson(ctx.url('/register/'), b);
      expect(r.status).toBe(200);
      expect(r.text).not.toContain(b.password);
      expect(r.text).not.toMatch(/\$argon2|\$2[aby]\$|scrypt|hashed_password|"password"/);
    });

    it('marks the user data as not cacheable (checklist 3)', async () => {
      const r = await postJson(ctx.url('/register/'), body());
      expect(r.status).toBe(200);
      expectNoStore(r);
    });

    it('ignores unknown extra fields and never echoes them (mass assignment, checklist 13)', async () => {
      const marker = `EXTRA-${uniqueName('x')}`;
      const b = {
        ...body(),
        id: 987654321,
        role: 'admin',
        is_superuser: true,
        is_admin: true,
        hashed_password: '$argon2id$v=19$m=1,t=1,p=1$AAAA$AAAA',
        created_at: '1999-01-01T00:00:00Z',
        note: marker,
      };
      const r = await postJson(ctx.url('/register/'), b);
      expect(r.status, r.text).toBe(200);
      expect(Object.keys(r.json).sort()).toEqual(['age', 'email', 'id', 'level', 'username']);
      expect(r.json.id).not.toBe(987654321);
      expect(r.text).not.toContain(marker);
      // the injected hash was not stored: the real password still logs in
      await login(ctx, b.username, b.password);
    });

    it('ignores fields named like Object.prototype members', async () => {
      const b = body();
      const raw = JSON.stringify(b).replace(
        /}$/,
        ',"hasOwnProperty":"x","toString":"y","valueOf":1,"isPrototypeOf":null}',
      );
      const r = await postJson(ctx.url('/register/'), raw);
      expect(r.status, r.text).toBe(200);
      expect(Object.keys(r.json).sort()).toEqual(['age', 'email', 'id', 'level', 'username']);
    });

    it('survives __proto__ / constructor.prototype pollution attempts', async () => {
      const b = body();
      const raw = JSON.stringify(b).replace(
        /}$/,
        ',"__proto__":{"isAdmin":true,"age":1},"constructor":{"prototype":{"isAdmin":true}}}',
      );
      const r = await postJson(ctx.url('/register/'), raw);
      expect([200, 400, 422]).toContain(r.status);
      if (r.status === 200) {
        expect(r.json.age).toBe(30);
        expect(r.text).not.toContain('isAdmin');
      }
      const h = await request(ctx.url('/healthz'));
      expect(h.status).toBe(200);
    });
  });

  describe('username', () => {
    it('accepts 3 and 32 characters, refuses 2 and 33 with 422 at body.username', async () => {
      const r3 = await postJson(ctx.url('/register/'), body({ username: 'k9z' }));
      expect(r3.status, r3.text).toBe(200);
      expect(r3.json.username).toBe('k9z');
      const n32 = `n${randomId(8)}abcdefghijklmnopqrstuvwxyz`.slice(0, 32);
      const r32 = await postJson(ctx.url('/register/'), body({ username: n32 }));
      expect(r32.status, r32.text).toBe(200);
      expect(r32.json.username).toBe(n32);
      expect422(await postJson(ctx.url('/register/'), body({ username: 'ab' })), 'username');
      expect422(await postJson(ctx.url('/register/'), body({ username: `${n32}z` })), 'username');
    });

    it('accepts letters, digits, ".", "_", "-"', async () => {
      const u = `a.b_c-${uniqueName('').replace(/_/g, '')}`;
      const r = await postJson(ctx.url('/register/'), body({ username: u }));
      expect(r.status, r.text).toBe(200);
      expect(r.json.username).toBe(u);
    });

    it.each([
      ['space inside', 'ab cd'],
      ['at sign', 'ab@cd'],
      ['slash', 'ab/cd'],
      ['quote', "ab'cd"],
      ['angle bracket', 'ab<script>'],
      ['NUL byte', 'abc\u0000def'],
      ['zero-width space', 'abc\u200bdef'],
      ['zero-width joiner', 'abc\u200ddef'],
      ['right-to-left override', 'abc\u202edef'],
      ['emoji', 'abc🔑def'],
      ['newline', 'abc\ndef'],
      ['empty', ''],
      ['number instead of string', 12345],
      ['null', null],
    ])('refuses a username with %s (422 at body.username)', async (_what, username) => {
      expect422(await postJson(ctx.url('/register/'), body({ username })), 'username');
    });

    it('never accepts a username with surrounding whitespace as a new account', async () => {
      const b = body();
      const first = await postJson(ctx.url('/register/'), b);
      expect(first.status).toBe(200);
      const r = await postJson(
        ctx.url('/register/'),
        body({ username: `${b.username} `, email: `other-${b.email}` }),
      );
      expect([409, 422], r.text).toContain(r.status);
    });

    it('is unique case-insensitively: 409 username_taken, exact body', async () => {
      const u = `Alice${uniqueName('').replace(/_/g, '')}`;
      const first = await postJson(ctx.url('/register/'), body({ username: u }));
      expect(first.status).toBe(200);
      expect(first.json.username).toBe(u); // display form preserved
      for (const variant of [u, u.toLowerCase(), u.toUpperCase()]) {
        const r = await postJson(ctx.url('/register/'), body({ username: variant }));
        expect(r.status, r.text).toBe(409);
        expectJsonContentType(r);
        expect(r.json).toEqual({ detail: 'Username already registered', code: 'username_taken' });
      }
    });

    it('NFKC-normalises: a fullwidth username is the same account as its ASCII form', async () => {
      const ascii = `fw${uniqueName('').replace(/_/g, '')}`;
      const first = await postJson(ctx.url('/register/'), body({ username: ascii }));
      expect(first.status).toBe(200);
      const r = await postJson(ctx.url('/register/'), body({ username: toFullwidth(ascii) }));
      expect(r.status, r.text).toBe(409);
      expect(r.json.code).toBe('username_taken');
    });

    it('stores a fullwidth username in NFKC form and logs in with the ASCII form', async () => {
      const ascii = `fx${uniqueName('').replace(/_/g, '')}`;
      const b = body({ username: toFullwidth(ascii) });
      const r = await postJson(ctx.url('/register/'), b);
      expect(r.status, r.text).toBe(200);
      expect(r.json.username).toBe(ascii);
      await login(ctx, ascii, b.password as string);
    });

    it('NFKC-normalises compatibility ligatures: "ﬁ" + rest is the same account as "fi" + rest', async () => {
      const rest = `nn${randomId(4)}`;
      const first = await postJson(ctx.url('/register/'), body({ username: `fi${rest}` }));
      expect(first.status, first.text).toBe(200);
      const r = await postJson(ctx.url('/register/'), body({ username: `\ufb01${rest}` }));
      expect(r.status, r.text).toBe(409);
      expect(r.json.code).toBe('username_taken');
    });

    it('folds case beyond ASCII: Jürgen… and JÜRGEN… are one account', async () => {
      const rest = randomId(4);
      const first = await postJson(ctx.url('/register/'), body({ username: `Jürgen${rest}` }));
      expect(first.status, first.text).toBe(200);
      const r = await postJson(ctx.url('/register/'), body({ username: `JÜRGEN${rest.toUpperCase()}` }));
      expect(r.status, r.text).toBe(409);
      expect(r.json.code).toBe('username_taken');
      const again = await postJson(ctx.url('/register/'), body({ username: `jürgen${rest}` }));
      expect(again.status, again.text).toBe(409);
    });

    it('treats a decomposed username (e + U+0301) as its composed NFKC form', async () => {
      const rest = randomId(4);
      const first = await postJson(ctx.url('/register/'), body({ username: `café${rest}` }));
      expect(first.status, first.text).toBe(200);
      const r = await postJson(ctx.url('/register/'), body({ username: `cafe\u0301${rest}` }));
      expect(r.status, r.text).toBe(409);
    });

    it('accepts non-ASCII letters (Unicode letters are letters)', async () => {
      const u = `jürgen${uniqueName('').replace(/_/g, '').slice(0, 10)}`;
      const r = await postJson(ctx.url('/register/'), body({ username: u }));
      expect(r.status, r.text).toBe(200);
      expect(r.json.username).toBe(u.normalize('NFKC'));
    });
  });

  describe('email', () => {
    it('is unique case-insensitively: 409 email_taken', async () => {
      const local = uniqueName('Mail');
      const first = await postJson(ctx.url('/register/'), body({ email: `${local}@Example.COM` }));
      expect(first.status, first.text).toBe(200);
      const r = await postJson(ctx.url('/register/'), body({ email: `${local.toLowerCase()}@example.com` }));
      expect(r.status, r.text).toBe(409);
      expectJsonContentType(r);
      expect(r.json.code).toBe('email_taken');
      expect(typeof r.json.detail).toBe('string');
      expect(r.json.detail).toMatch(/email/i);
      expect(Object.keys(r.json).sort()).toEqual(['code', 'detail']);
    });

    it('refuses a local part over 64 characters (RFC 5321 §4.5.3.1.1, as FastAPI EmailStr does)', async () => {
      expect422(
        await postJson(ctx.url('/register/'), body({ email: `${'l'.repeat(65)}@example.com` })),
        'email',
      );
    });

    it('accepts a 254-character address and refuses 255', async () => {
      const local = `${uniqueName('e').replace(/_/g, '')}${'a'.repeat(64)}`.slice(0, 64);
      const domain = `${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(57)}.com`;
      const e254 = `${local}@${domain}`;
      expect(e254.length).toBe(254);
      const ok = await postJson(ctx.url('/register/'), body({ email: e254 }));
      expect(ok.status, ok.text).toBe(200);
      const e255 = `${local}@${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(58)}.com`;
      expect(e255.length).toBe(255);
      expect422(await postJson(ctx.url('/register/'), body({ email: e255 })), 'email');
    });

    it.each([
      'not-an-email',
      'a@',
      '@example.com',
      'a b@example.com',
      'a@@example.com',
      '',
      'a@example.com\n',
      'a@example',
      'a@example.com.',
      'a@-example.com',
      'a..b@example.com',
      'a\u0000b@example.com',
      'ab@exa\u0000mple.com',
    ])('refuses the malformed address %j with 422 at body.email', async (email) => {
      expect422(await postJson(ctx.url('/register/'), body({ email })), 'email');
    });
  });

  describe('password', () => {
    it('refuses 7 characters and accepts 8 (default PASSWORD_MIN_LENGTH)', async () => {
      expect422(await postJson(ctx.url('/register/'), body({ password: 'Xq7#vL2' })), 'password');
      const r = await postJson(ctx.url('/register/'), body({ password: ctx.track('Xq7#vL2m') }));
      expect(r.status, r.text).toBe(200);
    });

    it('counts code points, not bytes or UTF-16 units (7 emoji refused, 8 accepted)', async () => {
      const emoji = ['🦊', '🌵', '🛶', '🧭', '🪁', '🥨', '🦑', '🎻'];
      expect422(
        await postJson(ctx.url('/register/'), body({ password: emoji.slice(0, 7).join('') })),
        'password',
      );
      const b = body({ password: emoji.join('') });
      const r = await postJson(ctx.url('/register/'), b);
      expect(r.status, r.text).toBe(200);
      await login(ctx, b.username, b.password as string);
    });

    it('accepts 1024 characters (and 1024 four-byte code points) and refuses 1025', async () => {
      const p1024 = ctx.track(strongPassword().padEnd(1024, 'k7Q'));
      const b = body({ password: p1024 });
      const r = await postJson(ctx.url('/register/'), b);
      expect(r.status, r.text).toBe(200);
      await login(ctx, b.username, p1024);
      const pool = [...'🦊🌵🛶🧭🪁🥨🦑🎻🐙🚀🍕🎸🧩🌍🎉🔑🦄🍄🌶🧲🛸🪐🦖🐝🍋🥝🧁🎲🧿🪵🦩🐢'];
      const emoji = ctx.track([...randomBytes(1024)].map((x) => pool[x % pool.length]).join(''));
      expect([...emoji].length).toBe(1024);
      const re = await postJson(ctx.url('/register/'), body({ password: emoji }));
      expect(re.status, re.text).toBe(200);
      expect422(await postJson(ctx.url('/register/'), body({ password: `${p1024}x` })), 'password');
    });

    it('does not truncate: a 100-byte password does not log in with its first 72 bytes', async () => {
      const pw = ctx.track(strongPassword().padEnd(100, 'Zr4'));
      expect(Buffer.byteLength(pw)).toBe(100);
      const b = body({ password: pw });
      expect((await postJson(ctx.url('/register/'), b)).status).toBe(200);
      const short = await postForm(ctx.url('/token'), { username: b.username, password: pw.slice(0, 72) });
      expect(short.status, short.text).toBe(400);
      expect(short.json.error).toBe('invalid_grant');
      await login(ctx, b.username, pw);
    });

    it('verifies exactly: case and trailing space matter (checklist 25)', async () => {
      const pw = ctx.track(strongPassword());
      const b = body({ password: pw });
      expect((await postJson(ctx.url('/register/'), b)).status).toBe(200);
      for (const wrong of [pw.toUpperCase(), pw.toLowerCase(), `${pw} `, ` ${pw}`]) {
        const r = await postForm(ctx.url('/token'), { username: b.username, password: wrong });
        expect(r.status, `${JSON.stringify(wrong)}: ${r.text}`).toBe(400);
      }
    });

    it('accepts any Unicode: a non-ASCII password registers and logs in (checklist 26)', async () => {
      const pw = ctx.track(`пароль-ütf8-密码-🔑-${uniqueName('')}`);
      const b = body({ password: pw });
      expect((await postJson(ctx.url('/register/'), b)).status).toBe(200);
      await login(ctx, b.username, pw);
    });

    it('logs in with the NFD form of an NFC password (NFKC/NFKD before hashing, checklist 26)', async () => {
      const pw = ctx.track(`Pässwörd-Ünïcødé-${randomId(4)}`.normalize('NFC'));
      const b = body({ password: pw });
      expect((await postJson(ctx.url('/register/'), b)).status).toBe(200);
      await login(ctx, b.username as string, pw.normalize('NFD'));
      await login(ctx, b.username as string, pw);
    });

    it('has no composition rules: lower-case letters and spaces are fine (checklist 27)', async () => {
      const pw = ctx.track(`correct horse battery staple ${uniqueName('').replace(/[^a-z]/g, 'q')}`);
      const r = await postJson(ctx.url('/register/'), body({ password: pw }));
      expect(r.status, r.text).toBe(200);
    });

    it.each([
      ['NUL', '\u0000'],
      ['BEL', '\u0007'],
      ['ESC', '\u001b'],
      ['newline', '\n'],
      ['tab', '\t'],
      ['DEL', '\u007f'],
      ['C1 NEL', '\u0085'],
    ])('refuses a password containing the control character %s (422)', async (_n, c) => {
      const pw = ctx.track(`${strongPassword()}${c}tail`);
      const r = await postJson(ctx.url('/register/'), body({ password: pw }));
      expect422(r, 'password');
      expect(r.text).not.toContain(pw.slice(0, 20));
    });

    it.each([
      'password',
      '12345678',
      'iloveyou',
      'sunshine',
      'qwertyuiop',
      'password1',
      'football',
      '123456789',
    ])('refuses the common password %j with 422 saying why', async (pw) => {
      const r = await postJson(ctx.url('/register/'), body({ password: pw }));
      expect422(r, 'password');
      const msg = (r.json.detail as { loc: string[]; msg: string }[])
        .filter((d) => d.loc.join('.') === 'body.password')
        .map((d) => d.msg)
        .join(' ');
      expect(msg).toMatch(/common|guess|breach|known|weak|popular|frequent/i);
    });

    it('refuses a 2 MiB password quickly (413, no hashing of megabytes)', async () => {
      const t0 = performance.now();
      const r = await postJson(ctx.url('/register/'), body({ password: 'x'.repeat(2 * 1024 * 1024) }));
      expect(r.status).toBe(413);
      expect(performance.now() - t0).toBeLessThan(3000);
    });

    it('delivers the 413 to every one of 20 clients that send a 2 MiB body, without a reset', async () => {
      const big = JSON.stringify(body({ password: 'x'.repeat(2 * 1024 * 1024) }));
      for (let i = 0; i < 20; i += 1) {
        const r = await postJson(ctx.url('/register/'), big);
        expect(r.status).toBe(413);
      }
    });

    it('after a 413, reads the rest of a declared body and keeps the connection; a huge one is closed', async () => {
      const port = Number(new URL(ctx.url('/')).port);
      const exchange = (declared: number, sent: number, then: string) =>
        new Promise<string>((resolve, reject) => {
          const socket = net.connect(port, '127.0.0.1');
          let received = '';
          socket.on('data', (chunk) => {
            received += chunk.toString('latin1');
            if (received.includes('\r\n\r\n') && !received.includes('HTTP/1.1 413')) return;
            if (/HTTP\/1\.1 413[\s\S]*\r\n\r\n[\s\S]*HTTP\/1\.1 200/.test(received)) socket.end();
          });
          socket.on('close', () => resolve(received));
          socket.on('error', (error) => (received ? resolve(received) : reject(error)));
          socket.write(
            `POST /register/ HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${declared}\r\n\r\n`,
          );
          socket.write(Buffer.alloc(sent, 0x61), () => socket.write(then));
          setTimeout(() => socket.destroy(), 5000);
        });
      const drained = await exchange(
        2 * 1024 * 1024,
        2 * 1024 * 1024,
        'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n',
      );
      expect(drained).toMatch(/^HTTP\/1\.1 413/);
      expect(drained.split('\r\n\r\n')[0]).not.toMatch(/connection: close/i);
      expect(drained).toMatch(/HTTP\/1\.1 200[\s\S]*"status":"ok"/);
      // Nothing of the huge body is sent: a server that closes with unread bytes in its receive buffer makes its
      // kernel answer with a reset, which may reach this client before the 413 does.
      const closed = await exchange(100 * 1024 * 1024, 0, '');
      expect(closed).toMatch(/^HTTP\/1\.1 413/);
      expect(closed.split('\r\n\r\n')[0]).toMatch(/connection: close/i);
    });

    it('never echoes the password in a 422 for another field', async () => {
      const b = body({ age: 'forty' });
      const r = await postJson(ctx.url('/register/'), b);
      expect422(r, 'age');
      expect(r.text).not.toContain(b.password as string);
    });
  });

  describe('age', () => {
    it.each([
      [0, 0],
      [150, 150],
      [42, 42],
      ['42', 42],
    ])('accepts %j as %j', async (age, expected) => {
      const r = await postJson(ctx.url('/register/'), body({ age }));
      expect(r.status, r.text).toBe(200);
      expect(r.json.age).toBe(expected);
    });

    it.each([
      ['42.5', 42.5],
      ['true', true],
      ['false', false],
      ['-1', -1],
      ['151', 151],
      ['1e30', 1e30],
      ['2^63', 2 ** 63],
      ['"forty"', 'forty'],
      ['"42.5"', '42.5'],
      ['"-1"', '-1'],
      ['""', ''],
      ['null', null],
      ['[]', []],
      ['{}', {}],
    ])('refuses %s with 422 at body.age', async (_label, age) => {
      expect422(await postJson(ctx.url('/register/'), body({ age })), 'age');
    });

    it('refuses an integer literal beyond 2^63 written out in the JSON text', async () => {
      const raw = JSON.stringify(body({ age: 1 })).replace('"age":1', '"age":123456789012345678901234567890');
      expect422(await postJson(ctx.url('/register/'), raw), 'age');
    });
  });

  describe('level and missing fields', () => {
    it.each(['expert', 'admin', '', 'BEGINNER ', 'superuser'])(
      'refuses level %j with 422 at body.level',
      async (level) => {
        expect422(await postJson(ctx.url('/register/'), body({ level })), 'level');
      },
    );

    it.each(['username', 'email', 'password', 'age', 'level'])(
      'refuses a body without %s with 422 at body.<field>',
      async (field) => {
        const b: Record<string, unknown> = body();
        delete b[field];
        expect422(await postJson(ctx.url('/register/'), b), field);
      },
    );

    it('reports several invalid fields at once', async () => {
      const r = await postJson(ctx.url('/register/'), body({ age: -5, level: 'expert' }));
      expect422(r);
      const locs = (r.json.detail as { loc: string[] }[]).map((d) => d.loc.join('.'));
      expect(locs).toContain('body.age');
      expect(locs).toContain('body.level');
    });
  });

  describe('duplicates and races', () => {
    it('duplicate username and email: 409, never 5xx', async () => {
      const b = body();
      expect((await postJson(ctx.url('/register/'), b)).status).toBe(200);
      const r = await postJson(ctx.url('/register/'), { ...b, password: strongPassword() });
      expect(r.status).toBe(409);
      expect(['username_taken', 'email_taken']).toContain(r.json.code);
      expect(r.text).not.toContain(b.password as string);
    });

    it('20 parallel registrations of one username: exactly one 200 and nineteen 409 username_taken', async () => {
      const username = uniqueName('race');
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          postJson(ctx.url('/register/'), body({ username, email: `${username}-${i}@example.com` })),
        ),
      );
      const statuses = results.map((r) => r.status).sort();
      expect(statuses.filter((s) => s === 200)).toHaveLength(1);
      expect(statuses.filter((s) => s === 409)).toHaveLength(19);
      for (const r of results.filter((x) => x.status === 409)) {
        expect(r.json).toEqual({ detail: 'Username already registered', code: 'username_taken' });
      }
    });

    it('20 parallel registrations of one email (differently cased): one 200, nineteen 409 email_taken', async () => {
      const local = uniqueName('mrace');
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          postJson(
            ctx.url('/register/'),
            body({ email: i % 2 ? `${local}@example.com` : `${local.toUpperCase()}@EXAMPLE.com` }),
          ),
        ),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(1);
      expect(statuses.filter((s) => s === 409)).toHaveLength(19);
      for (const r of results.filter((x) => x.status === 409)) expect(r.json.code).toBe('email_taken');
    });

    it('20 parallel registrations of one username in different cases: one 200', async () => {
      const username = uniqueName('Case');
      const variants = [
        username,
        username.toLowerCase(),
        username.toUpperCase(),
        toFullwidth(username.toLowerCase()),
      ];
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          postJson(
            ctx.url('/register/'),
            body({ username: variants[i % variants.length], email: `${username}-${i}@example.com` }),
          ),
        ),
      );
      const statuses = results.map((r) => r.status);
      expect(statuses.filter((s) => s === 200)).toHaveLength(1);
      expect(statuses.filter((s) => s === 409)).toHaveLength(19);
    });
  });

  describe('malformed bodies', () => {
    it.each([
      ['invalid JSON', '{"username": "a",'],
      ['JSON array', '[]'],
      ['JSON string', '"hello"'],
      ['JSON number', '42'],
      ['JSON null', 'null'],
      ['empty body', ''],
      [
        'lone surrogate',
        '{"username":"\\ud800abc","email":"x@example.com","password":"Pw-lone-surr-1","age":3,"level":"beginner"}',
      ],
    ])('answers 422 for %s sent as application/json', async (_n, raw) => {
      const r = await request(ctx.url('/register/'), {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: raw,
      });
      expect(r.status, r.text).toBe(422);
      expectJsonContentType(r);
      expect(Array.isArray(r.json?.detail) || typeof r.json?.detail === 'string', r.text).toBe(true);
    });

    it.each([
      ['text/plain', 'username=a'],
      ['application/xml', '<a/>'],
      [
        'application/x-www-form-urlencoded',
        'username=abc&email=a%40b.co&password=Pw-form-123&age=3&level=beginner',
      ],
    ])('answers 422 or 415 for content type %s', async (ct, raw) => {
      const r = await request(ctx.url('/register/'), {
        method: 'POST',
        headers: { 'content-type': ct },
        body: raw,
      });
      expect([415, 422], r.text).toContain(r.status);
      expectJsonContentType(r);
    });

    it('answers 422 or 415 for a body without a content type', async () => {
      const raw = JSON.stringify(body());
      const r = await rawHttp(
        ctx.server.port,
        rawHead('POST', '/register/', [], Buffer.byteLength(raw)),
        raw,
      );
      expect([415, 422]).toContain(r.status);
    });

    it('answers 413 for a body over 16 KiB, and accepts exactly 16384 bytes', async () => {
      const b = body();
      const base = JSON.stringify({ ...b, pad: '' });
      const exact = JSON.stringify({ ...b, pad: 'p'.repeat(16384 - Buffer.byteLength(base)) });
      expect(Buffer.byteLength(exact)).toBe(16384);
      const ok = await postJson(ctx.url('/register/'), exact);
      expect(ok.status, ok.text).toBe(200);
      const over = JSON.stringify({ ...body(), pad: 'p'.repeat(16385 - Buffer.byteLength(base)) });
      expect(Buffer.byteLength(over)).toBe(16385);
      const r = await postJson(ctx.url('/register/'), over);
      expect(r.status, r.text).toBe(413);
      expectJsonContentType(r);
    });

    it('answers 413 for a chunked body over 16 KiB (no Content-Length)', async () => {
      const raw = JSON.stringify({ ...body(), pad: 'p'.repeat(40_000) });
      const chunk = `${Buffer.byteLength(raw).toString(16)}\r\n${raw}\r\n0\r\n\r\n`;
      const r = await rawHttp(
        ctx.server.port,
        rawHead('POST', '/register/', ['Content-Type: application/json', 'Transfer-Encoding: chunked']),
        chunk,
      );
      expect(r.status).toBe(413);
    });

    it('answers 422 for deeply nested JSON within the size limit (no stack overflow)', async () => {
      for (const [open, close] of [
        ['[', ']'],
        ['{"a":', '}'],
      ]) {
        const depth = Math.floor(15_000 / (open as string).length / 1.2);
        const raw = `{"username":${(open as string).repeat(depth)}1${(close as string).repeat(depth)}}`;
        const r = await postJson(ctx.url('/register/'), raw);
        expect([413, 422], r.text.slice(0, 200)).toContain(r.status);
      }
    });

    it('keeps answering after malformed input', async () => {
      const r = await request(ctx.url('/healthz'));
      expect(r.status).toBe(200);
    });

    it('error bodies carry no stack trace, SQL or file path (checklist 10)', async () => {
      const replies = [
        await postJson(ctx.url('/register/'), '{bad'),
        await postJson(ctx.url('/register/'), body({ age: 'x' })),
        await postJson(ctx.url('/register/'), { ...body(), username: 'x'.repeat(5000) }),
      ];
      for (const r of replies) {
        expect(r.status).toBeLessThan(500);
        expect(r.text).not.toMatch(/\n\s+at |node_modules|\/work\/|SELECT|INSERT|sqlite|postgres|Error:/i);
      }
    });

    it('answers X-Content-Type-Options: nosniff on 200, 409, 413 and 422', async () => {
      const b = body();
      const replies = [
        await postJson(ctx.url('/register/'), b),
        await postJson(ctx.url('/register/'), b),
        await postJson(ctx.url('/register/'), { ...body(), pad: 'p'.repeat(20_000) }),
        await postJson(ctx.url('/register/'), body({ age: -1 })),
      ];
      expect(replies.map((r) => r.status)).toEqual([200, 409, 413, 422]);
      for (const r of replies) expect(r.headers.get('x-content-type-options')).toBe('nosniff');
    });

    it('header helper sanity: raw replies are parsed', async () => {
      const r = await rawHttp(ctx.server.port, rawHead('GET', '/healthz', []));
      expect(r.status).toBe(200);
      expect(header(r, 'content-type')).toMatch(/application\/json/);
    });
  });

  it('never writes the passwords or tokens it saw to the logs', () => {
    expectLogsFreeOf(ctx);
  });
});
