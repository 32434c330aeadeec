import { describe, expect, it } from 'vitest';
import { createSecretBox, generateSecret } from '../../src/security/secret-box.ts';
import {
  createMailComposer,
  createMailRenderer,
  MAIL_TEMPLATES,
  type MailTemplate,
  outboxSealContext,
} from '../../src/services/mail.ts';
import { renderMailTemplate } from '../../src/services/mail-templates.ts';

const LINK =
  'https://id.example.com/account/reset-password#token=SECRETtoken_0123456789abcdefghijklmnopqrstu';

describe('mail templates', () => {
  it('has a subject, a text and an HTML body for every template, and never a link in the subject', () => {
    for (const template of MAIL_TEMPLATES) {
      const mail = renderMailTemplate(template, {
        username: 'alice',
        link: LINK,
        newEmail: 'new@example.com',
        what: 'an authenticator app was added',
      });
      expect(mail.subject.length, template).toBeGreaterThan(5);
      expect(mail.subject).not.toContain('token');
      expect(mail.subject).not.toContain('SECRET');
      expect(mail.text).toContain('alice');
      expect(mail.html).toMatch(/^<!doctype html>/i);
    }
  });

  it('puts the link in both bodies of the mails that carry one', () => {
    for (const template of ['verify_email', 'password_reset'] as const) {
      const mail = renderMailTemplate(template, { username: 'alice', link: LINK });
      expect(mail.text).toContain(LINK);
      expect(mail.html).toContain(`href="${LINK}"`);
    }
  });

  it('says a reset link lasts 1 hour and may be ignored', () => {
    const mail = renderMailTemplate('password_reset', { username: 'alice', link: LINK });
    expect(mail.text).toMatch(/1 hour/);
    expect(mail.text).toMatch(/ignore/i);
  });

  it('tells the old address which address was asked for, and to reset the password if that was not them', () => {
    const mail = renderMailTemplate('email_change_requested', {
      username: 'alice',
      newEmail: 'new@example.com',
    });
    expect(mail.text).toContain('new@example.com');
    expect(mail.text).toMatch(/reset your password/i);
    const changed = renderMailTemplate('email_changed', { username: 'alice', newEmail: 'new@example.com' });
    expect(changed.text).toContain('new@example.com');
  });

  it('escapes every value in the HTML body', () => {
    const mail = renderMailTemplate('email_change_requested', {
      username: '<b>alice</b>',
      newEmail: '"><script>alert(1)</script>@example.com',
    });
    expect(mail.html).not.toContain('<script>');
    expect(mail.html).not.toContain('<b>alice');
    expect(mail.html).toContain('&lt;script&gt;');
    expect(mail.html).toContain('&quot;&gt;');
  });

  it('refuses to render a link mail without its link', () => {
    expect(() => renderMailTemplate('verify_email', { username: 'alice' })).toThrow(/link/);
  });
});

describe('mail renderer', () => {
  const box = createSecretBox([generateSecret()]);
  const composer = createMailComposer(box);
  const renderer = createMailRenderer(box);

  it('opens what the composer sealed and renders it', () => {
    const queued = composer.compose({
      userId: 1,
      to: 'alice@example.com',
      template: 'password_reset',
      values: { username: 'alice', link: LINK },
    });
    expect(queued.sealedPayload).not.toContain('SECRET');
    const mail = renderer.render(queued);
    expect(mail.text).toContain(LINK);
  });

  it("refuses a payload copied onto another recipient's row, an unknown template, and a foreign secret", () => {
    const queued = composer.compose({
      userId: 1,
      to: 'alice@example.com',
      template: 'verify_email',
      values: { username: 'alice', link: LINK },
    });
    expect(() => renderer.render({ ...queued, recipient: 'mallory@example.com' })).toThrow();
    const unknown = {
      ...queued,
      template: 'phishing',
      sealedPayload: box.seal('{"username":"a"}', outboxSealContext('phishing', queued.recipient)),
    };
    expect(() => renderer.render(unknown)).toThrow(/template/);
    expect(() => createMailRenderer(createSecretBox([generateSecret()])).render(queued)).toThrow();
  });

  it('knows the five templates of issue 13 and the second-factor notice of issue 14', () => {
    const names: MailTemplate[] = [...MAIL_TEMPLATES];
    expect(names).toEqual([
      'verify_email',
      'password_reset',
      'password_changed',
      'email_change_requested',
      'email_changed',
      'mfa_changed',
    ]);
  });
});
