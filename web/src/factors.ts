// The account's second factors: the authenticator app (TOTP) with its recovery codes, and passkeys. The TOTP secret
// and the recovery codes are on screen once, from the answer that carries them, and dropped from the page when the
// person moves on; nothing here stores them.
import { generate } from 'lean-qr';
import { toSvg } from 'lean-qr/extras/svg';
import { ApiError, type Ceremony, call, type MfaStatus, type Passkey, type TotpEnrolment } from './api.ts';
import {
  announce,
  byId,
  el,
  FormProblem,
  handleForm,
  refuseOverLength,
  secondFactorOf,
  text,
} from './forms.ts';
import { createPasskey, type PublicKeyCredentialCreationOptionsJSON } from './webauthn.ts';

let afterChange: () => Promise<void> = async () => {};
let setupOnScreen = false;
// An active authenticator app: changing factors then takes one of its codes (or a recovery code) in the forms.
let totpActive = false;

const CODE_LABEL = 'Authenticator code or recovery code';
const CODE_NEEDED = 'Enter a code from your authenticator app, or a recovery code.';
const PASSWORD_NEEDED = 'Enter your password.';
const SIGN_IN_AGAIN =
  'This change needs a recent sign-in with your second factor: sign out, sign in again with your passkey, and try again.';

/** Shows the code fields of the forms that change factors while the account has an authenticator app. */
function showCodeFields(): void {
  for (const field of document.querySelectorAll<HTMLElement>('[data-factor-code]'))
    field.hidden = !totpActive;
}

/** The code a form carries, as the API takes it; nothing when its field is empty. */
function codeOf(fields: FormData): { otp: string } | { recovery_code: string } | Record<string, never> {
  const code = text(fields, 'otp');
  return code.trim() ? secondFactorOf(code) : {};
}

/**
 * Runs a change of factors; when the server asks for a second factor, shows the code field (an authenticator app)
 * or says to sign in again with a passkey (the only factor), for the person to resubmit.
 */
async function withSecondFactor<T>(form: HTMLFormElement, send: () => Promise<T>): Promise<T> {
  try {
    return await send();
  } catch (error) {
    if (!(error instanceof ApiError) || error.code !== 'insufficient_user_authentication') throw error;
    await loadMfa().catch(() => {});
    const field = form.querySelector<HTMLElement>('[data-factor-code]');
    if (!totpActive || !field) throw new FormProblem(SIGN_IN_AGAIN);
    field.hidden = false;
    throw new FormProblem(CODE_NEEDED, new Map([['otp', CODE_NEEDED]]));
  }
}

const when = (iso: string) => {
  const at = new Date(iso);
  return el('time', { text: at.toLocaleString(), attributes: { datetime: at.toISOString() } });
};

function requireCode(value: string, field: string, message: string): void {
  if (!value.trim()) throw new FormProblem(message, new Map([[field, message]]));
}

/** Every change of factors takes the password; asked here, so that the server's 401 can only mean a second factor. */
function requirePassword(fields: FormData): string {
  const password = text(fields, 'password');
  if (!password) throw new FormProblem(PASSWORD_NEEDED, new Map([['password', PASSWORD_NEEDED]]));
  return password;
}

/** The authenticator app's state and the forms that fit it. */
async function loadMfa(): Promise<void> {
  let status: MfaStatus;
  try {
    status = await call<MfaStatus>('GET', '/users/me/mfa');
  } catch (error) {
    // A server without second factors (before issue 14): the section has nothing to offer.
    if (error instanceof ApiError && error.status === 404) {
      byId('two-factor').hidden = true;
      return;
    }
    throw error;
  }
  byId('two-factor').hidden = false;
  const active = status.totp?.status === 'active';
  totpActive = active;
  showCodeFields();
  const passkeys = status.passkeys > 0 ? ' Your passkeys also work as a second factor.' : '';
  byId('mfa-state').textContent = active
    ? `On: signing in asks for a code from your authenticator app. Recovery codes left: ${status.recovery_codes_left}.${passkeys}`
    : status.totp?.status === 'pending' && !setupOnScreen
      ? `Off: a set-up was started but not finished; start again to get a new key.${passkeys}`
      : `Off: no authenticator app.${passkeys}`;
  byId('totp-manage').hidden = !active;
  byId('totp-start-form').hidden = active || setupOnScreen;
}

