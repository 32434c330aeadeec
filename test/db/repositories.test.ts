import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ConversationMessage, createConversationsRepository } from '../../src/db/conversations.ts';
import { createSessionsRepository } from '../../src/db/sessions.ts';
import { createSigningKeysRepository } from '../../src/db/signing-keys.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createConversationsService } from '../../src/services/conversations.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { insertLiveSession, newUser } from '../support/new-user.ts';

const DEFAULT_SESSION_SCOPE = 'conversation:read conversation:write';

describe.each(dialects)('repositories on %s', (dialect) => {
  let database: TestDatabase;
  const now = new Date('2026-11-25T12:00:00.123Z');

  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await database.destroy();
  });

  /** Opens a session of the user, with its first refresh token `${id}-rt`, over the hash its login verified. */
  const openSession = (userId: number, id: string, verifiedHash: string, expiresAt: Date) =>
    createSessionsRepository(database.db, database.dialect).insertSession(
      { id, userId, expiresAt, userAgent: undefined, ipAddress: undefined, scope: DEFAULT_SESSION_SCOPE },
      { id: `${id}-rt`, secretHash: 'h' },
      verifiedHash,
      now,
    );

  it('inserts a user with an integer id and reads it back without a password hash', async () => {
    const users = createUsersRepository(database.db);
    const user = await users.insertUserWithConversation(newUser('Carol'), 'hello', now);
    expect(Number.isInteger(user.id)).toBe(true);
    expect(user).toEqual({
      id: user.id,
      username: 'Carol',
      email: 'Carol@example.com',
      age: 30,
      level: 'beginner',
      createdAt: now,
      roles: [],
      disabledAt: null,
      emailVerifiedAt: null,
      pendingEmail: null,
    });
    expect(await users.findUserById(user.id)).toEqual(user);
    expect(await users.findUserById(999_999)).toBeUndefined();
  });

  it('creates the conversation with its welcome message in the same transaction', async () => {
    const users = createUsersRepository(database.db);
    const user = await users.insertUserWithConversation(newUser('Dave'), 'welcome, Dave', now);
    const messages = await database.db
      .selectFrom('messages')
      .innerJoin('conversations', 'conversations.id', 'messages.conversation_id')
      .select(['messages.author', 'messages.body', 'messages.created_at_ms'])
      .where('conversations.user_id', '=', user.id)
      .execute();
    expect(messages).toEqual([{ author: 'system', body: 'welcome, Dave', created_at_ms: now.getTime() }]);
  });

  it('maps a duplicate canonical username to username_taken and leaves no half-written rows', async () => {
    const users = createUsersRepository(database.db);
    await users.insertUserWithConversation(newUser('Erin'), 'hi', now);
    const before = await database.db
      .selectFrom('conversations')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirst();
    await expect(
      users.insertUserWithConversation(
        newUser('ERIN', { email: 'other@example.com', emailCanonical: 'other@example.com' }),
        'hi',
        now,
      ),
    ).rejects.toMatchObject({ code: 'username_taken' });
    const after = await database.db
      .selectFrom('conversations')
      .select((eb) => eb.fn.countAll().as('n'))
      .executeTakeFirst();
    expect(Number(after?.n)).toBe(Number(before?.n));
  });

  it('maps a duplicate canonical email to email_taken', async () => {
    const users = createUsersRepository(database.db);
    await users.insertUserWithConversation(newUser('Frank'), 'hi', now);
    await expect(
      users.insertUserWithConversation(
        newUser('Frank2', { email: 'FRANK@example.com', emailCanonical: 'frank@example.com' }),
        'hi',
        now,
      ),
    ).rejects.toMatchObject({ code: 'email_taken' });
  });

  it('lets exactly one of 20 parallel inserts of one username win', async () => {
    const users = createUsersRepository(database.db);
    const outcomes = await Promise.allSettled(
      Array.from({ length: 20 }, (_, i) =>
        users.insertUserWithConversation(
          newUser('Grace', { email: `grace${i}@example.com`, emailCanonical: `grace${i}@example.com` }),
          'hi',
          now,
        ),
      ),
    );
    expect(outcomes.filter((outcome) => outcome.status === 'fulfilled')).toHaveLength(1);
    for (const outcome of outcomes) {
      if (outcome.status === 'rejected') expect(outcome.reason).toMatchObject({ code: 'username_taken' });
    }
    const rows = await database.db
      .selectFrom('users')
      .select('id')
      .where('username_canonical', '=', 'grace')
      .execute();
    expect(rows).toHaveLength(1);
  });

  // At start, failures are made to wait for the floor when a hash verifies in another time than the dummy: bcrypt, or
  // argon2id of parameters other than the current ones (found from outside: after ARGON2_* were raised, a wrong
  // password told an old account from an unknown name by its time).
  it('tells whether any stored hash was made otherwise than with the current parameters', async () => {
    const own = await createTestDatabase(dialect);
    try {
      const users = createUsersRepository(own.db);
      const current = '$argon2id$v=19$m=64,t=1,p=1$';
      expect(await users.hasPasswordHashesUnlike(current)).toBe(false);
      await users.insertUserWithConversation(
        newUser('Ivan', { passwordHash: `${current}c2FsdA$aGFzaA` }),
        'hi',
        now,
      );
      expect(await users.hasPasswordHashesUnlike(current)).toBe(false);
      await users.insertUserWithConversation(
        newUser('Judy', { passwordHash: '$argon2id$v=19$m=32,t=1,p=1$c2FsdA$aGFzaA' }),
        'hi',
        now,
      );
      expect(await users.hasPasswordHashesUnlike(current)).toBe(true);
      expect(await users.hasPasswordHashesUnlike('$argon2id$v=19$m=')).toBe(false);
      await users.insertUserWithConversation(
        newUser('Kim', { passwordHash: `$2b$12$${'a'.repeat(53)}` }),
        'hi',
        now,
      );
      expect(await users.hasPasswordHashesUnlike('$argon2id$v=19$m=')).toBe(true);
    } finally {
      await own.destroy();
    }
  });

  it('returns the password hash only through findCredentialsByUsername, and updates it', async () => {
    const users = createUsersRepository(database.db);
    const user = await users.insertUserWithConversation(newUser('Heidi'), 'hi', now);
    const credentials = await users.findCredentialsByUsername('heidi');
    expect(credentials?.user).toEqual(user);
    expect(credentials?.passwordHash).toMatch(/^\$argon2id\$/);
    const later = new Date(now.getTime() + 1000);
    expect(await users.replacePasswordHash(user.id, 'not-the-current-hash', '$argon2id$other', later)).toBe(
      false,
    );
    expect(
      await users.replacePasswordHash(user.id, credentials?.passwordHash ?? '', '$argon2id$new', later),
    ).toBe(true);
    expect((await users.findCredentialsByUsername('heidi'))?.passwordHash).toBe('$argon2id$new');
    expect(await users.findCredentialsByUsername('nobody')).toBeUndefined();
  });

  it('opens a session only while the verified hash is current, and a password change ends the others', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Judy'), 'hi', now);
    const hash = newUser('Judy').passwordHash;
    const expiresAt = new Date(now.getTime() + 3600_000);
    const open = (id: string, verifiedHash: string) => openSession(user.id, id, verifiedHash, expiresAt);
    expect(await open('judy-1', hash)).toBe(true);
    expect(await open('judy-2', hash)).toBe(true);
    expect(
      await users.replacePasswordHashEndingOtherSessions(user.id, 'stale', '$argon2id$x', 'judy-1', now),
    ).toBe(false);
    expect(
      await users.replacePasswordHashEndingOtherSessions(user.id, hash, '$argon2id$new', 'judy-1', now),
    ).toBe(true);
    const unrevoked = (await sessions.findSessionsOfUser(user.id)).filter(
      (session) => session.revokedAt === undefined,
    );
    expect(unrevoked.map((session) => session.id)).toEqual(['judy-1']);
    expect(await open('judy-3', hash)).toBe(false);
    expect(await open('judy-4', '$argon2id$new')).toBe(true);
    expect(await open('nobody', 'whatever')).toBe(false);
  });

  // The check used to be a no-op UPDATE of the user's row: on PostgreSQL a new row version (and its WAL) per login,
  // on SQLite the users page written again at every login. A shared row lock keeps what the update guarded.
  it.runIf(dialect === 'postgres')(
    'opens a session without writing the user row, and waits for a password change in progress, then refuses',
    async () => {
      const users = createUsersRepository(database.db);
      const sessions = createSessionsRepository(database.db, database.dialect);
      const user = await users.insertUserWithConversation(newUser('Nina'), 'hi', now);
      const hash = newUser('Nina').passwordHash;
      const open = (id: string) => openSession(user.id, id, hash, new Date(now.getTime() + 3600_000));
      const rowVersion = async () =>
        (
          await sql<{ xmin: string }>`select xmin::text as xmin from users where id = ${user.id}`.execute(
            database.db,
          )
        ).rows[0]?.xmin;
      const before = await rowVersion();
      expect(await open('nina-1')).toBe(true);
      expect(await rowVersion()).toBe(before);

      let settled = false;
      let waiting: Promise<boolean> | undefined;
      await database.db.transaction().execute(async (trx) => {
        await trx
          .updateTable('users')
          .set({ password_hash: '$argon2id$changed' })
          .where('id', '=', user.id)
          .execute();
        waiting = open('nina-2').finally(() => {
          settled = true;
        });
        await new Promise((resolve) => setTimeout(resolve, 300));
        expect(settled).toBe(false);
      });
      expect(await waiting).toBe(false);
      expect((await sessions.findSessionsOfUser(user.id)).map((session) => session.id)).toEqual(['nina-1']);
    },
  );

  it('prunes sessions that ended before the cutoff, with their refresh tokens, and keeps live ones', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Ken'), 'hi', now);
    const hash = newUser('Ken').passwordHash;
    const open = (id: string, expiresAt: Date) => openSession(user.id, id, hash, expiresAt);
    const later = (seconds: number) => new Date(now.getTime() + seconds * 1000);
    await open('ken-live', later(86400 * 30));
    await open('ken-revoked', later(86400 * 30));
    await open('ken-expired', later(60));
    await sessions.revokeSession('ken-revoked', 'logout', now);
    const pruned = await sessions.deleteEndedSessions({
      revokedBefore: later(3600),
      expiredBefore: later(3600),
      lastUsedBefore: new Date(now.getTime() - 86400_000),
    });
    expect(pruned).toBeGreaterThanOrEqual(2);
    const left = await database.db
      .selectFrom('sessions')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    expect(left.map((row) => row.id)).toEqual(['ken-live']);
    const tokens = await database.db
      .selectFrom('refresh_tokens')
      .select('id')
      .where('id', 'like', 'ken-%')
      .execute();
    expect(tokens.map((row) => row.id)).toEqual(['ken-live-rt']);
  });

  it('reads a conversation only through a live session of its user', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const repository = createConversationsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Liam'), 'welcome, Liam', now);
    const other = await users.insertUserWithConversation(newUser('Mia'), 'welcome, Mia', now);
    const later = (seconds: number) => new Date(now.getTime() + seconds * 1000);
    const open = (id: string, expiresAt: Date) =>
      openSession(user.id, id, newUser('Liam').passwordHash, expiresAt);
    await open('liam-live', later(3600));
    await open('liam-revoked', later(3600));
    await open('liam-short', later(60));
    await sessions.revokeSession('liam-revoked', 'logout', now);
    const read = (sessionId: string, userId: number, at: Date, idleTtlSeconds = 86400) =>
      createConversationsService({
        conversations: repository,
        clock: { now: () => at },
        policy: { idleTtlSeconds },
      })
        .readConversationOfSession({ sessionId, userId, scopes: new Set(['conversation:read']) })
        .then(
          (found) => found.conversation,
          (error) => error.code,
        );

    expect(await read('liam-live', user.id, now)).toBe('welcome, Liam');
    expect(await read('liam-revoked', user.id, now)).toBe('invalid_token');
    expect(await read('liam-live', other.id, now)).toBe('invalid_token');
    expect(await read('nobody', user.id, now)).toBe('invalid_token');
    // Idle: last used at `now`, and an idle window of nothing has already closed at `now`.
    expect(await read('liam-live', user.id, now, 0)).toBe('invalid_token');
    expect(await read('liam-short', user.id, later(120))).toBe('invalid_token');
    expect(await read('liam-live', user.id, later(120))).toBe('welcome, Liam');

    // The repository only reads: it hands over the session as stored, revoked or not, for the rule to judge.
    const revoked = await repository.findConversationOfSession('liam-revoked');
    expect(revoked?.session).toMatchObject({ id: 'liam-revoked', userId: user.id, revokedAt: now });
    expect(revoked?.username).toBe('Liam');
    expect(await repository.findConversationOfSession('nobody')).toBeUndefined();

    // Stored out of order: the read orders by message id, not by where the rows happen to lie.
    const { id: conversationId } = await database.db
      .selectFrom('conversations')
      .select('id')
      .where('user_id', '=', user.id)
      .executeTakeFirstOrThrow();
    const message = (id: number, body: string) => ({
      id,
      conversation_id: conversationId,
      author: 'user' as const,
      body,
      created_at_ms: now.getTime(),
    });
    await database.db.insertInto('messages').values(message(900_002, 'second')).execute();
    await database.db.insertInto('messages').values(message(900_001, 'first')).execute();
    const ordered = await repository.findConversationOfSession('liam-live');
    expect(ordered?.messages).toEqual([
      { id: expect.any(Number), author: 'system', body: 'welcome, Liam', createdAt: now },
      { id: 900_001, author: 'user', body: 'first', createdAt: now },
      { id: 900_002, author: 'user', body: 'second', createdAt: now },
    ]);

    await database.db.deleteFrom('conversations').where('user_id', '=', user.id).execute();
    expect(await repository.findConversationOfSession('liam-live')).toMatchObject({
      username: 'Liam',
      messages: undefined,
    });
    expect(await read('liam-live', user.id, now)).toBe('not_found');
  });

  it('reads the conversations of many sessions at once, each with its own user, messages and state', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const repository = createConversationsRepository(database.db, database.dialect);
    const names = ['Batcha', 'Batchb', 'Batchc', 'Batchd'];
    const created = await Promise.all(
      names.map((name) => users.insertUserWithConversation(newUser(name), `welcome, ${name}`, now)),
    );
    for (const [index, user] of created.entries()) {
      await sessions.insertSession(
        {
          id: `batch-${index}`,
          userId: user.id,
          expiresAt: new Date(now.getTime() + 3600_000),
          userAgent: undefined,
          ipAddress: undefined,
          scope: DEFAULT_SESSION_SCOPE,
        },
        { id: `batch-${index}-rt`, secretHash: 'h' },
        newUser(names[index] as string).passwordHash,
        now,
      );
    }
    await sessions.revokeSession('batch-2', 'logout', now);
    await users.setUserDisabled(created[3]!.id, now);
    // Asked in one turn of the event loop, in a mixed order, with a repeat and a session that does not exist.
    const asked = ['batch-3', 'batch-0', 'nobody', 'batch-2', 'batch-1', 'batch-0'];
    const found = await Promise.all(asked.map((id) => repository.findConversationOfSession(id)));
    expect(
      found.map(
        (one) =>
          one && {
            session: one.session.id,
            username: one.username,
            revoked: one.session.revokedAt,
            disabled: one.accountDisabledAt,
          },
      ),
    ).toEqual([
      { session: 'batch-3', username: 'Batchd', revoked: undefined, disabled: now },
      { session: 'batch-0', username: 'Batcha', revoked: undefined, disabled: null },
      undefined,
      { session: 'batch-2', username: 'Batchc', revoked: now, disabled: null },
      { session: 'batch-1', username: 'Batchb', revoked: undefined, disabled: null },
      { session: 'batch-0', username: 'Batcha', revoked: undefined, disabled: null },
    ]);
    expect(found.map((one) => one?.messages?.map((message) => message.body))).toEqual([
      ['welcome, Batchd'],
      ['welcome, Batcha'],
      undefined,
      ['welcome, Batchc'],
      ['welcome, Batchb'],
      ['welcome, Batcha'],
    ]);
    // Two callers of one session get their own objects: neither can change what the other holds.
    expect(found[1]).not.toBe(found[5]);
    expect(found[1]?.messages).not.toBe(found[5]?.messages);

    // A revocation committed before a read is asked is what that read sees, even while a batch for the same
    // session, sent before the revocation, is still out.
    const before = repository.findConversationOfSession('batch-1');
    await new Promise((resolve) => setImmediate(resolve));
    await sessions.revokeSession('batch-1', 'logout', now);
    const after = await repository.findConversationOfSession('batch-1');
    expect(after?.session.revokedAt).toEqual(now);
    const earlier = await before;
    expect(earlier?.session.id).toBe('batch-1');
    // On SQLite the earlier batch ran when it went out, before the revocation; PostgreSQL may run it either side.
    if (database.dialect === 'sqlite') expect(earlier?.session.revokedAt).toBeUndefined();

    // A session id that PostgreSQL cannot store (a NUL) finds nothing, and fails none of the reads beside it.
    const beside = await Promise.all([
      repository.findConversationOfSession('batch-0'),
      repository.findConversationOfSession('batch-0\u0000'),
      sessions.findSessionWithUser('batch-0\u0000'),
      sessions.findSessionWithUser('batch-0'),
    ]);
    expect(beside.map((one) => one?.session.id)).toEqual(['batch-0', undefined, undefined, 'batch-0']);
  });

  it('appends messages to the user’s conversation and pages them newest first', async () => {
    const users = createUsersRepository(database.db);
    const repository = createConversationsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Nora'), 'welcome, Nora', now);
    const other = await users.insertUserWithConversation(newUser('Otto'), 'welcome, Otto', now);
    const later = new Date(now.getTime() + 1000);
    const insert = (userId: number, body: string, createdAt: Date, maxMessages = 100) =>
      repository.insertMessageOfUser(userId, { author: 'user', body, createdAt }, maxMessages);
    const first = (await insert(user.id, 'one', later)) as ConversationMessage;
    const second = (await insert(user.id, 'two', later)) as ConversationMessage;
    await insert(other.id, 'otto', later);
    expect(first).toEqual({ id: expect.any(Number), author: 'user', body: 'one', createdAt: later });
    expect(second.id).toBeGreaterThan(first.id);
    const page = await repository.findMessagesOfUser(user.id, { limit: 2, beforeId: undefined });
    expect(page.map((message) => message.body)).toEqual(['two', 'one']);
    const older = await repository.findMessagesOfUser(user.id, { limit: 10, beforeId: first.id });
    expect(older).toEqual([
      { id: expect.any(Number), author: 'system', body: 'welcome, Nora', createdAt: now },
    ]);
    // An id of another user's message positions the page and no more: only the caller's messages come back.
    const otto = await repository.findMessagesOfUser(other.id, { limit: 10, beforeId: undefined });
    const past = await repository.findMessagesOfUser(user.id, { limit: 10, beforeId: otto[0]!.id + 1 });
    expect(past.map((message) => message.body)).toEqual(['two', 'one', 'welcome, Nora']);
    expect(await insert(999_999, 'x', now)).toBeUndefined();
    // The welcome, one and two: a conversation of three is full at three, and keeps its three.
    expect(await insert(user.id, 'three', later, 3)).toBe('full');
    expect(await repository.findMessagesOfUser(user.id, { limit: 10, beforeId: undefined })).toHaveLength(3);
    expect(await insert(user.id, 'three', later, 4)).toMatchObject({ body: 'three' });

    await database.db.deleteFrom('conversations').where('user_id', '=', other.id).execute();
    expect(await repository.findMessagesOfUser(other.id, { limit: 10, beforeId: undefined })).toEqual([]);
    await insert(other.id, 'again', now);
    expect(await insert(other.id, 'once more', now, 1)).toBe('full');
    expect(
      (await repository.findMessagesOfUser(other.id, { limit: 10, beforeId: undefined })).map((m) => m.body),
    ).toEqual(['again']);
  });

  // Found from outside on PostgreSQL: of parallel posts, a later id could carry an earlier time (each took its time
  // before its turn), so "newest first" by id listed older messages first; and the cap let the posts in flight past it.
  it('keeps times in the order of ids, and the cap exact, under parallel posts of one user', async () => {
    const users = createUsersRepository(database.db);
    const repository = createConversationsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Parallela'), 'welcome, Parallela', now);
    // Each post's time is earlier than the one before it was sent: whichever order they land in, ids and times differ.
    const answers = await Promise.all(
      Array.from({ length: 12 }, (_, index) =>
        repository.insertMessageOfUser(
          user.id,
          { author: 'user', body: `m${index}`, createdAt: new Date(now.getTime() + 60_000 - index * 1000) },
          8,
        ),
      ),
    );
    expect(answers.filter((answer) => answer === 'full')).toHaveLength(5);
    const stored = await repository.findMessagesOfUser(user.id, { limit: 100, beforeId: undefined });
    expect(stored).toHaveLength(8);
    const times = stored.map((message) => message.createdAt.getTime());
    expect(times).toEqual([...times].sort((a, b) => b - a));
  });

  it('disables and enables a user, sets their roles, and reads both with the session', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const conversations = createConversationsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Pia'), 'welcome', now);
    await sessions.insertSession(
      {
        id: 'pia-1',
        userId: user.id,
        expiresAt: new Date(now.getTime() + 3600_000),
        userAgent: undefined,
        ipAddress: undefined,
        scope: 'conversation:read admin',
      },
      { id: 'pia-1-rt', secretHash: 'h' },
      newUser('Pia').passwordHash,
      now,
    );
    expect((await users.setUserDisabled(user.id, now))?.disabledAt).toEqual(now);
    expect((await sessions.findSessionWithUser('pia-1'))?.user.disabledAt).toEqual(now);
    expect((await conversations.findConversationOfSession('pia-1'))?.accountDisabledAt).toEqual(now);
    expect((await users.setUserDisabled(user.id, null))?.disabledAt).toBeNull();
    expect((await conversations.findConversationOfSession('pia-1'))?.accountDisabledAt).toBeNull();
    expect((await users.setUserRoles(user.id, ['admin', 'admin']))?.roles).toEqual(['admin']);
    expect((await sessions.findSessionWithUser('pia-1'))?.user.roles).toEqual(['admin']);
    expect((await users.setUserRoles(user.id, []))?.roles).toEqual([]);
    expect(await users.setUserDisabled(999_999, now)).toBeUndefined();
    expect(await users.setUserRoles(999_999, [])).toBeUndefined();
    expect((await sessions.findSession('pia-1'))?.scope).toBe('conversation:read admin');
  });

  it('reads many sessions with their users at once, each caller with its own objects', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const created = await Promise.all(
      ['Seta', 'Setb', 'Setc'].map((name) => users.insertUserWithConversation(newUser(name), 'hi', now)),
    );
    for (const [index, user] of created.entries()) {
      await sessions.insertSession(
        {
          id: `set-${index}`,
          userId: user.id,
          expiresAt: new Date(now.getTime() + 3600_000),
          userAgent: undefined,
          ipAddress: undefined,
          scope: DEFAULT_SESSION_SCOPE,
        },
        { id: `set-${index}-rt`, secretHash: 'h' },
        newUser('Seta').passwordHash,
        now,
      );
    }
    await users.setUserRoles(created[2]!.id, ['admin']);
    await sessions.revokeSession('set-1', 'logout', now);
    const asked = ['set-2', 'missing', 'set-0', 'set-1', 'set-2'];
    const found = await Promise.all(asked.map((id) => sessions.findSessionWithUser(id)));
    expect(
      found.map(
        (one) =>
          one && {
            session: one.session.id,
            userId: one.session.userId,
            user: one.user.username,
            roles: one.user.roles,
            revoked: one.session.revokedAt,
          },
      ),
    ).toEqual([
      { session: 'set-2', userId: created[2]!.id, user: 'Setc', roles: ['admin'], revoked: undefined },
      undefined,
      { session: 'set-0', userId: created[0]!.id, user: 'Seta', roles: [], revoked: undefined },
      { session: 'set-1', userId: created[1]!.id, user: 'Setb', roles: [], revoked: now },
      { session: 'set-2', userId: created[2]!.id, user: 'Setc', roles: ['admin'], revoked: undefined },
    ]);
    expect(found[0]).not.toBe(found[4]);
    expect(found[0]?.user).not.toBe(found[4]?.user);
  });

  it('reads a session stored before scopes were kept as granting both conversation scopes', async () => {
    const users = createUsersRepository(database.db);
    const sessions = createSessionsRepository(database.db, database.dialect);
    const user = await users.insertUserWithConversation(newUser('Quinn'), 'welcome', now);
    await insertLiveSession(database.db, 'quinn-old', user.id, now.getTime());
    expect((await sessions.findSession('quinn-old'))?.scope).toBe(DEFAULT_SESSION_SCOPE);
  });

  it('deletes conversations and messages with their user', async () => {
    const users = createUsersRepository(database.db);
    const user = await users.insertUserWithConversation(newUser('Ivan'), 'hi', now);
    const { id: conversationId } = await database.db
      .selectFrom('conversations')
      .select('id')
      .where('user_id', '=', user.id)
      .executeTakeFirstOrThrow();
    await database.db.deleteFrom('users').where('id', '=', user.id).execute();
    const conversationsLeft = await database.db
      .selectFrom('conversations')
      .select('id')
      .where('user_id', '=', user.id)
      .execute();
    const messagesLeft = await database.db
      .selectFrom('messages')
      .select('id')
      .where('conversation_id', '=', conversationId)
      .execute();
    expect(conversationsLeft).toEqual([]);
    expect(messagesLeft).toEqual([]);
  });

  it('stores signing keys and lists the active ones newest first', async () => {
    const keys = createSigningKeysRepository(database.db);
    await keys.insertSigningKey(
      { kid: 'k1', algorithm: 'EdDSA', publicJwk: { x: '1' }, sealedPrivateJwk: 'gh1:sealed-1' },
      now,
    );
    await keys.insertSigningKey(
      { kid: 'k2', algorithm: 'EdDSA', publicJwk: { x: '2' }, sealedPrivateJwk: 'gh1:sealed-2' },
      new Date(now.getTime() + 1000),
    );
    const active = await keys.findActiveSigningKeys('EdDSA');
    expect(active.map((key) => key.kid)).toEqual(['k2', 'k1']);
    expect(active[0]?.sealedPrivateJwk).toBe('gh1:sealed-2');
  });

  it('replaces a stored private key only while it is still the one expected', async () => {
    const keys = createSigningKeysRepository(database.db);
    await keys.insertSigningKey(
      { kid: 'k3', algorithm: 'EdDSA', publicJwk: { x: '3' }, sealedPrivateJwk: 'old' },
      now,
    );
    expect(await keys.replaceSealedPrivateJwk('k3', 'stale', 'new')).toBe(false);
    expect(await keys.replaceSealedPrivateJwk('k3', 'old', 'new')).toBe(true);
    const [stored] = (await keys.findAllSigningKeys()).filter((key) => key.kid === 'k3');
    expect(stored?.sealedPrivateJwk).toBe('new');
  });
});
