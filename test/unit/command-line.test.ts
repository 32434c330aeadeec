import { describe, expect, it } from 'vitest';
import { resolveCommandLine } from '../../src/commands/cli.ts';

describe('the gatehouse command line', () => {
  it('takes an option value that starts with a dash (a session id can), rather than calling it ambiguous', () => {
    const resolved = resolveCommandLine(['sessions', 'revoke', '--user', 'alice', '--session', '-Ab3_x']);
    expect(resolved.kind).toBe('command');
    if (resolved.kind !== 'command') return;
    expect(resolved.options).toMatchObject({ user: 'alice', session: '-Ab3_x' });
  });

  it('still reads a known option after an option that lacks its value as a missing value', () => {
    const resolved = resolveCommandLine(['sessions', 'revoke', '--session', '--user', 'alice']);
    expect(resolved.kind).toBe('usage');
  });
});
