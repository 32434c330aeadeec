import { ApiError, type Ceremony, call, callPublic, type MfaMethod } from './api.ts';
import { wireForgotForm } from './forgot.ts';
import { byId, FormProblem, handleForm, runInForm, secondFactorOf, text } from './forms.ts';
import { isRefusedLink, isSecondFactorRefusal, showView, takeLinkToken } from './link-token.ts';
import { assertPasskey, type PublicKeyCredentialRequestOptionsJSON } from './webauthn.ts';

const VIEWS = ['reset', 'reset-done', 'reset-invalid', 'reset-incomplete'] as const;
type View = (typeof VIEWS)[number];

type Proof =
  | Record<string, never>
  | { otp: string }
  | { recovery_code: string }
  | { challenge_id: string; webauthn_response: string };

function show(view: View, focus: boolean): void {
  showView(VIEWS, view, focus);
  byId('forgot').hidden = view !== 'reset-invalid' && view !== 'reset-incomplete';
}

/** The new password typed twice alike, or the problem with it. */
function newPasswordOf(fields: FormData): string {
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
  return newPassword;
}

// What the server said the account has, at its first second_factor_required; codes until it says otherwise.
let methods: readonly MfaMethod[] = [];

const methodsHaveCodes = () => methods.includes('otp') || methods.includes('recovery_code');

/** Shows what the account can prove itself with: the code field, the passkey button, or both. */
function offerSecondFactors(named: readonly MfaMethod[] | undefined): void {
  if (named && named.length > 0) methods = named;
  else if (methods.length === 0) methods = ['otp', 'recovery_code'];
  const codes = methodsHaveCodes();
  const passkey = methods.includes('webauthn');
  byId('reset-factor-field').hidden = !codes;
  byId('reset-passkey').hidden = !passkey;
  byId('reset-passkey-hint').hidden = !passkey;
  // The only way on is the main button: a passkey-only account has no code to submit.
  byId('reset-submit').hidden = !codes;
  byId('reset-passkey').classList.toggle('secondary', codes);
}

function secondFactorMessage(): string {
  const codes = methodsHaveCodes();
  if (!methods.includes('webauthn')) {
    return 'Your account has two-factor authentication: enter a code from your authenticator app, or a recovery code.';
  }
  return codes
    ? 'Your account has two-factor authentication: use a passkey, or enter a code from your authenticator app or a recovery code.'
    : 'Your account has two-factor authentication: confirm with one of your passkeys.';
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

  /** Posts the reset: the done view, or the link's refusal view, or the second factor asked for in the form. */
  const reset = async (newPassword: string, proof: Proof): Promise<void> => {
    try {
      await call('POST', '/password/reset', { token, new_password: newPassword, ...proof });
    } catch (error) {
      if (isSecondFactorRefusal(error)) {
        const wasAsked = !byId('reset-factor-field').hidden || !byId('reset-passkey').hidden;
        offerSecondFactors(error.methods);
        if (error.code === 'second_factor_required' || !wasAsked) {
          const message = secondFactorMessage();
          throw new FormProblem(message, methodsHaveCodes() ? new Map([['otp', message]]) : new Map());
        }
        if ('challenge_id' in proof) {
          throw new FormProblem(
            'The passkey was not accepted: try again, or use another of your second factors.',
          );
        }
        throw new FormProblem(error.message, new Map([['otp', error.message]]));
      }
      if (!isRefusedLink(error)) throw error;
      form.reset();
      show('reset-invalid', true);
      return;
    }
    form.reset();
    show('reset-done', true);
  };

  handleForm(form, async (fields) => {
    const newPassword = newPasswordOf(fields);
    // Asked for only when the server says the account has an authenticator app: most accounts never see the field.
    const factor = text(fields, 'otp');
    await reset(newPassword, factor.trim() ? secondFactorOf(factor) : {});
  });

  const passkeyButton = byId<HTMLButtonElement>('reset-passkey');
  passkeyButton.addEventListener('click', () => {
    runInForm(form, passkeyButton, async () => {
      const newPassword = newPasswordOf(new FormData(form));
      let ceremony: Ceremony<PublicKeyCredentialRequestOptionsJSON>;
      try {
        ceremony = await callPublic('POST', '/password/reset/webauthn/options', { token });
      } catch (error) {
        if (error instanceof ApiError && error.code === 'no_passkey') {
          // The passkey went (deleted, or blocked) since the page offered it: the reset's answer says what is left.
          methods = methods.filter((method) => method !== 'webauthn');
          await reset(newPassword, {});
          return;
        }
        if (!isRefusedLink(error)) throw error;
        form.reset();
        show('reset-invalid', true);
        return;
      }
      const response = await assertPasskey(ceremony.options);
      await reset(newPassword, { challenge_id: ceremony.challenge_id, webauthn_response: response });
    });
  });
}

start();
