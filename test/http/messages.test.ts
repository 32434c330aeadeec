import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp, loginToken, registerUser, type TestApp } from '../support/build-test-app.ts';
import { dialects } from '../support/dialects.ts';

describe.each(dialects)('conversation messages on %s', (dialect) => {
  let t: TestApp;
  let alice: string;
  let bob: string;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
    await registerUser(t.app, { username: 'Alice', email: 'alice@example.com' });
    await registerUser(t.app, { username: 'Bob', email: 'bob@example.com' });
    alice = await loginToken(t.app, 'alice');
    bob = await loginToken(t.app, 'bob');
  });
  afterAll(async () => {
    await t.close();
  });

  const post = (token: string, payload: unknown) =>
    t.app.inject({
      method: 'POST',
      url: '/conversation/messages',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      payload: JSON.stringify(payload),
    });
  const list = (token: string, query = '') =>
    t.app.inject({
      method: 'GET',
      url: `/conversation/messages${query}`,
      headers: { authorization: `Bearer ${token}` },
    });
  const conversation = (token: string) =>
    t.app.inject({ method: 'GET', url: '/conversation', headers: { authorization: `Bearer ${token}` } });

  it('appends a message to the caller’s conversation and answers 201 with it', async () => {
    const response = await post(alice, { text: '  hello, world  ' });
    expect(response.statusCode).toBe(201);
    const message = response.json();
    expect(message).toEqual({
      id: expect.any(Number),
      author: 'user',
      text: 'hello, world',
      created_at: t.clock.now().toISOString(),
    });
    expect(response.headers['cache-control']).toBe('no-store');
  });

  it('keeps GET /conversation in the seed’s shape, with the user’s messages after the welcome, one a line', async () => {
    const carol = await registerUser(t.app, { username: 'Carol', email: 'carol@example.com' });
    const token = await loginToken(t.app, 'carol');
    await post(token, { text: 'first' });
    await post(token, { text: 'second' });
    const response = await conversation(token);
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({
      conversation: 'This is a secure conversation\nfirst\nsecond',
      current_user: carol.username,
    });
  });

  it('pages newest first with an opaque cursor until the oldest, the welcome message', async () => {
    await registerUser(t.app, { username: 'Dave', email: 'dave@example.com' });
    const token = await loginToken(t.app, 'dave');
    for (let i = 1; i <= 5; i += 1) {
      expect((await post(token, { text: `message ${i}` })).statusCode).toBe(201);
    }
    const first = await list(token, '?limit=2');
    expect(first.statusCode).toBe(200);
    expect(first.json().messages.map((m: { text: string }) => m.text)).toEqual(['message 5', 'message 4']);
    expect(typeof first.json().next).toBe('string');
    const second = await list(token, `?limit=2&before=${encodeURIComponent(first.json().next)}`);
    expect(second.json().messages.map((m: { text: string }) => m.text)).toEqual(['message 3', 'message 2']);
    const last = await list(token, `?limit=2&before=${encodeURIComponent(second.json().next)}`);
    expect(last.json().messages).toEqual([
      { id: expect.any(Number), author: 'user', text: 'message 1', created_at: expect.any(String) },
      {
        id: expect.any(Number),
        author: 'system',
        text: 'This is a secure conversation',
        created_at: expect.any(String),
      },
    ]);
    expect(last.json().next).toBeNull();
    const all = await list(token);
    expect(all.json().messages).toHaveLength(6);
    expect(all.json().next).toBeNull();
  });

  it('answers 422 for a limit outside 1 to 100 and accepts a digit string', async () => {
    for (const query of ['?limit=0', '?limit=101', '?limit=abc', '?limit=-1', '?limit=1.5']) {
      const response = await list(alice, query);
      expect(response.statusCode, query).toBe(422);
      expect(response.json().detail[0].loc).toEqual(['query', 'limit']);
    }
    expect((await list(alice, '?limit=100')).statusCode).toBe(200);
  });

  it("words an empty cursor's 422 as pydantic does: at least 1 character", async () => {
    const response = await list(alice, '?before=');
    expect(response.statusCode).toBe(422);
    expect(response.json().detail).toEqual([
      { loc: ['query', 'before'], msg: 'String should have at least 1 character', type: 'string_too_short' },
    ]);
  });

  // Not signed: a cursor that decodes to another position only pages elsewhere through the caller's own messages.
  it('answers 422, never 5xx, for a cursor it did not make', async () => {
    const valid = (await list(alice, '?limit=1')).json().next as string;
    for (const cursor of [
      'garbage',
      `${valid}.`,
      `${valid}=`,
      Buffer.from('m0').toString('base64url'),
      Buffer.from('m012').toString('base64url'),
      Buffer.from('42').toString('base64url'),
      '',
      'AAAA',
      Buffer.from('m:-1').toString('base64url'),
      Buffer.from('m:99999999999999999999').toString('base64url'),
      // Well formed, but past PostgreSQL's integer: the same 422 on both databases.
      Buffer.from('m2147483648').toString('base64url'),
      Buffer.from('m9999999999999999').toString('base64url'),
      '%00',
      'x'.repeat(200),
    ]) {
      const response = await list(alice, `?before=${encodeURIComponent(cursor)}`);
      expect(response.statusCode, cursor).toBe(422);
      expect(response.json().detail[0].loc).toEqual(['query', 'before']);
    }
  });

  it.each([
    ['an empty text', ''],
    ['only whitespace', ' \n\t '],
    ['4001 characters', 'x'.repeat(4001)],
    ['a NUL', 'a\u0000b'],
    ['an escape sequence', 'a\u001b[31mb'],
    ['a DEL', 'a\u007fb'],
    ['a C1 control', 'a\u0085b'],
    ['a carriage return', 'a\rb'],
    ['a lone surrogate', 'a\ud800b'],
    ['a bidirectional override', 'a\u202eb'],
  ])('answers 422 FastAPI-shaped for %s', async (_name, text) => {
    const response = await post(alice, { text });
    expect(response.statusCode).toBe(422);
    const [problem] = response.json().detail;
    expect(problem.loc).toEqual(['body', 'text']);
    expect(typeof problem.msg).toBe('string');
    expect(typeof problem.type).toBe('string');
  });

  it('accepts 4000 characters (counted as characters, not UTF-16 units), newlines and tabs', async () => {
    expect((await post(alice, { text: 'x'.repeat(4000) })).statusCode).toBe(201);
    expect((await post(alice, { text: '😀'.repeat(4000) })).statusCode).toBe(201);
    const response = await post(alice, { text: 'line one\n\tline two' });
    expect(response.statusCode).toBe(201);
    expect(response.json().text).toBe('line one\n\tline two');
    const windows = await post(alice, { text: 'line one\r\nline two' });
    expect(windows.json().text).toBe('line one\nline two');
    const rtl = await post(alice, { text: 'שלום\u200f 👩\u200d💻' });
    expect(rtl.statusCode).toBe(201);
  });

  it.each([
    ['no text', {}],
    ['a number', { text: 42 }],
    ['null', { text: null }],
    ['an array body', ['hello']],
  ])('answers 422 for %s', async (_name, body) => {
    expect((await post(alice, body)).statusCode).toBe(422);
  });

  it('writes nothing for a refused message', async () => {
    const before = (await list(bob)).json().messages.length;
    await post(bob, { text: '' });
    await post(bob, { text: 'a\u0000' });
    expect((await list(bob)).json().messages).toHaveLength(before);
  });

  it('appends only to the caller’s own conversation', async () => {
    const before = (await list(bob)).json().messages;
    await post(alice, { text: 'for alice only' });
    expect((await list(bob)).json().messages).toEqual(before);
    expect(JSON.stringify((await list(bob)).json())).not.toContain('for alice only');
  });

  it('creates the conversation of a user who has none at the first message', async () => {
    await registerUser(t.app, { username: 'Erin', email: 'erin@example.com' });
    const token = await loginToken(t.app, 'erin');
    const user = await t.database.db
      .selectFrom('users')
      .select('id')
      .where('username_canonical', '=', 'erin')
      .executeTakeFirstOrThrow();
    await t.database.db.deleteFrom('conversations').where('user_id', '=', user.id).execute();
    expect((await conversation(token)).statusCode).toBe(404);
    expect((await list(token)).json()).toEqual({ messages: [], next: null });
    expect((await post(token, { text: 'hello again' })).statusCode).toBe(201);
    expect((await conversation(token)).json().conversation).toBe('hello again');
  });

  it('stores concurrent messages of one user in one conversation, all of them', async () => {
    await registerUser(t.app, { username: 'Finn', email: 'finn@example.com' });
    const token = await loginToken(t.app, 'finn');
    const user = await t.database.db
      .selectFrom('users')
      .select('id')
      .where('username_canonical', '=', 'finn')
      .executeTakeFirstOrThrow();
    await t.database.db.deleteFrom('conversations').where('user_id', '=', user.id).execute();
    const responses = await Promise.all(
      Array.from({ length: 10 }, (_, i) => post(token, { text: `parallel ${i}` })),
    );
    expect(responses.map((r) => r.statusCode)).toEqual(Array(10).fill(201));
    const conversations = await t.database.db
      .selectFrom('conversations')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    expect(conversations).toHaveLength(1);
    expect((await list(token)).json().messages).toHaveLength(10);
  });
});

