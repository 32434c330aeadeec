import {
  type AuthenticationResponseJSON,
  browserSupportsWebAuthn,
  type PublicKeyCredentialCreationOptionsJSON,
  type PublicKeyCredentialRequestOptionsJSON,
  type RegistrationResponseJSON,
  startAuthentication,
  startRegistration,
  WebAuthnError,
} from '@simplewebauthn/browser';
import { FormProblem } from './forms.ts';

export type { PublicKeyCredentialCreationOptionsJSON, PublicKeyCredentialRequestOptionsJSON };

export const supportsPasskeys = (): boolean => browserSupportsWebAuthn();

/**
 * The browser's refusal in words a person can act on. The browser says as little as it can on purpose (a cancelled
 * prompt, a timeout and an unknown passkey are all NotAllowedError, so that a page cannot probe which passkeys exist),
 * and so does this.
 */
function problemOf(error: unknown, registering: boolean): FormProblem {
  const code = error instanceof WebAuthnError ? error.code : undefined;
  if (code === 'ERROR_AUTHENTICATOR_PREVIOUSLY_REGISTERED') {
    return new FormProblem('This device already holds a passkey of your account.');
  }
  if (code === 'ERROR_INVALID_DOMAIN' || code === 'ERROR_INVALID_RP_ID') {
    return new FormProblem('Passkeys do not work at this address: open the page at its configured address.');
  }
  const name = error instanceof Error ? error.name : '';
  if (name === 'NotAllowedError' || name === 'AbortError' || code === 'ERROR_CEREMONY_ABORTED') {
    return new FormProblem(
      registering
        ? 'No passkey was created: the prompt was cancelled, timed out or could not verify you.'
        : 'No passkey was used: the prompt was cancelled, timed out, could not verify you, or this device holds no passkey for this account.',
    );
  }
  return new FormProblem(
    error instanceof Error && error.message
      ? `The passkey prompt failed: ${error.message}`
      : 'The passkey prompt failed.',
  );
}

function ensureSupport(): void {
  if (!supportsPasskeys()) throw new FormProblem('This browser does not support passkeys.');
}

/** Asks the browser for an assertion; the answer travels to /token as JSON text. */
export async function assertPasskey(options: PublicKeyCredentialRequestOptionsJSON): Promise<string> {
  ensureSupport();
  let response: AuthenticationResponseJSON;
  try {
    response = await startAuthentication({ optionsJSON: options });
  } catch (error) {
    throw problemOf(error, false);
  }
  return JSON.stringify(response);
}

/** Asks the browser to create a passkey. */
export async function createPasskey(
  options: PublicKeyCredentialCreationOptionsJSON,
): Promise<RegistrationResponseJSON> {
  ensureSupport();
  try {
    return await startRegistration({ optionsJSON: options });
  } catch (error) {
    throw problemOf(error, true);
  }
}
