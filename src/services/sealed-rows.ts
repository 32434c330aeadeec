import type { EmailOutboxRepository } from '../db/email-outbox.ts';
import type { MfaRepository } from '../db/mfa.ts';
import { type SecretBox, sealedKeyId } from '../security/secret-box.ts';
import { outboxSealContext } from './mail.ts';
import { totpSealContext } from './mfa.ts';

/** Where values sealed under GATEHOUSE_SECRET live, besides the signing keys (services/keys.ts): TOTP secrets, mails. */
export interface SealedRowStores {
  mfa: Pick<MfaRepository, 'findSealedTotpSecrets' | 'replaceSealedTotpSecret'>;
  outbox: Pick<EmailOutboxRepository, 'findSealedPayloads' | 'replaceSealedPayload'>;
}

interface SealedRow {
  /** How the command names it: `totp factor ID`, `mail ID`. */
  name: string;
  sealed: string;
  context: string;
  replace(sealed: string): Promise<boolean>;
}

async function sealedRows({ mfa, outbox }: SealedRowStores): Promise<SealedRow[]> {
  const factors = (await mfa.findSealedTotpSecrets()).map((factor) => ({
    name: `totp factor ${factor.id}`,
    sealed: factor.secretSealed,
    context: totpSealContext(factor.id, factor.userId),
    replace: (sealed: string) => mfa.replaceSealedTotpSecret(factor.id, factor.secretSealed, sealed),
  }));
  const mails = (await outbox.findSealedPayloads()).map((mail) => ({
    name: `mail ${mail.id}`,
    sealed: mail.sealedPayload,
    context: outboxSealContext(mail.template, mail.recipient),
    replace: (sealed: string) => outbox.replaceSealedPayload(mail.id, mail.sealedPayload, sealed),
  }));
  return [...factors, ...mails];
}

/**
 * Seals again with the first secret of `box` every TOTP secret and unsent mail sealed with another, as a rotation of
 * GATEHOUSE_SECRET does with the signing keys: once the old secret is dropped, a factor sealed with it answered its
 * logins 500 and a mail could not be sent. Returns how many it sealed and the rows it could not open.
 */
export async function resealRows(
  stores: SealedRowStores,
  box: SecretBox,
): Promise<{ resealed: number; unreadable: string[] }> {
  let resealed = 0;
  const unreadable: string[] = [];
  for (const row of await sealedRows(stores)) {
    if (sealedKeyId(row.sealed) === box.sealingKeyId) continue;
    let plaintext: string;
    try {
      plaintext = box.open(row.sealed, row.context);
    } catch {
      unreadable.push(row.name);
      continue;
    }
    // A row changed meanwhile (a factor replaced, a mail sent) was written with the current secret, or is gone.
    if (await row.replace(box.seal(plaintext, row.context))) resealed += 1;
  }
  return { resealed, unreadable };
}

/** The rows that do not open with the first secret alone: the old secret may not be dropped while there are any. */
export async function findRowsNotSealedWith(stores: SealedRowStores, box: SecretBox): Promise<string[]> {
  return (await sealedRows(stores))
    .filter((row) => sealedKeyId(row.sealed) !== box.sealingKeyId)
    .map((row) => row.name);
}
