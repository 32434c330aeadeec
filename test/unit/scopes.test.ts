import { describe, expect, it } from 'vitest';
import type { Scope } from '../../src/domain/scope.ts';
import { AppError } from '../../src/errors.ts';
import {
  DEFAULT_SCOPES,
  effectiveScopes,
  formatScope,
  grantScopes,
  parseRequestedScope,
  scopesOfToken,
  scopesPermittedTo,
} from '../../src/services/scopes.ts';

const member = { roles: [] };
const admin = { roles: ['admin' as const] };
const set = (text: string) => new Set(text.split(' ').filter(Boolean)) as Set<Scope>;
const codeOf = (run: () => unknown) => {
  try {
    run();
    return 'none';
  } catch (error) {
    return error instanceof AppError ? error.code : 'other';
  }
};

describe('scope rules', () => {
  it('grants conversation:read conversation:write by default, never admin, even to an admin', () => {
    expect(formatScope(DEFAULT_SCOPES)).toBe('conversation:read conversation:write');
    expect(formatScope(grantScopes(undefined, scopesPermittedTo(admin)))).toBe(
      'conversation:read conversation:write',
    );
    expect(formatScope(grantScopes(undefined, scopesPermittedTo(member)))).toBe(
      'conversation:read conversation:write',
    );
  });

  it('treats an omitted or empty scope parameter as no request (RFC 6749 §3.2, §3.3)', () => {
    expect(parseRequestedScope(undefined)).toBeUndefined();
    expect(parseRequestedScope('')).toBeUndefined();
    expect(parseRequestedScope('   ')).toBeUndefined();
  });

  it('reads the scope parameter as space-separated names in any order, repeated or not', () => {
    expect(parseRequestedScope('conversation:write  conversation:read conversation:read')).toEqual(
      set('conversation:read conversation:write'),
    );
    expect(parseRequestedScope('admin')).toEqual(set('admin'));
  });

  it('reads the scope of earlier tokens, "conversation", as both conversation scopes', () => {
    expect(parseRequestedScope('conversation')).toEqual(set('conversation:read conversation:write'));
    expect(scopesOfToken('conversation')).toEqual(set('conversation:read conversation:write'));
  });

  it.each([
    'superuser',
    'admin superuser',
    'Conversation:Read',
    'conversation:*',
    'a\u0000b',
    'é',
    '"admin"',
  ])('refuses the unknown or malformed scope %j with invalid_scope', (raw) => {
    expect(codeOf(() => parseRequestedScope(raw))).toBe('invalid_scope');
  });

  it('grants exactly what was asked when it is within what the user may have', () => {
    const granted = grantScopes(set('conversation:read'), scopesPermittedTo(member));
    expect(formatScope(granted)).toBe('conversation:read');
    expect(formatScope(grantScopes(set('admin conversation:read'), scopesPermittedTo(admin)))).toBe(
      'conversation:read admin',
    );
  });

  it('refuses admin to a user without the admin role with invalid_scope', () => {
    expect(codeOf(() => grantScopes(set('admin'), scopesPermittedTo(member)))).toBe('invalid_scope');
    expect(codeOf(() => grantScopes(set('admin conversation:read'), scopesPermittedTo(member)))).toBe(
      'invalid_scope',
    );
  });

  it('keeps only the scopes the user may still have: a revoked role takes admin out of a token at once', () => {
    expect(effectiveScopes(set('conversation:read admin'), member)).toEqual(set('conversation:read'));
    expect(effectiveScopes(set('conversation:read admin'), admin)).toEqual(set('conversation:read admin'));
  });

  it('reads unknown names in a token as granting nothing', () => {
    expect(scopesOfToken('conversation:read superuser')).toEqual(set('conversation:read'));
    expect(scopesOfToken('')).toEqual(new Set());
  });
});
