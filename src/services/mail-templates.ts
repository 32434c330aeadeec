/** Every mail Gatehouse sends. */
export type MailTemplate =
  | 'verify_email'
  | 'password_reset'
  | 'password_changed'
  | 'email_change_requested'
  | 'email_changed'
  | 'mfa_changed';

/** What a template fills in. A link carries a token: it is sealed in the outbox and never logged. */
export interface MailValues {
  username: string;
  link?: string;
  newEmail?: string;
  /**
   * The sign-in page, in a verification mail to an address never verified: whoever registered it may not be its owner,
   * and the owner takes the account over with "Forgot your password?" there rather than by opening the link.
   */
  signInUrl?: string;
  /** What changed about the account's second factors, in words (mfa_changed). */
  what?: string;
}

/** A mail ready for a transport: what the recipient reads. */
export interface RenderedMail {
  subject: string;
  text: string;
  html: string;
}

/** A paragraph of a mail: plain words, values (escaped in HTML), and at most one link, alone on its line. */
type Part = string | { value: string } | { link: string };
type Paragraph = readonly Part[];

interface TemplateText {
  // Never a value in the subject: it shows in lists, notifications and logs of every mail system on the way.
  subject: string;
  paragraphs: readonly Paragraph[];
}

const required = (values: MailValues, name: 'link' | 'newEmail' | 'what', template: MailTemplate): string => {
  const value = values[name];
  if (value === undefined || value === '') throw new Error(`the ${template} mail needs a ${name}`);
  return value;
};

const TEMPLATES: Record<MailTemplate, (values: MailValues) => TemplateText> = {
  verify_email: (values) => ({
    subject: 'Confirm your email address',
    paragraphs: [
      ['Hello ', { value: values.username }, ','],
      ['To confirm that this address belongs to your Gatehouse account, open this link within 24 hours:'],
      [{ link: required(values, 'link', 'verify_email') }],
      ...(values.signInUrl
        ? [
            // Pre-account hijacking: the link ends the sessions of whoever registered the address, but not their
            // knowledge of the password. Only a reset, which this mailbox alone can do, takes the account back.
            [
              'If you did not create this account, do not open the link: someone registered it with your address. Take it over instead with "Forgot your password?" at',
            ],
            [{ link: values.signInUrl }],
            // Whoever registered it may have added a second factor, which a reset then asks for (issue 14's rule).
            [
              'If the reset asks for a second factor you never set up, whoever registered the account added it: ask the administrator of this service to remove it, then reset again.',
            ],
          ]
        : [['If you did not ask for this, ignore this mail: nothing changes unless the link is opened.']]),
    ],
  }),
  password_reset: (values) => ({
    subject: 'Reset your Gatehouse password',
    paragraphs: [
      ['Hello ', { value: values.username }, ','],
      [
        'Someone asked to reset the password of your Gatehouse account. To choose a new one, open this link within 1 hour:',
      ],
      [{ link: required(values, 'link', 'password_reset') }],
      ['If this was not you, ignore this mail: your password stays as it is. The link works once.'],
    ],
  }),
  password_changed: (values) => ({
    subject: 'Your Gatehouse password was changed',
    paragraphs: [
      ['Hello ', { value: values.username }, ','],
      [
        'The password of your Gatehouse account was changed, and every device signed in with the old password was signed out, but for the one that changed it, if any.',
      ],
      [
        'If this was not you, reset your password now with "Forgot your password?" on the sign-in page, and tell your administrator.',
      ],
    ],
  }),
  mfa_changed: (values) => ({
    subject: 'The second factor of your Gatehouse account changed',
    paragraphs: [
      ['Hello ', { value: values.username }, ','],
      [
        'The second factor of your Gatehouse account changed: ',
        { value: required(values, 'what', 'mfa_changed') },
        '.',
      ],
      // A thief with the password may have added their own factor, which a reset then asks for: the operator's
      // reset-mfa is the way back, so the mail says so rather than promise that a reset alone will do.
      [
        'If this was not you, someone has your password: reset it now with "Forgot your password?" on the sign-in page. If the reset asks for a second factor you do not have, ask your administrator to remove the account\'s second factors; they will check who you are first.',
      ],
    ],
  }),
  email_change_requested: (values) => ({
    subject: 'A change of your email address was requested',
    paragraphs: [
      ['Hello ', { value: values.username }, ','],
      [
        'Someone asked to change the email address of your Gatehouse account to ',
        { value: required(values, 'newEmail', 'email_change_requested') },
        '. It changes only once the link mailed to that address is opened.',
      ],
      [
        'If this was not you, reset your password now with "Forgot your password?" on the sign-in page: whoever asked knows it or holds one of your sessions.',
      ],
    ],
  }),
  email_changed: (values) => ({
    subject: 'Your email address was changed',
    paragraphs: [
      ['Hello ', { value: values.username }, ','],
      values.newEmail
        ? ['The email address of your Gatehouse account is now ', { value: values.newEmail }, '.']
        : ['The email address of your Gatehouse account was changed.'],
      [
        'This address gets no further mail for the account. If this was not you, tell your administrator at once.',
      ],
    ],
  }),
};

const HTML_ESCAPES: Record<string, string> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};
const escapeHtml = (value: string) => value.replace(/[&<>"']/g, (character) => HTML_ESCAPES[character] ?? '');

const textOf = (part: Part) => (typeof part === 'string' ? part : 'value' in part ? part.value : part.link);

const htmlOf = (part: Part) =>
  typeof part === 'string'
    ? escapeHtml(part)
    : 'value' in part
      ? escapeHtml(part.value)
      : `<a href="${escapeHtml(part.link)}">${escapeHtml(part.link)}</a>`;

/** Returns the subject and bodies of a template; throws when a value it needs is missing. */
export function renderMailTemplate(template: MailTemplate, values: MailValues): RenderedMail {
  const { subject, paragraphs } = TEMPLATES[template](values);
  const text = `${paragraphs.map((paragraph) => paragraph.map(textOf).join('')).join('\n\n')}\n\n-- \nGatehouse\n`;
  const html = [
    '<!doctype html>',
    `<html><head><meta charset="utf-8"><title>${escapeHtml(subject)}</title></head>`,
    '<body style="font-family: sans-serif; line-height: 1.5">',
    ...paragraphs.map((paragraph) => `<p>${paragraph.map(htmlOf).join('')}</p>`),
    '<p style="color: #666">Gatehouse</p>',
    '</body></html>',
    '',
  ].join('\n');
  return { subject, text, html };
}
