/**
 * Hardening issue, part 4: usernames that look alike. Mixed-script names and names without a letter or digit are
 * refused; uniqueness holds on a UTS #39 confusable skeleton (a whole-script lookalike answers 409
 * username_taken), also for rows that existed before the fix (migration).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { expect422, postJson, type Reply, strongPassword } from './support/client.ts';
import { LEGACY_USER, writeLegacySqlite } from './support/legacy-v0-sqlite.ts';
import { DIALECTS, randomId, startServer, useServer } from './support/server.ts';

vi.setConfig({ testTimeout: 30_000, hookTimeout: 60_000 });

/** Latin letters with a Cyrillic twin in UTS #39 confusables. */
const TWINS: Record<string, string> = { a: 'а', c: 'с', e: 'е', o: 'о', p: 'р', x: 'х', y: 'у' };
const LATIN = Object.keys(TWINS);
const latinWord = (n = 10) =>
  Array.from({ length: n }, () => LATIN[Math.floor(Math.random() * LATIN.length)] ?? 'a').join('');
const cyrillicTwin = (w: string) => [...w].map((c) => TWINS[c] ?? c).join('');
/** A random Latin tail of letters only (no digits, so that only the lookalike differs). */
const tail = () =>
  Array.from({ length: 6 }, () => String.fromCharCode(97 + Math.floor(Math.random() * 26))).join('');

function expectRefusedLookalike(r: Reply, what: string): void {
  expect(r.status, `${what}: must not create a second account: ${r.text}`).not.toBe(200);
  expect([409, 422], `${what}: ${r.text}`).toContain(r.status);
  if (r.status === 409) expect(r.json?.code, r.text).toBe('username_taken');
  if (r.status === 422) expect422(r, 'username');
}

function expectTaken(r: Reply, what: string): void {
  expect(r.status, `${what}: ${r.text}`).toBe(409);
  expect(r.json?.code, r.text).toBe('username_taken');
  expect(typeof r.json?.detail).toBe('string');
}

describe.each(DIALECTS)('confusable usernames (%s)', (dialect) => {
  const ctx = useServer(dialect);
  const reg = (username: string) =>
    postJson(ctx.url('/register/'), {
      username,
      email: `e${randomId(6)}@example.com`,
      password: ctx.track(strongPassword()),
      age: 30,
      level: 'beginner',
    });
  const ok = async (username: string) => {
    const r = await reg(username);
    expect(r.status, `register ${username}: ${r.text}`).toBe(200);
    return r;
  };

  it('refuses Cyrillic-а "аlice…" beside Latin "alice…" (409 username_taken or 422, never a second account)', async () => {
    const t = tail();
    await ok(`alice${t}`);
    expectRefusedLookalike(await reg(`\u0430lice${t}`), 'Cyrillic а + Latin lice');
  });

  it('refuses a mixed-script name even when nothing looks like it yet (422 on username)', async () => {
    const r = await reg(`p\u0430yp\u0430l${tail()}`);
    expect422(r, 'username');
  });

  it('answers 409 username_taken to a whole-script Cyrillic lookalike of a Latin name, and the reverse', async () => {
    const w1 = latinWord();
    await ok(w1);
    expectTaken(await reg(cyrillicTwin(w1)), `Cyrillic ${cyrillicTwin(w1)} after Latin ${w1}`);
    const w2 = latinWord();
    await ok(cyrillicTwin(w2));
    expectTaken(await reg(w2), `Latin ${w2} after Cyrillic ${cyrillicTwin(w2)}`);
  });

  it('answers 409 username_taken to small-capital ᴀlice… and to alİce… beside alice…', async () => {
    const t = tail();
    await ok(`alice${t}`);
    expectTaken(await reg(`\u1d00lice${t}`), 'small capital ᴀ');
    expectTaken(await reg(`al\u0130ce${t}`), 'İ (capital I with dot above)');
  });

  it('refuses Arabic-Indic digits beside ASCII digits', async () => {
    const t = tail();
    await ok(`user${t}123`);
    expectRefusedLookalike(await reg(`user${t}\u0661\u0662\u0663`), 'Latin + Arabic-Indic digits');
    const n = String(100000 + Math.floor(Math.random() * 800000));
    await ok(`d${n}`);
    const arabic = [...n].map((d) => String.fromCodePoint(0x0660 + Number(d))).join('');
    expectRefusedLookalike(await reg(`d${arabic}`), 'd + Arabic-Indic digits');
  });

  it.each(['...', '---', '___', '._-', '-.-.'])(
    'refuses %s: a name without a letter or digit (422)',
    async (name) => {
      expect422(await reg(name), 'username');
    },
  );

  it('still accepts distinct names in one script (controls: Latin, Cyrillic, Greek)', async () => {
    await ok(`bob${tail()}`);
    const cyrillicLetter = () => 'бвгдлмнпрстф'[Math.floor(Math.random() * 12)];
    await ok(`иван${cyrillicLetter()}${cyrillicLetter()}жд${cyrillicLetter()}`);
    await ok(
      `ζήτα${'λμνξ'[Math.floor(Math.random() * 4)]}${'φψω'[Math.floor(Math.random() * 3)]}${Math.floor(Math.random() * 1000)}`,
    );
  });

  it('holds under concurrency: a Latin name and its whole-script Cyrillic twin registered at once give one account', async () => {
    for (let round = 0; round < 3; round++) {
      const w = latinWord();
      const [a, b] = await Promise.all([reg(w), reg(cyrillicTwin(w))]);
      const statuses = [a.status, b.status].sort();
      expect(statuses, `${a.text} / ${b.text}`).toEqual([200, 409]);
      const loser = a.status === 409 ? a : b;
      expect(loser.json?.code).toBe('username_taken');
    }
  });
});

describe('existing rows get the skeleton by migration (sqlite, database written before the fix)', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('a whole-script Cyrillic twin of a name stored before the fix answers 409 username_taken', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'gh_legacy_u_'));
    dirs.push(tmp);
    const file = path.join(tmp, 'gatehouse.db');
    writeLegacySqlite(file);
    const w = latinWord(12);
    const d = new DatabaseSync(file);
    try {
      const hash = (
        d.prepare('select password_hash from users where id = 1').get() as { password_hash: string }
      ).password_hash;
      const now = Date.now();
      d.prepare(
        `insert into users (username, username_canonical, email, email_canonical, password_hash, age, level, created_at_ms, updated_at_ms)
         values (?, ?, ?, ?, ?, 30, 'beginner', ?, ?)`,
      ).run(w, w, `${w}@example.com`, `${w}@example.com`, hash, now, now);
      const id = (d.prepare('select id from users where username = ?').get(w) as { id: number }).id;
      d.prepare('insert into conversations (user_id, created_at_ms) values (?, ?)').run(id, now);
    } finally {
      d.close();
    }
    const server = await startServer({ databaseUrl: `sqlite:${file}` });
    try {
      const r = await postJson(server.url('/register/'), {
        username: cyrillicTwin(w),
        email: `t${randomId(5)}@example.com`,
        password: strongPassword(),
        age: 30,
        level: 'beginner',
      });
      expectTaken(r, `Cyrillic twin of the pre-existing ${w}`);
      // the legacy user still logs in (control)
      const l = await postJson(server.url('/token'), {
        username: LEGACY_USER.username,
        password: LEGACY_USER.password,
      });
      expect(l.status, l.text).toBe(200);
    } finally {
      await server.stop();
    }
  });
});
