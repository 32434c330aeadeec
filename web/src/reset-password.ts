import { call } from './api.ts';
import { wireForgotForm } from './forgot.ts';
import { byId, FormProblem, handleForm, text } from './forms.ts';
import { isRefusedLink, showView, takeLinkToken } from './link-token.ts';

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
    try {
      await call('POST', '/password/reset', { token, new_password: newPassword });
    } catch (error) {
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
