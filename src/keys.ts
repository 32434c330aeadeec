import { existsSync } from 'node:fs';
import { ConfigError, loadConfig } from './config.ts';
import { createDb } from './db/connect.ts';
import { migrateToLatest } from './db/migrate.ts';
import { createSigningKeysRepository } from './db/signing-keys.ts';
import { systemClock } from './security/clock.ts';
import { listSigningKeys, rotateSigningKey } from './services/keys.ts';

const USAGE = 'usage: npm run keys -- list | rotate | retire <kid>';

if (existsSync('.env')) process.loadEnvFile('.env');
const [command, kid] = process.argv.slice(2);
try {
  const config = loadConfig(process.env);
  if (config.jwt.algorithm !== 'EdDSA') {
    throw new Error(
      'JWT_ALGORITHM=HS256 signs with JWT_SECRET: rotate it by changing the secret, not with keys',
    );
  }
  const handle = createDb(config.database);
  try {
    await migrateToLatest(handle);
    const signingKeys = createSigningKeysRepository(handle.db);
    if (command === 'list') {
      for (const key of await listSigningKeys(signingKeys)) {
        const retired = key.retiredAt ? ` retired ${key.retiredAt.toISOString()}` : '';
        console.log(
          `${key.kid}  ${key.algorithm}  ${key.state.padEnd(9)}  created ${key.createdAt.toISOString()}${retired}`,
        );
      }
    } else if (command === 'rotate') {
      const newKid = await rotateSigningKey(signingKeys, systemClock);
      console.log(
        `new signing key ${newKid}: running instances sign with it within 30 s; older keys keep verifying`,
      );
      console.log(
        'until the tokens they signed have expired, then retire on their own (or: npm run keys -- retire <kid>)',
      );
    } else if (command === 'retire' && kid) {
      const keys = await listSigningKeys(signingKeys);
      const target = keys.find((key) => key.kid === kid);
      if (!target) throw new Error(`no key ${kid}`);
      if (target.state === 'signing')
        throw new Error(`${kid} is the signing key: rotate first, then retire it`);
      if (!(await signingKeys.retireSigningKey(kid, systemClock.now())))
        throw new Error(`${kid} is already retired`);
      console.log(`retired ${kid}: tokens it signed are refused from the next key reload (at most 30 s)`);
    } else {
      console.error(USAGE);
      process.exitCode = 2;
    }
  } finally {
    await handle.close();
  }
} catch (error) {
  if (error instanceof ConfigError) {
    for (const problem of error.problems) console.error(`gatehouse: configuration error: ${problem}`);
  } else {
    console.error(`gatehouse keys: ${(error as Error).message}`);
  }
  process.exitCode = 1;
}
