import {
  type ActivityEvent,
  ApiError,
  call,
  callPublic,
  forget,
  type Message,
  resume,
  SecondFactorRequired,
  type Session,
  signIn,
  type User,
  whenAccountChanged,
  whenSessionLost,
} from './api.ts';
import { clearFactors, loadFactors, wireFactors } from './factors.ts';
import { wireForgotForm } from './forgot.ts';
import { announce, byId, clearErrors, el, FormProblem, handleForm, refuseOverLength, text } from './forms.ts';
import { leaveSecondStep, startSecondStep, wireSecondStep } from './second-step.ts';

const ACTIVITY_PAGE = 10;
const MESSAGES_PAGE = 20;

const EVENT_LABELS: Record<string, string> = {
  user_registered: 'Account created',
  login_succeeded: 'Signed in',
  login_failed: 'Failed sign-in',
  login_throttled: 'Sign-in attempts throttled',
  session_started: 'Session started',
  refreshed: 'Session renewed',
  refresh_token_retry: 'Session renewed (retry)',
  refresh_token_reuse_detected: 'A reused token ended a session',
  session_revoked: 'Session ended',
  session_ended: 'Session ended',
  logout: 'Signed out',
  logout_all: 'Signed out everywhere',
  password_changed: 'Password changed',
  password_check_failed: 'Wrong current password',
  password_check_throttled: 'Password checks throttled',
  email_changed: 'Email changed',
  email_change_requested: 'Email change requested',
  email_change_cancelled: 'Email change cancelled',
  email_verification_requested: 'Verification mail requested',
  email_verified: 'Email verified',
  password_reset_requested: 'Password reset requested',
  password_reset: 'Password reset',
  one_time_token_refused: 'Mailed link refused (used, expired or replaced)',
  mfa_enrolment_started: 'Authenticator app set-up started',
  mfa_enabled: 'Authenticator app turned on',
  mfa_disabled: 'Authenticator app turned off',
  recovery_codes_regenerated: 'New recovery codes',
  second_factor_used: 'Second factor used',
  second_factor_failed: 'Second factor refused',
  passkey_registered: 'Passkey added',
  passkey_renamed: 'Passkey renamed',
  passkey_deleted: 'Passkey deleted',
  passkey_login: 'Signed in with a passkey',
  passkey_refused: 'Passkey refused',
  mfa_reset: 'Second factors removed by an operator',
  password_only_sessions_ended: 'Sessions without a second factor ended',
};

// The token endpoint's description of a refusal for an unverified address (REQUIRE_VERIFIED_EMAIL).
const EMAIL_NOT_VERIFIED = 'Email not verified';

let user: User | undefined;
let activityNext: string | null = null;
let messagesNext: string | null = null;

const when = (iso: string) => {
  const at = new Date(iso);
  return el('time', { text: at.toLocaleString(), attributes: { datetime: at.toISOString() } });
};

function showSignedOut(message?: string): void {
  byId('loading').hidden = true;
  byId('signed-in').hidden = true;
  byId('who').hidden = true;
  byId('signed-out').hidden = false;
  forgetShownAccount();
  if (message) announce(message);
  document.title = 'Sign in · Gatehouse';
}

/**
 * Takes off the page everything of the account it showed: its lists, what its forms hold, and an authenticator app's
 * key and recovery codes being shown. Found from outside: after another tab signed in another account, the first
 * account's key and codes stayed on screen under the new one's name.
 */
function forgetShownAccount(): void {
  user = undefined;
  for (const list of ['session-list', 'activity-list', 'message-list']) byId(list).replaceChildren();
  for (const form of byId('signed-in').querySelectorAll('form')) form.reset();
  // Every form starts clean for whoever uses the page next, the signed-out ones too.
  for (const form of document.querySelectorAll('form')) clearErrors(form);
  clearFactors();
  leaveSecondStep();
}

/** Shows the account; `focus` moves the focus to its heading as soon as it is on screen (after a sign-in). */
async function showSignedIn(focus = false): Promise<void> {
  user = await call<User>('GET', '/users/me');
  // Each account starts clean: a refusal written into a form after the last one's session ended is not this one's.
  for (const form of document.querySelectorAll('form')) clearErrors(form);
  byId('who-name').textContent = user.username;
  showEmail(user);
  byId('loading').hidden = true;
  byId('signed-out').hidden = true;
  byId('who').hidden = false;
  byId('signed-in').hidden = false;
  document.title = `${user.username} · Gatehouse`;
  if (focus) byId('account-title').focus();
  await Promise.all([loadMessages(true), loadSessions(), loadActivity(true), loadFactors()]);
}

/** After any sign-in (password, second step, passkey): the account, focused and announced. */
async function signedIn(): Promise<void> {
  await showSignedIn(true);
  announce(`Signed in as ${user?.username}.`);
}