function showRecoveryCodes(codes: string[]): void {
  byId('recovery-code-list').replaceChildren(
    ...codes.map((code) => el('li', {}, el('code', { text: code }))),
  );
  byId('recovery-codes').hidden = false;
  byId('recovery-codes-title').focus();
}

function hideSetup(): void {
  setupOnScreen = false;
  byId('totp-setup').hidden = true;
  byId('totp-secret').textContent = '';
  byId('totp-qr').replaceChildren();
  byId<HTMLFormElement>('totp-confirm-form').reset();
}

/** The key in groups of four, as authenticator apps show and accept it. */
const grouped = (secret: string) => secret.replace(/(.{4})(?=.)/g, '$1 ');

function showSetup(enrolment: TotpEnrolment): void {
  setupOnScreen = true;
  // Drawn as SVG elements through the DOM: the page's policy allows no inline style, and no data: image is needed.
  const svg = toSvg(generate(enrolment.otpauth_uri), document, { on: '#000000', off: '#ffffff', pad: 4 });
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', 'QR code of the key for your authenticator app');
  svg.removeAttribute('width');
  svg.removeAttribute('height');
  byId('totp-qr').replaceChildren(svg);
  byId('totp-secret').textContent = grouped(enrolment.secret);
  byId('totp-start-form').hidden = true;
  byId('mfa-state').textContent = 'Being set up: it is on once the app’s first code is entered below.';
  byId('totp-setup').hidden = false;
  byId('totp-setup-title').focus();
}

function passkeyItem(passkey: Passkey, index: number): HTMLLIElement {
  const item = el('li', { className: 'passkey' });
  const name = el('p', { className: 'passkey-name', text: passkey.name });
  if (passkey.backed_up) name.append(' ', el('span', { className: 'badge', text: 'Synced' }));
  if (passkey.suspect)
    name.append(' ', el('span', { className: 'badge warning', text: 'Blocked: possibly copied' }));
  const meta = el(
    'p',
    { className: 'meta' },
    'Added ',
    when(passkey.created_at),
    ' · ',
    ...(passkey.last_used_at ? ['last used ', when(passkey.last_used_at)] : ['never used']),
  );
  const rename = el('button', {
    className: 'secondary',
    text: 'Rename',
    attributes: { type: 'button', 'aria-label': `Rename passkey ${passkey.name}`, 'aria-expanded': 'false' },
  });
  const remove = el('button', {
    className: 'secondary',
    text: 'Delete',
    attributes: { type: 'button', 'aria-label': `Delete passkey ${passkey.name}`, 'aria-expanded': 'false' },
  });
  const path = `/users/me/passkeys/${encodeURIComponent(String(passkey.id))}`;
  const prefix = `passkey-${index}`;

  const renameForm = inlineForm(`${prefix}-rename`, [
    {
      name: 'name',
      label: `New name for ${passkey.name}`,
      value: passkey.name,
      attributes: { maxlength: '128' },
    },
  ]);
  renameForm.append(
    el(
      'div',
      { className: 'actions' },
      el('button', { text: 'Save name', attributes: { type: 'submit' } }),
      cancelButton(renameForm, rename),
    ),
  );
  handleForm(renameForm, async (fields) => {
    const newName = text(fields, 'name').trim();
    if (!newName) throw new FormProblem('Give the passkey a name.', new Map([['name', 'Enter a name.']]));
    refuseOverLength(newName, 64, 'name', "A passkey's name");
    await call('PATCH', path, { name: newName });
    await loadPasskeys();
    announce(`Passkey renamed to ${newName}.`);
    byId('passkeys-title').focus();
  });

  const deleteForm = inlineForm(`${prefix}-delete`, [
    {
      name: 'password',
      label: 'Password',
      attributes: { type: 'password', autocomplete: 'current-password' },
    },
    {
      name: 'otp',
      label: CODE_LABEL,
      attributes: { autocomplete: 'one-time-code', autocapitalize: 'none', spellcheck: 'false' },
      factorCode: true,
    },
  ]);
  deleteForm.append(
    el(
      'div',
      { className: 'actions' },
      el('button', { className: 'destructive', text: 'Delete passkey', attributes: { type: 'submit' } }),
      cancelButton(deleteForm, remove),
    ),
  );
  handleForm(deleteForm, async (fields) => {
    await withSecondFactor(deleteForm, () =>
      call('DELETE', path, { password: requirePassword(fields), ...codeOf(fields) }),
    );
    await Promise.all([loadPasskeys(), loadMfa()]);
    announce(`Passkey ${passkey.name} deleted.`);
    byId('passkeys-title').focus();
    await afterChange();
  });

  const toggle = (
    button: HTMLButtonElement,
    form: HTMLFormElement,
    other: HTMLFormElement,
    otherButton: Element,
  ) => {
    button.addEventListener('click', () => {
      const opening = form.hidden;
      form.hidden = !opening;
      button.setAttribute('aria-expanded', String(opening));
      other.hidden = true;
      otherButton.setAttribute('aria-expanded', 'false');
      if (opening) form.querySelector('input')?.focus();
    });
  };
  toggle(rename, renameForm, deleteForm, remove);
  toggle(remove, deleteForm, renameForm, rename);
  rename.setAttribute('aria-controls', renameForm.id);
  remove.setAttribute('aria-controls', deleteForm.id);

  item.append(name, meta, el('div', { className: 'actions' }, rename, remove), renameForm, deleteForm);
  return item;
}

