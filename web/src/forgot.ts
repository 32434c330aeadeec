import { call } from './api.ts';
import { announce, byId, FormProblem, handleForm, text } from './forms.ts';

// The same words whatever the address: the page must not tell who has an account (the API answers 202 to all).
const SENT = 'If an account uses this address, a mail is on its way. Its link works for an hour.';

/** Wires the page's #forgot-form: an email address in, a reset link mailed to it if it is an account's. */
export function wireForgotForm(): void {
  const form = byId<HTMLFormElement>('forgot-form');
  const sent = byId('forgot-sent');
  handleForm(form, async (fields) => {
    sent.hidden = true;
    const email = text(fields, 'email').trim();
    if (!email) {
      throw new FormProblem(
        'Enter the email address of your account.',
        new Map([['email', 'Enter your email address.']]),
      );
    }
    await call('POST', '/password/forgot', { email });
    form.reset();
    sent.textContent = SENT;
    sent.hidden = false;
    announce(SENT);
  });
}
