import { withOperatorService } from './operator-session.ts';
import { printJson, printTable } from './output.ts';
import { type CommandInput, EXIT_OK, EXIT_REFUSED } from './users.ts';

const refuseWithHs256 = (input: CommandInput): number | undefined => {
  if (input.config.jwt.algorithm === 'EdDSA') return undefined;
  input.io.warn('JWT_ALGORITHM=HS256 signs with JWT_SECRET: rotate it by changing the secret, not with keys');
  return EXIT_REFUSED;
};

/** `gatehouse keys list`: every signing key, newest first, with its state. */
export async function listKeysCommand(input: CommandInput): Promise<number> {
  const refused = refuseWithHs256(input);
  if (refused !== undefined) return refused;
  return withOperatorService(input.config, input.io, { counters: false }, async ({ operators }) => {
    const keys = await operators.listSigningKeys();
    if (input.options.json) {
      printJson(input.io, {
        keys: keys.map((key) => ({
          kid: key.kid,
          algorithm: key.algorithm,
          state: key.state,
          created_at: key.createdAt.toISOString(),
          retired_at: key.retiredAt?.toISOString() ?? null,
        })),
      });
      return EXIT_OK;
    }
    printTable(
      input.io,
      ['kid', 'algorithm', 'state', 'created', 'retired'],
      keys.map((key) => [key.kid, key.algorithm, key.state, key.createdAt, key.retiredAt]),
      'no signing keys yet: the first server start makes one',
    );
    return EXIT_OK;
  });
}

/** `gatehouse keys rotate`: a new signing key. */
export async function rotateKeyCommand(input: CommandInput): Promise<number> {
  const refused = refuseWithHs256(input);
  if (refused !== undefined) return refused;
  return withOperatorService(input.config, input.io, { counters: false }, async ({ operators, context }) => {
    const kid = await operators.rotateSigningKey(context);
    if (input.options.json) {
      printJson(input.io, { kid });
      return EXIT_OK;
    }
    input.io.print(
      `new signing key ${kid}: every instance signs with it from its next login on (within a second).`,
    );
    input.io.print(
      'Older keys keep verifying until the tokens they signed have expired, then retire on their own.',
    );
    return EXIT_OK;
  });
}

/** `gatehouse keys retire KID`: refuses a key's tokens now (a leaked key). */
export async function retireKeyCommand(input: CommandInput): Promise<number> {
  const refused = refuseWithHs256(input);
  if (refused !== undefined) return refused;
  const kid = input.positionals[0] ?? '';
  return withOperatorService(input.config, input.io, { counters: false }, async ({ operators, context }) => {
    const outcome = await operators.retireSigningKey(kid, context);
    if (outcome === 'retired') {
      if (input.options.json) printJson(input.io, { kid, retired: true });
      else
        input.io.print(
          `retired ${kid}: tokens it signed are refused from each instance's next key reload (within 30 s)`,
        );
      return EXIT_OK;
    }
    input.io.warn(
      outcome === 'not_found'
        ? `gatehouse: no key ${kid}`
        : outcome === 'signing'
          ? `gatehouse: ${kid} is the signing key: rotate first, then retire it`
          : `gatehouse: ${kid} is already retired`,
    );
    return EXIT_REFUSED;
  });
}
