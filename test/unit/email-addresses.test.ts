import { describe, expect, it } from 'vitest';
import { canonicalEmail, isEmailAddress, mailboxForDelivery } from '../../src/services/accounts.ts';

describe('email addresses', () => {
  it('gives one canonical form to every spelling of an internationalised address', () => {
    const forms = ['josé@bücher.de', 'JOSÉ@BÜCHER.DE', 'jose\u0301@xn--bcher-kva.de', ' josé@Bücher.de '];
    expect(new Set(forms.map(canonicalEmail))).toEqual(new Set(['josé@xn--bcher-kva.de']));
  });

  it('leaves an ASCII address as it was: trimmed and lower-cased', () => {
    expect(canonicalEmail(' Alice@Example.COM ')).toBe('alice@example.com');
  });

  it.each([
    ['user@bücher.de', true],
    ['用户@例子.广告', true],
    ['josé@example.com', true],
    ['a@straße.de', true],
    ['a@bücher。de', false],
    ['a@b', false],
    ['a@bücher..de', false],
    ['a@bücher-.de', false],
    ['a@-bücher.de', false],
    ['a b@example.com', false],
    ['a\u200b@example.com', false],
    ['a@exa\u200bmple.com', false],
    ['€@example.com', false],
    [`${'é'.repeat(32)}@example.com`, true],
    [`${'é'.repeat(33)}@example.com`, false],
  ])('%j is an address: %s', (email, expected) => {
    expect(isEmailAddress(email)).toBe(expected);
  });

  it('hands the mail server the A-label of the domain, which every SMTP server reads', () => {
    expect(mailboxForDelivery('user@bücher.de')).toBe('user@xn--bcher-kva.de');
    expect(mailboxForDelivery('alice@example.com')).toBe('alice@example.com');
  });
});
