/**
 * Found from outside: `secret rotate` sealed the signing keys again but not the TOTP secrets and unsent mails, so once
 * the old secret was dropped every login with an authenticator app answered 500 and queued mails could not be sent.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createEmailOutboxRepository, queueMail } from '../../src/db/email-outbox.ts';
import { createMfaRepository } from '../../src/db/mfa.ts';
import { createUsersRepository } from '../../src/db/users.ts';
import { createSecretBox } from '../../src/security/secret-box.ts';
import { outboxSealContext } from '../../src/services/mail.ts';
import { totpSealContext } from '../../src/services/mfa.ts';
import { findRowsNotSealedWith, resealRows } from '../../src/services/sealed-rows.ts';
import { createTestDatabase, dialects, type TestDatabase } from '../support/dialects.ts';
import { newUser } from '../support/new-user.ts';

const secret = () => randomBytes(32).toString('base64url');

describe.each(dialects)('sealing TOTP secrets and mails again with a new secret, on %s', (dialect) => {
  let database: TestDatabase;
  const oldSecret = secret();
  const newSecret = secret();
  let userId: number;
  beforeAll(async () => {
    database = await createTestDatabase(dialect);
    userId = (
      await createUsersRepository(database.db).insertUserWithConversation(newUser('Sealy'), 'hi', new Date())
    ).id;
    const old = createSecretBox([oldSecret]);
    await createMfaRepository(database.db).insertPendingTotp({
      id: 'factor-1',
      userId,
      secretSealed: old.seal('JBSWY3DPEHPK3PXP', totpSealContext('factor-1', userId)),
      createdAt: new Date(),
    });
    await queueMail(
      database.db,
      {
        userId,
        recipient: 'sealy@example.com',
        template: 'password_reset',
        sealedPayload: old.seal('{"link":"x"}', outboxSealContext('password_reset', 'sealy@example.com')),
      },
      Date.now(),
    );
  });
  afterAll(async () => {
    await database.destroy();
  });

  const stores = () => ({
    mfa: createMfaRepository(database.db),
    outbox: createEmailOutboxRepository(database.db, database.dialect),
  });

  it('names the rows the new secret alone cannot open, seals them with it, and then none is left', async () => {
    const rotating = createSecretBox([newSecret, oldSecret]);
    expect(await findRowsNotSealedWith(stores(), rotating)).toHaveLength(2);
    expect(await resealRows(stores(), rotating)).toEqual({ resealed: 2, unreadable: [] });
    expect(await findRowsNotSealedWith(stores(), rotating)).toEqual([]);

    const alone = createSecretBox([newSecret]);
    const factor = await createMfaRepository(database.db).findTotpFactor(userId);
    expect(alone.open(factor!.secretSealed, totpSealContext('factor-1', userId))).toBe('JBSWY3DPEHPK3PXP');
    const [mail] = await stores().outbox.findSealedPayloads();
    expect(alone.open(mail!.sealedPayload, outboxSealContext('password_reset', 'sealy@example.com'))).toBe(
      '{"link":"x"}',
    );
  });

  it('leaves what no given secret opens as it is, and names it', async () => {
    const stranger = createSecretBox([secret()]);
    const result = await resealRows(stores(), stranger);
    expect(result.resealed).toBe(0);
    expect(result.unreadable.sort()).toEqual(['mail 1', 'totp factor factor-1'].sort());
  });
});