interface InlineField {
  name: string;
  label: string;
  value?: string;
  attributes?: Record<string, string>;
  /** The second factor's code: shown while the account has an authenticator app, or when the server asks for it. */
  factorCode?: boolean;
}

/** A small form in a list item, in the shape handleForm expects: an error summary, labelled fields, their errors. */
function inlineForm(id: string, fields: InlineField[]): HTMLFormElement {
  const form = el('form', { className: 'inline-form', attributes: { id, novalidate: '' } });
  form.hidden = true;
  form.append(
    el('div', {
      className: 'form-error',
      attributes: { id: `${id}-error`, role: 'alert', tabindex: '-1' },
    }),
  );
  (form.firstElementChild as HTMLElement).hidden = true;
  for (const field of fields) {
    const inputId = `${id}-${field.name}`;
    const input = el('input', { attributes: { id: inputId, name: field.name, ...field.attributes } });
    if (field.value !== undefined) input.value = field.value;
    const error = el('p', { className: 'field-error', attributes: { id: `${inputId}-error` } });
    error.hidden = true;
    const wrapper = el(
      'div',
      { className: 'field' },
      el('label', { text: field.label, attributes: { for: inputId } }),
      input,
      error,
    );
    if (field.factorCode) {
      wrapper.setAttribute('data-factor-code', '');
      wrapper.hidden = !totpActive;
    }
    form.append(wrapper);
  }
  return form;
}

function cancelButton(form: HTMLFormElement, opener: HTMLButtonElement): HTMLButtonElement {
  const cancel = el('button', { className: 'secondary', text: 'Cancel', attributes: { type: 'button' } });
  cancel.addEventListener('click', () => {
    form.hidden = true;
    opener.setAttribute('aria-expanded', 'false');
    opener.focus();
  });
  return cancel;
}

async function loadPasskeys(): Promise<void> {
  let passkeys: Passkey[];
  try {
    ({ passkeys } = await call<{ passkeys: Passkey[] }>('GET', '/users/me/passkeys'));
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) {
      byId('passkeys').hidden = true;
      return;
    }
    throw error;
  }
  byId('passkeys').hidden = false;
  byId('passkey-list').replaceChildren(...passkeys.map(passkeyItem));
  byId('passkeys-empty').hidden = passkeys.length > 0;
}

/** Both sections, fresh from the server. */
export function loadFactors(): Promise<unknown> {
  return Promise.all([loadMfa(), loadPasskeys()]);
}

/** Drops everything a signed-out page must not keep: a key on screen, recovery codes, the lists. */
export function clearFactors(): void {
  hideSetup();
  byId('recovery-code-list').replaceChildren();
  byId('recovery-codes').hidden = true;
  byId('passkey-list').replaceChildren();
  byId('mfa-state').textContent = '';
}