/** The address, whether it is verified, and the new one that waits for its link, if any. */
function showEmail(shown: User): void {
  byId('current-email').textContent = shown.email;
  const state = byId('email-state');
  // A server from before issue 13 says nothing of verification; neither does the page then.
  state.hidden = shown.email_verified === undefined;
  state.textContent = shown.email_verified ? 'Verified' : 'Not verified';
  byId('email-unverified').hidden = shown.email_verified !== false;
  const pending = shown.pending_email ?? null;
  byId('pending-email').textContent = pending ?? '';
  byId('email-pending').hidden = pending === null;
}

/** The conversation: its messages, newest first, a page at a time. */
async function loadMessages(fromStart: boolean): Promise<void> {
  const query = new URLSearchParams({ limit: String(MESSAGES_PAGE) });
  if (!fromStart && messagesNext) query.set('before', messagesNext);
  const page = await call<{ messages: Message[]; next: string | null }>(
    'GET',
    `/conversation/messages?${query}`,
  );
  const list = byId('message-list');
  if (fromStart) list.replaceChildren();
  const shownBefore = list.childElementCount;
  for (const message of page.messages) {
    const author = message.author === 'system' ? 'Gatehouse · ' : 'You · ';
    list.append(
      el(
        'li',
        { className: 'message' },
        el('p', { className: 'message-text', text: message.text }),
        el('p', { className: 'meta' }, author, when(message.created_at)),
      ),
    );
  }
  messagesNext = page.next;
  byId('messages-more').hidden = messagesNext === null;
  byId('messages-empty').hidden = list.childElementCount > 0;
  if (!fromStart) focusFirstLoaded(list, shownBefore, 'older messages');
}

/**
 * After "Older …", the focus moves to the first item loaded, and their number is said: the button it was on hides
 * once the list is whole (found from outside: the focus fell to the page's body, and the next Tab to "Sign out").
 */
function focusFirstLoaded(list: HTMLElement, shownBefore: number, what: string): void {
  const first = list.children[shownBefore];
  if (!(first instanceof HTMLElement)) return;
  first.tabIndex = -1;
  first.focus();
  announce(`${list.childElementCount - shownBefore} ${what} shown.`);
}

async function loadSessions(): Promise<void> {
  const { sessions } = await call<{ sessions: Session[] }>('GET', '/users/me/sessions');
  const list = byId('session-list');
  list.replaceChildren(
    ...sessions.map((session) => {
      const device = describeDevice(session.user_agent);
      const item = el(
        'li',
        { className: 'session' },
        el('p', {
          className: 'session-device',
          text: device,
          attributes: session.user_agent ? { title: session.user_agent } : {},
        }),
        el(
          'p',
          { className: 'meta' },
          `${session.ip_address ?? 'unknown address'} · last used `,
          when(session.last_used_at),
        ),
      );
      if (session.current) {
        item.append(el('p', { className: 'badge', text: 'This browser' }));
      } else {
        const end = el('button', {
          className: 'secondary',
          text: 'End session',
          attributes: {
            type: 'button',
            'aria-label': `End session: ${device}, last used ${session.last_used_at}`,
          },
        });
        end.addEventListener('click', () => {
          end.disabled = true;
          call('DELETE', `/users/me/sessions/${encodeURIComponent(session.id)}`)
            .then(async () => {
              await loadSessions();
              announce('Session ended.');
              byId('sessions-title').focus();
            })
            .catch(async (error: unknown) => {
              // Not live any more (signed out, or ended elsewhere since the list was drawn): the list was stale.
              if (!(error instanceof ApiError && error.status === 404)) return reportFailure(error);
              await loadSessions().catch(() => {});
              announce('That session had already ended.');
              byId('sessions-title').focus();
            });
        });
        item.append(end);
      }
      return item;
    }),
  );
}