describe.each(dialects)('conversation size on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect);
  });
  afterAll(async () => {
    await t.close();
  });

  const post = (token: string, text: string) =>
    t.app.inject({
      method: 'POST',
      url: '/conversation/messages',
      headers: { authorization: `Bearer ${token}` },
      payload: { text },
    });
  const conversationIdOf = async (username: string) =>
    (
      await t.database.db
        .selectFrom('conversations')
        .innerJoin('users', 'users.id', 'conversations.user_id')
        .select('conversations.id')
        .where('users.username_canonical', '=', username)
        .executeTakeFirstOrThrow()
    ).id;
  const countOf = async (conversationId: number) =>
    Number(
      (
        await t.database.db
          .selectFrom('messages')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('conversation_id', '=', conversationId)
          .executeTakeFirstOrThrow()
      ).n,
    );
  const fill = async (conversationId: number, count: number) => {
    for (let start = 0; start < count; start += 500) {
      const rows = Array.from({ length: Math.min(500, count - start) }, (_, i) => ({
        conversation_id: conversationId,
        author: 'user' as const,
        body: `filler ${start + i + 1}`,
        created_at_ms: t.clock.now().getTime(),
      }));
      await t.database.db.insertInto('messages').values(rows).execute();
    }
  };

  it('joins only the newest 50 messages into GET /conversation, oldest of them first', async () => {
    await registerUser(t.app, { username: 'Gina', email: 'gina@example.com' });
    const token = await loginToken(t.app, 'gina');
    for (let i = 1; i <= 55; i += 1) expect((await post(token, `message ${i}`)).statusCode).toBe(201);
    const response = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(response.statusCode).toBe(200);
    expect(response.json()).toEqual({
      conversation: Array.from({ length: 50 }, (_, i) => `message ${i + 6}`).join('\n'),
      current_user: 'Gina',
    });
    // The whole history still pages through GET /conversation/messages.
    const oldest = await t.app.inject({
      method: 'GET',
      url: '/conversation/messages?limit=100',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(oldest.json().messages).toHaveLength(56);
  });

  it('answers 409 conversation_full past 10,000 stored messages, and stores nothing more', async () => {
    await registerUser(t.app, { username: 'Hank', email: 'hank@example.com' });
    const token = await loginToken(t.app, 'hank');
    const conversationId = await conversationIdOf('hank');
    // The welcome message and these make 9,999.
    await fill(conversationId, 9_998);
    expect((await post(token, 'the last one')).statusCode).toBe(201);
    const refused = await post(token, 'one too many');
    expect(refused.statusCode).toBe(409);
    expect(refused.json()).toEqual({
      detail: 'The conversation holds its maximum of 10000 messages',
      code: 'conversation_full',
    });
    expect(await countOf(conversationId)).toBe(10_000);
    const read = await t.app.inject({
      method: 'GET',
      url: '/conversation',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(read.json().conversation.split('\n').at(-1)).toBe('the last one');
  });

  it('refuses parallel posts to a conversation one short of full but the first few', async () => {
    await registerUser(t.app, { username: 'Iris', email: 'iris@example.com' });
    const token = await loginToken(t.app, 'iris');
    const conversationId = await conversationIdOf('iris');
    await fill(conversationId, 9_998);
    const statuses = (await Promise.all(Array.from({ length: 10 }, (_, i) => post(token, `race ${i}`)))).map(
      (response) => response.statusCode,
    );
    expect(statuses.every((status) => status === 201 || status === 409)).toBe(true);
    expect(statuses.filter((status) => status === 201).length).toBeGreaterThanOrEqual(1);
    expect(await countOf(conversationId)).toBe(9_999 + statuses.filter((status) => status === 201).length);
    expect(await countOf(conversationId)).toBeLessThanOrEqual(10_000 + 9);
  });
});

describe.each(dialects)('posting rate on %s', (dialect) => {
  let t: TestApp;
  beforeAll(async () => {
    t = await buildTestApp(dialect, {
      env: { RATE_LIMITS: 'on', MESSAGE_RATE_PER_MINUTE: '3', REGISTER_PER_IP: '100/10s' },
    });
  });
  afterAll(async () => {
    await t.close();
  });

  const post = (token: string, text: string) =>
    t.app.inject({
      method: 'POST',
      url: '/conversation/messages',
      headers: { authorization: `Bearer ${token}` },
      payload: { text },
    });

  it('answers 429 with Retry-After past MESSAGE_RATE_PER_MINUTE posts of one user, and stores nothing', async () => {
    await registerUser(t.app, { username: 'Jack', email: 'jack@example.com' });
    await registerUser(t.app, { username: 'Kate', email: 'kate@example.com' });
    const jack = await loginToken(t.app, 'jack');
    const kate = await loginToken(t.app, 'kate');
    for (let i = 1; i <= 3; i += 1) expect((await post(jack, `message ${i}`)).statusCode).toBe(201);
    const refused = await post(jack, 'message 4');
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toEqual({ detail: 'Too many attempts; retry later.' });
    const retryAfter = Number(refused.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(60);
    expect(refused.headers['cache-control']).toBe('no-store');
    // Another user is not held back by Jack's posts; nor is reading.
    expect((await post(kate, 'hello')).statusCode).toBe(201);
    const page = await t.app.inject({
      method: 'GET',
      url: '/conversation/messages',
      headers: { authorization: `Bearer ${jack}` },
    });
    expect(page.statusCode).toBe(200);
    expect(page.json().messages.map((m: { text: string }) => m.text)).not.toContain('message 4');
  });

  it('counts per user, not per token: a second session of the same user shares the limit', async () => {
    await registerUser(t.app, { username: 'Liam', email: 'liam@example.com' });
    const first = await loginToken(t.app, 'liam');
    const second = await loginToken(t.app, 'liam');
    for (let i = 1; i <= 3; i += 1) expect((await post(first, `message ${i}`)).statusCode).toBe(201);
    expect((await post(second, 'message 4')).statusCode).toBe(429);
  });
});
