import { describe, expect, it } from 'vitest';
import { createPasswordPolicy } from '../../src/security/password-policy.ts';

const policy = createPasswordPolicy({ minLength: 8, maxLength: 1024 });
const inputs = ['alice', 'alice@example.com'];

describe('password policy', async () => {
  it('refuses a password one character below the minimum and accepts one at it', async () => {
    expect(await policy.check('xQ7#kd2', inputs)).toEqual({ type: 'too_short', minLength: 8 });
    expect(await policy.check('xQ7#kd2!', inputs)).toBeUndefined();
  });

  it('counts code points, not UTF-16 units or bytes', async () => {
    expect(await policy.check('🔑🗝🔐🛡⚔🏰🐉🦄', inputs)).toBeUndefined();
    expect(
      (await createPasswordPolicy({ minLength: 15, maxLength: 1024 }).check('🔑🗝🔐🛡⚔🏰🐉🦄', inputs))?.type,
    ).toBe('too_short');
  });

  it('accepts 64, 128 and 1024 characters and refuses 1025', async () => {
    const random = (n: number) => Array.from({ length: n }, (_, i) => 'q7Z!kd2#Lm9$'[i % 12]).join('');
    for (const length of [64, 128, 1024])
      expect(await policy.check(`${random(length - 4)}Xy5%`, inputs)).toBeUndefined();
    expect(await policy.check('x'.repeat(1025), inputs)).toEqual({ type: 'too_long', maxLength: 1024 });
  });

  it('imposes no composition rules', async () => {
    expect(await policy.check('correct horse battery staple', inputs)).toBeUndefined();
  });

  it('refuses control characters', async () => {
    expect((await policy.check('correct horse\u0000battery', inputs))?.type).toBe('control_character');
    expect((await policy.check('correct horse\nbattery', inputs))?.type).toBe('control_character');
  });

  it('refuses lone surrogates, which would hash like another password', async () => {
    expect((await policy.check('correct horse \ud800 battery', inputs))?.type).toBe('control_character');
  });

  it.each(['password123456789', '123456789012345', 'qwertyuiopasdfgh', 'password', 'P@ssw0rd2024'])(
    'refuses the common password %s with a reason',
    async (password) => {
      const problem = await policy.check(password, inputs);
      expect(problem?.type).toBe('too_common');
    },
  );

  it('refuses the username or email as the password', async () => {
    expect(await policy.check('alice@example.com', inputs)).toEqual({
      type: 'too_common',
      reason: 'it contains the username or email',
    });
  });
});
