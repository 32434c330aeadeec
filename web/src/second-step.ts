// The sign-in steps past the password: the second factor that /token asks for, and passkeys without a password.
// The MFA token of a pending step lives in this module's memory alone: a reload drops it and the password is asked
// again, which is what its five minutes and five attempts expect anyway.
import {
  ApiError,
  type Ceremony,
  callPublic,
  type MfaMethod,
  type SecondFactor,
  type SecondFactorRequired,
  signInWithPasskey,
  signInWithSecondFactor,
} from './api.ts';
import { announce, byId, FormProblem, handleForm, runInForm, text } from './forms.ts';
import { assertPasskey, type PublicKeyCredentialRequestOptionsJSON } from './webauthn.ts';

type Step = { mfaToken: string; methods: readonly MfaMethod[] };

let step: Step | undefined;
let usingRecoveryCode = false;
let signedIn: () => Promise<void> = async () => {};

const form = () => byId<HTMLFormElement>('mfa-form');

/** Shows either the authenticator code field or the recovery code field. */
function showCodeField(recovery: boolean): void {
  usingRecoveryCode = recovery;
  const methods = step?.methods ?? [];
  const codes = methods.includes('otp') || methods.includes('recovery_code');
  byId('mfa-otp-field').hidden = !codes || recovery;
  byId('mfa-recovery-field').hidden = !codes || !recovery;
  byId('mfa-submit').hidden = !codes;
  const toggle = byId<HTMLButtonElement>('mfa-recovery-toggle');
  toggle.hidden = !methods.includes('recovery_code');
  toggle.textContent = recovery ? 'Use the authenticator app' : 'Use a recovery code';
}

/** Replaces the password form with the second step: the methods the account has, the first one focused. */
export function startSecondStep(challenge: SecondFactorRequired): void {
  step = { mfaToken: challenge.mfaToken, methods: challenge.methods };
  byId<HTMLFormElement>('signin-form').reset();
  byId('signin-form').hidden = true;
  byId('forgot-aside').hidden = true;
  form().reset();
  form().hidden = false;
  const passkey = challenge.methods.includes('webauthn');
  const codes = challenge.methods.includes('otp') || challenge.methods.includes('recovery_code');
  byId('mfa-passkey').hidden = !passkey;
  // The only way on is the main button of the step.
  byId('mfa-passkey').classList.toggle('secondary', codes);
  byId('mfa-intro').textContent = codes
    ? passkey
      ? 'Your password was right. Now enter the code from your authenticator app, or use a passkey.'
      : 'Your password was right. Now enter the code from your authenticator app.'
    : 'Your password was right. Now confirm with one of your passkeys.';
  showCodeField(!challenge.methods.includes('otp') && codes);
  byId(codes ? (usingRecoveryCode ? 'mfa-recovery' : 'mfa-otp') : 'mfa-passkey').focus();
  announce('A second factor is required.');
}

/** Back to the password form; the MFA token is forgotten. */
export function leaveSecondStep(): void {
  step = undefined;
  form().reset();
  form().hidden = true;
  byId('signin-form').hidden = false;
  byId('forgot-aside').hidden = false;
  for (const error of form().querySelectorAll<HTMLElement>('.form-error, .field-error')) {
    error.hidden = true;
    error.textContent = '';
  }
}

/** A refusal of the grant, pinned to the field that was used (the server says no more than "invalid_grant"). */
function refusedAt(field: string, error: unknown): unknown {
  if (error instanceof ApiError && error.status === 400) {
    return new FormProblem(
      error.message,
      new Map([
        [field, 'Check the code and try again; after a few failures, start again with your password.'],
      ]),
    );
  }
  return error;
}

async function grant(factor: SecondFactor, field?: string): Promise<void> {
  if (!step) throw new FormProblem('This step has expired: start again with your password.');
  try {
    await signInWithSecondFactor(step.mfaToken, factor);
  } catch (error) {
    throw field ? refusedAt(field, error) : error;
  }
  leaveSecondStep();
  await signedIn();
}

/** Wires the second step and the passkey button of the password form; `onSignedIn` shows the account. */
export function wireSecondStep(onSignedIn: () => Promise<void>): void {
  signedIn = onSignedIn;

  byId('mfa-recovery-toggle').addEventListener('click', () => {
    showCodeField(!usingRecoveryCode);
    byId(usingRecoveryCode ? 'mfa-recovery' : 'mfa-otp').focus();
  });
  byId('mfa-cancel').addEventListener('click', () => {
    leaveSecondStep();
    byId('signin-username').focus();
  });

  handleForm(form(), async (fields) => {
    if (usingRecoveryCode) {
      const code = text(fields, 'recovery_code').trim();
      if (!code) {
        throw new FormProblem(
          'Enter one of your recovery codes.',
          new Map([['recovery_code', 'Enter a recovery code.']]),
        );
      }
      await grant({ recovery_code: code }, 'recovery_code');
      return;
    }
    const otp = text(fields, 'otp').replace(/\s/g, '');
    if (!/^\d{6}$/.test(otp)) {
      throw new FormProblem(
        'Enter the 6 digits from your authenticator app.',
        new Map([['otp', 'Enter the 6 digits the app shows.']]),
      );
    }
    await grant({ otp }, 'otp');
  });

  const mfaPasskey = byId<HTMLButtonElement>('mfa-passkey');
  mfaPasskey.addEventListener('click', () => {
    runInForm(form(), mfaPasskey, async () => {
      if (!step) throw new FormProblem('This step has expired: start again with your password.');
      const ceremony = await callPublic<Ceremony<PublicKeyCredentialRequestOptionsJSON>>(
        'POST',
        '/mfa/webauthn/options',
        { mfa_token: step.mfaToken },
      );
      const response = await assertPasskey(ceremony.options);
      await grant({ challenge_id: ceremony.challenge_id, webauthn_response: response });
    });
  });

  const signinForm = byId<HTMLFormElement>('signin-form');
  const passkeySignIn = byId<HTMLButtonElement>('passkey-signin');
  passkeySignIn.addEventListener('click', () => {
    runInForm(signinForm, passkeySignIn, async () => {
      const ceremony = await callPublic<Ceremony<PublicKeyCredentialRequestOptionsJSON>>(
        'POST',
        '/passkeys/authentication/options',
        {},
      );
      const response = await assertPasskey(ceremony.options);
      await signInWithPasskey(ceremony.challenge_id, response);
      signinForm.reset();
      await signedIn();
    });
  });
}
