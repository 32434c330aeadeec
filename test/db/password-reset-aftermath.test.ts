import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEmailFlowsRepository } from '../../src/db/email-flows.ts';
import { createOneTimeTokensRepository } from '../../src/db/one-time-tokens.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { generateOneTimeToken } from '../../src/security/one-time-tokens.ts';
import { createPasswordPolicy } from '../../src/security/password-policy.ts';
import { createPasswordHasher } from '../../src/security/passwords.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { createBackgroundWork } from '../../src/services/background-work.ts';
import { createEmailFlowsService } from '../../src/services/email-flows.ts';
import { createMailComposer } from '../../src/services/mail.ts';
import type { RequestContext } from '../../src/services/request-context.ts';
import { FAST_ARGON2, TEST_SECRET } from '../support/build-test-app.ts';
import { createTestClock } from '../support/clock.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

describe.each(dialects)('the aftermath of a committed password reset on %s', (dialect) => {
  let database: TestDatabase;
  const hasher = createPasswordHasher(FAST_ARGON2, { importedBcryptCost: 4 });
  const policy = createPasswordPolicy({ minLength: 8, maxLength: 1024 });
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
  });
  afterAll(async () => {
    await policy.close();
    await database.destroy();
  });

  it('answers success and records the reset when clearing the throttling counters then fails; the failure is reported', async () => {
    const clock = createTestClock();
    const users = createUsersRepository(database.db);
    const flows = createEmailFlowsRepository(database.db);
    const user = await users.insertUserWithConversation(newUser('aftermath'), 'welcome', clock.now());
    const { token, tokenHash } = generateOneTimeToken();
    await flows.issueTokenWithMails(
      {
        userId: user.id,
        purpose: 'reset_password',
        email: user.email,
        tokenHash,
        expiresAt: new Date(clock.now().getTime() + 3600_000),
      },
      [],
      clock.now(),
    );
    const audited: string[] = [];
    const context: RequestContext = {
      userAgent: undefined,
      ipAddress: undefined,
      audit: (event) => audited.push(event),
    };
    const reported: unknown[] = [];
    const service = createEmailFlowsService({
      mail: createMailComposer(createSecretBox([TEST_SECRET])),
      clock,
      publicUrl: 'http://localhost:8000',
      users,
      tokens: createOneTimeTokensRepository(database.db),
      flows,
      hasher,
      policy,
      background: createBackgroundWork(() => {}),
      onPasswordReset: async () => {
        throw new Error('counter store gone');
      },
      onAftermathFailed: (error) => reported.push(error),
    });
    await expect(
      service.resetPassword(token, 'a brand new passphrase here', context),
    ).resolves.toBeUndefined();
    expect(audited).toEqual(['password_reset']);
    expect(reported).toEqual([expect.objectContaining({ message: 'counter store gone' })]);
    const row = await database.db
      .selectFrom('one_time_tokens')
      .select('consumed_at_ms')
      .where('token_hash', '=', tokenHash)
      .executeTakeFirstOrThrow();
    expect(row.consumed_at_ms).not.toBeNull();
  });
});