/** Wires the forms; `onChange` runs after every change of a factor (the activity list shows it). */
export function wireFactors(onChange: () => Promise<void>): void {
  afterChange = onChange;

  const startForm = byId<HTMLFormElement>('totp-start-form');
  handleForm(startForm, async (fields) => {
    // An account whose only factor is a passkey has no code to type: a recent passkey sign-in is what it needs.
    const enrolment = await withSecondFactor(startForm, () =>
      call<TotpEnrolment>('POST', '/users/me/mfa/totp', { password: requirePassword(fields) }),
    );
    startForm.reset();
    showSetup(enrolment);
  });

  byId('totp-setup-cancel').addEventListener('click', () => {
    hideSetup();
    byId('totp-start-form').hidden = false;
    byId('two-factor-title').focus();
    loadMfa().catch(() => {});
  });

  handleForm(byId<HTMLFormElement>('totp-confirm-form'), async (fields) => {
    const code = text(fields, 'otp').replace(/\s/g, '');
    if (!/^\d{6}$/.test(code)) {
      throw new FormProblem(
        'Enter the 6 digits the app shows.',
        new Map([['otp', 'Enter the 6 digits the app shows.']]),
      );
    }
    const { recovery_codes } = await call<{ recovery_codes: string[] }>(
      'POST',
      '/users/me/mfa/totp/confirm',
      {
        code,
      },
    );
    hideSetup();
    showRecoveryCodes(recovery_codes);
    announce('The authenticator app is on. Save your recovery codes.');
    await loadMfa();
    await afterChange();
  });

  byId('recovery-codes-saved').addEventListener('click', () => {
    byId('recovery-code-list').replaceChildren();
    byId('recovery-codes').hidden = true;
    byId('two-factor-title').focus();
    announce('Recovery codes put away.');
  });

  const recoveryForm = byId<HTMLFormElement>('recovery-form');
  handleForm(recoveryForm, async (fields) => {
    const otp = text(fields, 'otp').replace(/\s/g, '');
    requireCode(otp, 'otp', 'Enter the code from your authenticator app.');
    const { recovery_codes } = await call<{ recovery_codes: string[] }>(
      'POST',
      '/users/me/mfa/recovery-codes',
      {
        password: requirePassword(fields),
        otp,
      },
    );
    recoveryForm.reset();
    showRecoveryCodes(recovery_codes);
    announce('New recovery codes made; the old ones no longer work.');
    await loadMfa();
    await afterChange();
  });

  const removeForm = byId<HTMLFormElement>('totp-remove-form');
  handleForm(removeForm, async (fields) => {
    const code = text(fields, 'otp');
    requireCode(code, 'otp', 'Enter a code from your authenticator app, or a recovery code.');
    await call('DELETE', '/users/me/mfa/totp', {
      password: requirePassword(fields),
      ...secondFactorOf(code),
    });
    removeForm.reset();
    byId('recovery-codes').hidden = true;
    announce('The authenticator app is off, and its recovery codes no longer work.');
    await loadMfa();
    byId('two-factor-title').focus();
    await afterChange();
  });

  const addForm = byId<HTMLFormElement>('passkey-add-form');
  handleForm(addForm, async (fields) => {
    const name = text(fields, 'name').trim();
    refuseOverLength(name, 64, 'name', "A passkey's name");
    const ceremony = await withSecondFactor(addForm, () =>
      call<Ceremony<PublicKeyCredentialCreationOptionsJSON>>(
        'POST',
        '/users/me/passkeys/registration/options',
        {
          password: requirePassword(fields),
          ...codeOf(fields),
          // Checked before the device makes a credential that the verification would refuse to store.
          ...(name ? { name } : {}),
        },
      ),
    );
    const response = await createPasskey(ceremony.options);
    const added = await call<Passkey>('POST', '/users/me/passkeys/registration/verify', {
      challenge_id: ceremony.challenge_id,
      response,
      ...(name ? { name } : {}),
    });
    addForm.reset();
    await Promise.all([loadPasskeys(), loadMfa()]);
    announce(`Passkey ${added.name} added.`);
    await afterChange();
  });
}
