import { type Config, withSecrets } from '../config.ts';
import { lockSecretFile, readOrCreateSecretFile, replaceSecretFile } from '../db/data-directory.ts';
import { createEmailOutboxRepository } from '../db/email-outbox.ts';
import { createMfaRepository } from '../db/mfa.ts';
import { createSigningKeysRepository } from '../db/signing-keys.ts';
import { createSecretBox, generateSecret } from '../security/secret-box.ts';
import { findKeysNotSealedWith, sealSigningKeys } from '../services/keys.ts';
import { findRowsNotSealedWith, resealRows } from '../services/sealed-rows.ts';
import { openDatabase } from './open-database.ts';

const USAGE = 'usage: npm run gatehouse -- secret generate | rotate';

/** Where main.ts found the secrets: GATEHOUSE_SECRET, or the file it keeps beside a SQLite database. */
export type SecretSource = { kind: 'environment' } | { kind: 'file'; path: string };

/**
 * `npm run gatehouse -- secret generate|rotate`. `rotate` re-seals every private key with the first secret of
 * GATEHOUSE_SECRET ("new,old"), after which the old one can be dropped; on the embedded default without
 * GATEHOUSE_SECRET it does the same with `secret.key` in two runs, the first adding a new secret and the second,
 * after a restart, dropping the old one. Returns the process exit code.
 */
export async function runSecretCommand(
  config: Config,
  source: SecretSource,
  args: string[],
  print: (line: string) => void,
): Promise<number> {
  const [command] = args;
  // `secret generate` needs no configuration: main.ts answers it before reading any.
  if (command !== 'rotate') {
    print(USAGE);
    return 2;
  }
  const release = source.kind === 'file' ? lockSecretFile(source.path) : () => {};
  try {
    return await rotateSecret(config, source, print);
  } finally {
    release();
  }
}

async function rotateSecret(
  config: Config,
  source: SecretSource,
  print: (line: string) => void,
): Promise<number> {
  let secrets = config.secrets;
  // The file follows GATEHOUSE_SECRET's three steps in two runs: the first adds a new secret before the old one (a
  // running server goes on with the old one in memory until its restart); the second, after the restart, re-seals
  // with the new one and drops the old one once nothing is sealed with it. Dropped at once, what the server sealed
  // meanwhile was lost.
  if (source.kind === 'file') {
    // Read again under the lock: a rotation that finished since this process started changed the file.
    const current = readOrCreateSecretFile(source.path, generateSecret())
      .content.split(',')
      .map((secret) => secret.trim());
    if (current.length < 2) {
      // Step 1 alone: nothing is sealed with the new secret before every process holds it, or what a running server
      // opens (an authenticator app at a login) would be sealed with a secret it does not have.
      replaceSecretFile(source.path, [generateSecret(), ...current].join(','));
      print(
        `${source.path} holds a new secret before the old one: restart the server (every process on this database), ` +
          'then run this command again to seal everything with the new secret and drop the old one.',
      );
      return 0;
    }
    secrets = current;
  } else if (secrets.length < 2) {
    print('GATEHOUSE_SECRET holds one secret: rotating means running every instance with "new,old" first.');
    print(
      'Make a new secret with `npm run gatehouse -- secret generate`, set GATEHOUSE_SECRET="<new>,<old>"',
    );
    print('on every instance and restart them, then run this command again with that list.');
    return 1;
  }
  const { handle } = await openDatabase(withSecrets(config, secrets), print, { existing: true });
  try {
    const box = createSecretBox(secrets);
    const signingKeys = createSigningKeysRepository(handle.db);
    const report = await sealSigningKeys(signingKeys, box, { reseal: true, now: new Date() });
    print(`re-sealed ${report.sealed.length} private key(s) with secret ${box.sealingKeyId}`);
    const stores = {
      mfa: createMfaRepository(handle.db),
      outbox: createEmailOutboxRepository(handle.db, handle.dialect),
    };
    const rows = await resealRows(stores, box);
    print(`re-sealed ${rows.resealed} authenticator app secret(s) and unsent mail(s)`);
    if (rows.unreadable.length > 0)
      print(`cannot open ${rows.unreadable.join(', ')} with any of the secrets given`);
    // Checked afresh, so that a key another process added meanwhile (a `keys rotate`) is not lost with the old secret,
    // nor a factor or a mail sealed meanwhile by a server still sealing with it.
    const left = [
      ...(await findKeysNotSealedWith(signingKeys, box)),
      ...(await findRowsNotSealedWith(stores, box)),
    ];
    if (left.length > 0) {
      print(`${left.join(', ')} not sealed with the new secret: keep the old one and run this again`);
      return 1;
    }
    if (source.kind === 'file') {
      replaceSecretFile(source.path, secrets[0] as string);
      print(`${source.path} now holds only the new secret; restart the server to use it.`);
    } else {
      print(
        'Every key is sealed with the first secret: remove the others from GATEHOUSE_SECRET and restart.',
      );
    }
    return 0;
  } finally {
    await handle.close();
  }
}
