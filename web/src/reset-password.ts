import { call } from './api.ts';
import { wireForgotForm } from './forgot.ts';
import { byId, FormProblem, handleForm, secondFactorOf, text } from './forms.ts';
import { isRefusedLink, isSecondFactorRefusal, showView, takeLinkToken } from './link-token.ts';

const VIEWS = ['reset', 'reset-done', 'reset-invalid', 'reset-incomplete'] as const;
type View = (typeof VIEWS)[number];

function show(view: View, focus: boolean): void {
  showView(VIEWS, view, focus);
  byId('forgot').hidden = view !== 'reset-invalid' && view !== 'reset-incomplete';
}

function start(): void {
  wireForgotForm();
  const token = takeLinkToken();
  if (!token) {
    show('reset-incomplete', false);
    return;
  }
  show('reset', false);
  const form = byId<HTMLFormElement>('reset-form');
  handleForm(form, async (fields) => {
    const newPassword = text(fields, 'new_password');
    if (!newPassword) {
      throw new FormProblem('Choose a new password.', new Map([['new_password', 'Choose a new password.']]));
    }
    if (newPassword !== text(fields, 'confirm_password')) {
      throw new FormProblem(
        'The new passwords do not match.',
        new Map([['confirm_password', 'Type the same new password twice.']]),
      );
    }
    // Asked for only when the server says the account has an authenticator app: most accounts never see the field.
    const factor = text(fields, 'otp');
    try {
      await call('POST', '/password/reset', {
        token,
        new_password: newPassword,
        ...(factor.trim() ? secondFactorOf(factor) : {}),
      });
    } catch (error) {
      if (isSecondFactorRefusal(error)) {
        const wasHidden = byId('reset-factor-field').hidden;
        byId('reset-factor-field').hidden = false;
        const message =
          error.code === 'second_factor_required' || wasHidden
            ? 'Your account has two-factor authentication: enter a code from your authenticator app, or a recovery code.'
            : error.message;
        throw new FormProblem(message, new Map([['otp', message]]));
      }
      if (!isRefusedLink(error)) throw error;
      form.reset();
      show('reset-invalid', true);
      return;
    }
    form.reset();
    show('reset-done', true);
  });
}

start();
