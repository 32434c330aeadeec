import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, loginToken, registration, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

// Issue 9 §4: usernames that look alike are one account; names that mix scripts or have no letter are refused.
describe.each(dialects)('POST /register/ with lookalike usernames on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const register = (username: string, email = `${crypto.randomUUID()}@example.com`) =>
    t.app.inject({ method: 'POST', url: '/register/', payload: registration({ username, email }) });

  it.each([
    ['a whole-Cyrillic name that looks like a Latin one', 'popeye', 'рореуе'],
    ['a whole-Cyrillic name in capitals', 'bob', 'ВОВ'],
    ['a name with a small capital', 'alice', 'ᴀlice'],
    ['a name with a capital I with a dot', 'alice', 'alİce'],
    ['a name with a dotless i', 'alice', 'alıce'],
    ['a whole-Greek name in capitals', 'mike', 'ΜΙΚΕ'],
    ['a Latin name registered after its whole-Greek capital lookalike', 'ΤΟΜ', 'tom'],
    ['a name with Latin capital betas', 'bobby', 'ꞴOꞴꞴY'],
    ['an Arabic name with Arabic-Indic digits beside one with ASCII digits', 'علي12', 'علي١٢'],
  ])('answers 409 username_taken for %s', async (_label, original, lookalike) => {
    await register(original);
    const response = await register(lookalike);
    expect(response.statusCode, lookalike).toBe(409);
    expect(response.json()).toEqual({ detail: 'Username already registered', code: 'username_taken' });
  });

  it.each([
    ['Cyrillic а beside Latin lice', 'аlice', 'username_mixed_scripts'],
    ['Latin beside Arabic-Indic digits', 'bob١٢٣', 'username_mixed_scripts'],
    ['two digit systems', 'علي1١', 'username_mixed_digit_systems'],
    ['digits before a right-to-left name', '12אבג', 'username_bidi_order'],
    ['dots only', '...', 'username_without_letter_or_digit'],
    ['hyphens only', '---', 'username_without_letter_or_digit'],
    // Hangul fillers are letters drawn as nothing (Default_Ignorable_Code_Point): victim7 with one looked like victim7.
    ['a Hangul choseong filler', 'victim7\u115f', 'username_invisible_characters'],
    ['a Hangul jungseong filler', 'vic\u1160tim7', 'username_invisible_characters'],
    ['a Hangul filler', 'victim7\u3164', 'username_invisible_characters'],
    ['a half-width Hangul filler', '\uffa0victim7', 'username_invisible_characters'],
    ['a Hangul filler among Hangul', '한\u3164글', 'username_invisible_characters'],
  ])('answers 422 at body.username for %s', async (_label, username, type) => {
    const response = await register(username);
    expect(response.statusCode).toBe(422);
    const detail = response.json().detail as { loc: string[]; msg: string; type: string }[];
    expect(detail).toHaveLength(1);
    expect(detail[0]).toMatchObject({ loc: ['body', 'username'], type });
    expect(typeof detail[0]?.msg).toBe('string');
  });

  it('still registers a name in one script, and Latin with Han and Kana', async () => {
    for (const username of ['Жуков', 'tanaka田中カタ', 'o.k_1-2']) {
      const response = await register(username);
      expect(response.statusCode, username).toBe(200);
    }
  });

  it('keeps ASCII confusables (l and 1, rn and m) different accounts', async () => {
    for (const username of ['wilma', 'wi1ma', 'wilrna']) {
      expect((await register(username)).statusCode, username).toBe(200);
    }
  });

  // Unicode full case folding (CaseFolding.txt, status F) maps both ß and the capital ẞ (U+1E9E) to "ss"; upper then
  // lower case turned ẞ into ß alone, so Weiẞ and weiß were two accounts.
  it.each([
    ['Weiẞ', 'weiß'],
    ['daß', 'DAẞ'],
    ['Straẞe', 'STRASSE'],
  ])('folds the capital sharp s as the small one: %s, then %s, is username_taken', async (first, second) => {
    expect((await register(first)).statusCode).toBe(200);
    const response = await register(second);
    expect(response.statusCode, second).toBe(409);
    expect(response.json().code).toBe('username_taken');
  });

  it('logs in to a name with ẞ by any of its case forms', async () => {
    await register('Groẞ');
    for (const name of ['Groẞ', 'groß', 'GROSS', 'gross']) await loginToken(t.app, name);
  });

  it('logs in by the name as registered, not by a lookalike of it', async () => {
    await register('hanna');
    await loginToken(t.app, 'Hanna');
    const lookalike = await t.app.inject({
      method: 'POST',
      url: '/token',
      payload: { username: 'һаnnа', password: registration().password },
    });
    expect(lookalike.statusCode).toBe(400);
    expect(lookalike.json().error).toBe('invalid_grant');
  });

  it('answers username_taken, not email_taken, when both the username and the email are taken', async () => {
    await register('both', 'both@example.com');
    await register('other', 'other@example.com');
    for (const [username, email] of [
      ['both', 'both@example.com'],
      ['both', 'other@example.com'],
      ['BOTH', 'OTHER@example.com'],
      ['вотн', 'other@example.com'],
    ]) {
      const response = await register(username!, email);
      expect(response.statusCode, `${username} ${email}`).toBe(409);
      expect(response.json().code, `${username} ${email}`).toBe('username_taken');
    }
    const emailOnly = await register('someone', 'both@example.com');
    expect(emailOnly.json().code).toBe('email_taken');
  });
});