const BROWSERS: [RegExp, string][] = [
  [/Edg\//, 'Edge'],
  [/OPR\//, 'Opera'],
  [/Firefox\//, 'Firefox'],
  [/HeadlessChrome\//, 'Headless Chrome'],
  [/Chrom(e|ium)\//, 'Chrome'],
  [/Safari\//, 'Safari'],
];
const SYSTEMS: [RegExp, string][] = [
  [/Android/, 'Android'],
  [/iPhone|iPad/, 'iOS'],
  [/Windows/, 'Windows'],
  [/Mac OS X|Macintosh/, 'macOS'],
  [/CrOS/, 'ChromeOS'],
  [/Linux/, 'Linux'],
];

/** "Firefox on Linux" for a browser's user agent; anything else (curl, an SDK) as it introduced itself. */
function describeDevice(userAgent: string | null): string {
  if (!userAgent) return 'Unknown device';
  const browser = BROWSERS.find(([pattern]) => pattern.test(userAgent))?.[1];
  const system = SYSTEMS.find(([pattern]) => pattern.test(userAgent))?.[1];
  if (browser && system) return `${browser} on ${system}`;
  return userAgent.length > 60 ? `${userAgent.slice(0, 57)}…` : userAgent;
}

function describeEvent(event: ActivityEvent): string {
  const label = EVENT_LABELS[event.event] ?? event.event.replaceAll('_', ' ');
  const reason = event.detail.reason;
  return typeof reason === 'string' ? `${label} (${reason.replaceAll('_', ' ')})` : label;
}

async function loadActivity(fromStart: boolean): Promise<void> {
  const query = new URLSearchParams({ limit: String(ACTIVITY_PAGE) });
  if (!fromStart && activityNext) query.set('before', activityNext);
  const page = await call<{ events: ActivityEvent[]; next: string | null }>(
    'GET',
    `/users/me/activity?${query}`,
  );
  const list = byId('activity-list');
  if (fromStart) list.replaceChildren();
  const shownBefore = list.childElementCount;
  for (const event of page.events) {
    list.append(
      el(
        'li',
        { className: 'activity' },
        el('p', { className: 'activity-event', text: describeEvent(event) }),
        el(
          'p',
          { className: 'meta' },
          when(event.at),
          event.ip ? ` · ${event.ip}` : '',
          event.user_agent ? ` · ${describeDevice(event.user_agent)}` : '',
        ),
      ),
    );
  }
  activityNext = page.next;
  byId('activity-more').hidden = activityNext === null;
  if (!fromStart) focusFirstLoaded(list, shownBefore, 'older events');
}

/** A failure outside a form (a button in a list): said in the status region. */
function reportFailure(error: unknown): void {
  announce(error instanceof Error ? error.message : 'The request failed.');
}

async function endSession(path: '/logout' | '/logout/all', message: string): Promise<void> {
  await call('POST', path);
  forget();
  showSignedOut(message);
  byId('signin-username').focus();
}

function wireSignedOut(): void {
  const forgotToggle = byId<HTMLButtonElement>('forgot-toggle');
  forgotToggle.addEventListener('click', () => {
    const opening = forgotToggle.getAttribute('aria-expanded') !== 'true';
    forgotToggle.setAttribute('aria-expanded', String(opening));
    byId('forgot').hidden = !opening;
    if (opening) byId('forgot-email').focus();
  });
  wireForgotForm();

  handleForm(byId<HTMLFormElement>('signin-form'), async (fields) => {
    const username = text(fields, 'username').trim();
    const password = text(fields, 'password');
    const missing = new Map<string, string>();
    if (!username) missing.set('username', 'Enter your username.');
    if (!password) missing.set('password', 'Enter your password.');
    if (missing.size > 0) throw new FormProblem('Enter your username and password.', missing);
    try {
      await signIn(username, password);
    } catch (error) {
      if (!(error instanceof SecondFactorRequired)) throw error;
      startSecondStep(error);
      return;
    }
    byId<HTMLFormElement>('signin-form').reset();
    await signedIn();
  });
  wireSecondStep(signedIn);

  handleForm(byId<HTMLFormElement>('signup-form'), async (fields) => {
    const username = text(fields, 'username').trim();
    const password = text(fields, 'password');
    const age = text(fields, 'age').trim();
    await call('POST', '/register/', {
      username,
      email: text(fields, 'email').trim(),
      password,
      age: /^\d+$/.test(age) ? Number(age) : age,
      level: text(fields, 'level'),
    });
    try {
      await signIn(username, password);
    } catch (error) {
      // REQUIRE_VERIFIED_EMAIL: the account exists, and its way in is the link a resend mails (none is mailed at
      // sign-up). Said as what it is, not as a refusal of the sign-up.
      if (!(error instanceof ApiError && error.message === EMAIL_NOT_VERIFIED)) throw error;
      const email = text(fields, 'email').trim();
      byId<HTMLFormElement>('signup-form').reset();
      // The account exists whatever the resend answers: a refusal (its per-address cap) is said, not the sign-up's.
      const sent = await callPublic('POST', '/email/verification/resend', { email }).then(
        () => `a link is on its way to ${email}`,
        (refused: unknown) =>
          `the link could not be sent just now (${refused instanceof Error ? refused.message : 'the request failed'}); later, "Forgot your password?" sends a link that confirms it too`,
      );
      announce(`Account created. Confirm your email address before you sign in: ${sent}.`);
      byId('signin-username').focus();
      return;
    }
    byId<HTMLFormElement>('signup-form').reset();
    await showSignedIn(true);
    announce(`Account created. Signed in as ${user?.username}.`);
  });
}

function wireSignedIn(): void {
  // Adding a second factor ends the sessions that signed in with the password alone: the list shows it.
  wireFactors(async () => {
    await Promise.all([loadActivity(true), loadSessions()]);
  });
  byId('signout').addEventListener('click', () => {
    endSession('/logout', 'Signed out.').catch(reportFailure);
  });
  byId('signout-all').addEventListener('click', () => {
    endSession('/logout/all', 'Signed out on every device.').catch(reportFailure);
  });
  byId('activity-more').addEventListener('click', () => {
    loadActivity(false).catch(reportFailure);
  });
  byId('messages-more').addEventListener('click', () => {
    loadMessages(false).catch(reportFailure);
  });
  byId('activity-reload').addEventListener('click', () => {
    loadActivity(true)
      .then(() => announce('Activity reloaded.'))
      .catch(reportFailure);
  });

  const sendVerification = byId<HTMLButtonElement>('send-verification');
  sendVerification.addEventListener('click', () => {
    sendVerification.disabled = true;
    call('POST', '/users/me/email/verification')
      .then(() =>
        announce(`A verification mail is on its way to ${user?.email}. Its link works for 24 hours.`),
      )
      .catch(reportFailure)
      .finally(() => {
        sendVerification.disabled = false;
      });
  });

  const messageForm = byId<HTMLFormElement>('message-form');
  handleForm(messageForm, async (fields) => {
    const message = text(fields, 'text').trim();
    if (!message) {
      throw new FormProblem('Write a message first.', new Map([['text', 'Write a message first.']]));
    }
    refuseOverLength(message, 4000, 'text', 'A message');
    await call('POST', '/conversation/messages', { text: message });
    messageForm.reset();
    await loadMessages(true);
    announce('Message added.');
  });

  const emailForm = byId<HTMLFormElement>('email-form');
  handleForm(emailForm, async (fields) => {
    const before = user;
    user = await call<User>('PATCH', '/users/me', {
      email: text(fields, 'email').trim(),
      current_password: text(fields, 'current_password'),
    });
    showEmail(user);
    emailForm.reset();
    // Found from outside: sending the current address again, which cancels a pending change, said "Email changed".
    announce(
      user.pending_email
        ? `A link is on its way to ${user.pending_email}. Your address changes when you open it.`
        : before?.pending_email && before.email === user.email
          ? `The change to ${before.pending_email} is cancelled: your address stays ${user.email}.`
          : before?.email === user.email
            ? `Your address stays ${user.email}.`
            : `Email changed to ${user.email}.`,
    );
    await loadActivity(true);
  });

  const passwordForm = byId<HTMLFormElement>('password-form');
  handleForm(passwordForm, async (fields) => {
    const newPassword = text(fields, 'new_password');
    if (newPassword !== text(fields, 'confirm_password')) {
      throw new FormProblem(
        'The new passwords do not match.',
        new Map([['confirm_password', 'Type the same new password twice.']]),
      );
    }
    await call('POST', '/users/me/password', {
      current_password: text(fields, 'current_password'),
      new_password: newPassword,
    });
    passwordForm.reset();
    announce('Password changed. Your other sessions have ended.');
    await Promise.all([loadSessions(), loadActivity(true)]);
  });

  const deleteForm = byId<HTMLFormElement>('delete-form');
  handleForm(deleteForm, async (fields) => {
    if (fields.get('confirm') !== 'yes') {
      throw new FormProblem(
        'Tick the box to confirm that the account and its data go for good.',
        new Map([['confirm', 'Tick the box to confirm.']]),
      );
    }
    await call('DELETE', '/users/me', { password: text(fields, 'password') });
    deleteForm.reset();
    forget();
    showSignedOut('Your account has been deleted.');
    byId('signup-username').focus();
  });
}

async function start(): Promise<void> {
  wireSignedOut();
  wireSignedIn();
  whenSessionLost(() => {
    showSignedOut('Your session has ended. Sign in again.');
    byId('signin-username').focus();
  });
  whenAccountChanged(() => {
    forgetShownAccount();
    void showSignedIn(true).then(
      () =>
        announce(
          `Another account was signed in from another tab of this browser: this page now shows ${user?.username}, and nothing was sent.`,
        ),
      reportFailure,
    );
  });
  try {
    if (await resume()) {
      await showSignedIn();
      return;
    }
  } catch (error) {
    // A refresh refused for a while (429, 503) or not sent: the session may well be live, and a reload tries again.
    showSignedOut(
      `Your session could not be resumed just now: ${error instanceof Error ? error.message : 'the request failed'}. Reload the page to try again.`,
    );
    return;
  }
  showSignedOut();
}

void start();
