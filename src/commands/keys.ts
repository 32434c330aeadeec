import type { Config } from '../config.ts';
import { createSigningKeysRepository } from '../db/signing-keys.ts';
import { systemClock } from '../security/clock.ts';
import { createSecretBox } from '../security/secret-box.ts';
import { listSigningKeys, rotateSigningKey } from '../services/keys.ts';
import { openDatabase } from './open-database.ts';

const USAGE = 'usage: npm run keys -- list | rotate | retire <kid>';

/** `npm run keys -- list|rotate|retire <kid>`: manages signing keys; returns the process exit code. */
export async function runKeysCommand(
  config: Config,
  args: string[],
  print: (line: string) => void,
): Promise<number> {
  const [command, kid] = args;
  if (config.jwt.algorithm !== 'EdDSA') {
    print('JWT_ALGORITHM=HS256 signs with JWT_SECRET: rotate it by changing the secret, not with keys');
    return 1;
  }
  const { handle } = await openDatabase(config, print);
  try {
    const signingKeys = createSigningKeysRepository(handle.db);
    if (command === 'list') {
      for (const key of await listSigningKeys(signingKeys)) {
        const retired = key.retiredAt ? `  retired ${key.retiredAt.toISOString()}` : '';
        print(
          `${key.kid}  ${key.algorithm}  ${key.state.padEnd(9)}  created ${key.createdAt.toISOString()}${retired}`,
        );
      }
      return 0;
    }
    if (command === 'rotate') {
      const newKid = await rotateSigningKey(signingKeys, systemClock, createSecretBox(config.secrets));
      print(
        `new signing key ${newKid}: every instance signs with it from its next login on (within a second).`,
      );
      print('Older keys keep verifying until the tokens they signed have expired, then retire on their own.');
      return 0;
    }
    if (command === 'retire' && kid) {
      const target = (await listSigningKeys(signingKeys)).find((key) => key.kid === kid);
      if (!target) return fail(print, `no key ${kid}`);
      if (target.state === 'signing')
        return fail(print, `${kid} is the signing key: rotate first, then retire it`);
      if (!(await signingKeys.retireSigningKey(kid, systemClock.now())))
        return fail(print, `${kid} is already retired`);
      print(
        `retired ${kid}: tokens it signed are refused from each instance's next key reload (within 30 s)`,
      );
      return 0;
    }
    return fail(print, USAGE);
  } finally {
    await handle.close();
  }
}

function fail(print: (line: string) => void, message: string): number {
  print(message);
  return 1;
}
