import type { QueuedMail } from '../db/email-outbox.ts';
import type { NewOneTimeToken } from '../db/one-time-tokens.ts';
import type { Credentials, NewUser, UsersRepository } from '../db/users.ts';
import {
  canonicalEmail,
  findEmailAddressProblem,
  MAX_EMAIL_LENGTH,
  MAX_LOCAL_PART_OCTETS,
  storedEmail,
} from '../domain/email.ts';
import { hasLongCombiningRun } from '../domain/text.ts';
import { LEVELS, type Level, type User } from '../domain/user.ts';
import { AppError, type FieldProblem } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import type { PasswordPolicy, PasswordProblem } from '../security/password-policy.ts';
import {
  findStoredHashProblem,
  type HashOptions,
  normalisePassword,
  type PasswordHasher,
} from '../security/passwords.ts';
import {
  findUsernameProblem,
  foldCase,
  type UsernameProblem,
  usernameSkeleton,
} from '../security/usernames.ts';
import type { RequestContext } from './request-context.ts';
import type { Refusal } from './throttle.ts';

export interface Registration {
  username: string;
  email: string;
  password: string;
  age: number;
  level: Level;
}

/** A token ready to store, the mails that carry it, and nothing stored yet. */
export interface IssuedToken {
  token: NewOneTimeToken;
  mails: QueuedMail[];
}

/** What an email change needs besides the profile update: the link to the new address and the old address's notice. */
export interface EmailChangeMailer {
  /** Counts a change the user asks for, to a free or a taken address; throws temporarily_unavailable past R10 or R12. */
  admit(user: User, context: RequestContext): Promise<void>;
  /** Returns the token and mails of an admitted change to `newEmail`; throws temporarily_unavailable past R9. */
  prepare(user: User, newEmail: string, context: RequestContext): Promise<IssuedToken>;
  /** The notice a password change mails to the account's address (ASVS 6.3.7), queued with the change. */
  passwordChangedNotice(user: User): QueuedMail;
  /** Tells the sender that the change's mails are in the outbox, once its transaction committed. */
  queued(): void;
}

export interface AccountsService {
  /**
   * Creates the user and their conversation; throws validation_failed, username_taken, email_taken, or overloaded
   * when the hash is shed.
   */
  registerUser(registration: Registration, context: RequestContext, hashing?: HashOptions): Promise<User>;
  /**
   * Returns the problems of a registration's username and password, for a body whose other fields failed their
   * schema: every invalid field is listed in one answer, as pydantic does. Fields that are not strings are skipped.
   */
  findRegistrationProblems(fields: { username?: unknown; password?: unknown }): FieldProblem[];
  /**
   * Returns the user whose credentials these are, or why not, in the same time either way; throws overloaded when the
   * verification is shed (nothing was checked).
   */
  verifyCredentials(username: string, password: string, hashing?: HashOptions): Promise<CredentialCheck>;
  /** Returns the user with this id, or undefined when there is none (any more). */
  findUser(id: number): Promise<User | undefined>;
  /**
   * Changes age or level, and asks for an email change (kept as the pending address, mailed a verification link, the
   * old address told), only while the session asking is live and, when a current password is given, while it is
   * still the user's (a new address needs it); throws validation_failed, email_taken, invalid_password,
   * invalid_token (the session ended, or the user is gone) or temporarily_unavailable.
   */
  updateProfile(userId: number, changes: ProfileUpdate, context: RequestContext): Promise<User>;
  /**
   * Replaces the password after checking the current one, and ends every session but `keepSessionId`; throws
   * invalid_password, validation_failed, temporarily_unavailable or invalid_token (the user is gone).
   */
  changePassword(userId: number, change: PasswordChange, context: RequestContext): Promise<void>;
  /**
   * Deletes the user with their conversation and sessions after checking the password, while `sessionId` (the session
   * asking) may act for it; throws invalid_password, temporarily_unavailable or invalid_token (the user is gone, deleted
   * by another of its sessions, say, or disabled, or that session ended).
   */
  deleteAccount(userId: number, password: string, sessionId: string, context: RequestContext): Promise<void>;
  /** Makes failed logins as slow as a bcrypt verification when imported bcrypt hashes exist; run once at start. */
  equaliseFailureTiming(): Promise<void>;
  /**
   * Checks the user's password as a recent authentication, counted like a login; returns the user and the hash it
   * matched; throws invalid_password, temporarily_unavailable or invalid_token (the user is gone).
   */
  confirmPassword(userId: number, password: string, context: RequestContext): Promise<VerifiedLogin>;
}

export interface VerifiedLogin {
  outcome: 'verified';
  user: User;
  /** The hash the password matched: a session opens only while it is still the user's hash. */
  verifiedHash: string;
}

/** A credential check; the failures are told apart for the audit log only, never in the answer. */
export type CredentialCheck =
  | VerifiedLogin
  | { outcome: 'unknown_user' }
  | { outcome: 'wrong_password'; userId: number };

export interface PasswordCheckThrottle {
  /** Reserves the check's place before the hash; the rule and the wait when it is refused. */
  reserve(username: string, context: RequestContext): Promise<Refusal | undefined>;
  /** The password matched: the failures counted against the account from this caller are forgotten. */
  succeeded(username: string, context: RequestContext): Promise<void>;
}

export interface ProfileUpdate {
  /** The session asking: a password change that ended it must not be overtaken by this change. */
  sessionId: string;
  email?: string;
  /** Checked when given (and then the change applies only while it is still the password). */
  currentPassword?: string;
  age?: number;
  level?: Level;
}

export interface PasswordChange {
  currentPassword: string;
  newPassword: string;
  keepSessionId: string;
}

export interface AccountsDependencies {
  users: UsersRepository;
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  clock: Clock;
  maxPasswordLength: number;
  onRehashFailed?: (error: unknown) => void;
  /** A password check met a stored hash that verification refuses (findStoredHashProblem): nobody can log in to it. */
  onUnverifiableHash?: (userId: number, problem: string) => void;
  /** Runs after a password change commits: login throttling forgets the account's failures. */
  onPasswordChanged?: (username: string) => Promise<void>;
  /** Throttling of the account endpoints' password checks, counted like logins of the account from the caller. */
  passwordChecks?: PasswordCheckThrottle;
  /** The link and the notice an email change mails. */
  emailChanges: EmailChangeMailer;
  /**
   * Counts a sign-up or an email change refused because a username (by its skeleton) or an email (canonical) it names
   * has an account; throws temporarily_unavailable past R15's cap for that identifier. Absent with RATE_LIMITS=off.
   */
  admitIdentifierConflict?: (
    identifier: 'username' | 'email',
    key: string,
    context: RequestContext,
  ) => Promise<void>;
}

// Kept word for word from the seed, whose clients may compare it: the first message of every new conversation.
export const WELCOME_MESSAGE = 'This is a secure conversation';

const USERNAME = /^[\p{L}\p{Nd}._-]{3,32}$/u;

export { MAX_PASSWORD_LENGTH } from '../security/password-policy.ts';

/** The oldest age an account may give. */
export const MAX_AGE = 150;
/**
 * Judges a new password (registration, change, reset) by the policy, with the account's username and email, and the
 * address's parts, as the guesses an attacker would try first; the problem, or undefined when it is acceptable.
 */
export function checkNewPassword(
  policy: PasswordPolicy,
  account: { username: string; email: string },
  /** As typed: the policy counts its length so, and judges its NFKC form. */
  password: string,
): Promise<PasswordProblem | undefined> {
  return policy.check(password, [account.username, account.email, ...account.email.split('@')]);
}

/** The fields of a new account (registration's, or an imported user's) that its rules judge. */
export interface AccountFields {
  username: string;
  email: string;
  age: number;
  level: string;
}

/** A new account's fields as stored: every form of the name and of the email. */
export type CheckedAccountFields = Omit<NewUser, 'passwordHash'>;

/**
 * Checks a new account's fields: the username's shape and scripts, the email (shape, length, local part), the age and
 * the level; returns them in their stored forms, or every problem as registration's 422 lists it. The HTTP schema
 * checks the email's shape, the age and the level of a registration first, with these same limits.
 */
export function checkAccountFields(
  fields: AccountFields,
): { account: CheckedAccountFields } | { problems: FieldProblem[] } {
  const problems: FieldProblem[] = [];
  const username = normaliseUsername(fields.username);
  const usernameProblem = findUsernameFieldProblem(fields.username);
  if (usernameProblem) problems.push(usernameProblem);
  const email = storedEmail(fields.email);
  const emailProblem = findEmailProblem(email);
  if (emailProblem) problems.push(emailProblem);
  if (!Number.isInteger(fields.age) || fields.age < 0 || fields.age > MAX_AGE) {
    problems.push({
      loc: ['body', 'age'],
      msg: `Age must be a whole number from 0 to ${MAX_AGE}`,
      type: 'age_out_of_range',
    });
  }
  const level = LEVELS.find((known) => known === fields.level);
  if (level === undefined) {
    problems.push({ loc: ['body', 'level'], msg: `Level must be one of ${LEVELS.join(', ')}`, type: 'enum' });
  }
  if (!username || level === undefined || problems.length > 0) return { problems };
  return {
    account: {
      username: username.display,
      usernameCanonical: username.canonical,
      usernameSkeleton: usernameSkeleton(username.display),
      email,
      emailCanonical: canonicalEmail(email),
      age: fields.age,
      level,
    },
  };
}

function findUsernameFieldProblem(raw: string): FieldProblem | undefined {
  const username = normaliseUsername(raw);
  if (!username) {
    return {
      loc: ['body', 'username'],
      msg: "Username must be 3 to 32 letters, digits, '.', '_' or '-'",
      type: 'string_pattern_mismatch',
    };
  }
  const problem = findUsernameProblem(username.display);
  return problem ? describeUsernameProblem(problem) : undefined;
}

function findEmailProblem(email: string): FieldProblem | undefined {
  const loc = ['body', 'email'];
  switch (findEmailAddressProblem(email)) {
    case undefined:
      return undefined;
    case 'too_long':
      return {
        loc,
        msg: `String should have at most ${MAX_EMAIL_LENGTH} characters`,
        type: 'string_too_long',
      };
    case 'local_part_too_long':
      return {
        loc,
        msg: `value is not a valid email address: the part before @ is longer than ${MAX_LOCAL_PART_OCTETS} bytes`,
        type: 'value_error',
      };
    case 'invalid':
      return { loc, msg: 'value is not a valid email address', type: 'value_error' };
  }
}

/** Returns the display form (trimmed, NFKC) and the canonical form (case-folded) of a username. */
export function normaliseUsername(raw: string): { display: string; canonical: string } | undefined {
  const trimmed = raw.trim();
  // No username holds such a run, and normalising one takes time in its square (domain/text.ts).
  if (hasLongCombiningRun(trimmed)) return undefined;
  const display = trimmed.normalize('NFKC');
  if (!USERNAME.test(display)) return undefined;
  return { display, canonical: foldCase(display).normalize('NFKC') };
}

/**
 * Returns what login throttling counts a submitted username as: its canonical form, or, for a string that cannot be
 * a username (a password typed into the field), the string case-folded, so that it is counted all the same.
 */
export function loginIdentifier(raw: string): string {
  const username = normaliseUsername(raw);
  if (username) return username.canonical;
  const trimmed = raw.trim();
  return foldCase(hasLongCombiningRun(trimmed) ? trimmed : trimmed.normalize('NFKC'));
}

/** Builds the account rules: registration, credential checks, profile, password and deletion. */
export function createAccountsService(deps: AccountsDependencies): AccountsService {
  const { users, hasher, policy, clock } = deps;

  return {
    findRegistrationProblems(fields) {
      const problems: FieldProblem[] = [];
      if (typeof fields.username === 'string') {
        const problem = findUsernameFieldProblem(fields.username);
        if (problem) problems.push(problem);
      }
      if (typeof fields.password === 'string') {
        const problem = policy.checkShape(fields.password);
        if (problem) problems.push(describePasswordProblem(problem));
      }
      return problems;
    },

    async registerUser(registration, context, hashing) {
      const checked = checkAccountFields(registration);
      const problems = 'problems' in checked ? checked.problems : [];
      const password = registration.password;
      const shapeProblem = policy.checkShape(password);
      if (shapeProblem) problems.push(describePasswordProblem(shapeProblem));
      // zxcvbn, the dear check, runs only for a registration that is otherwise acceptable.
      if (!('account' in checked) || problems.length > 0) {
        throw new AppError('validation_failed', 'Invalid registration', { details: problems });
      }
      const { account } = checked;
      // With the hash queue full this registration would be shed at its hash: before the strength estimate and the
      // breach corpus are asked, not after.
      hasher.refuseWhenFull();
      const guessable = await checkNewPassword(
        policy,
        { username: registration.username, email: account.email },
        password,
      );
      if (guessable) {
        throw new AppError('validation_failed', 'Invalid registration', {
          details: [describePasswordProblem(guessable)],
        });
      }

      const passwordHash = await hasher.hash(password, hashing);
      try {
        return await users.insertUserWithConversation(
          { ...account, passwordHash },
          WELCOME_MESSAGE,
          clock.now(),
        );
      } catch (error) {
        // A 409 tells that the name or the address has an account (ASVS 6.3.8): besides R6 per client address, the
        // conflicts one identifier meets are capped from any address (R15). The username is counted by its skeleton,
        // which is what makes a lookalike name taken too.
        const code = error instanceof AppError ? error.code : undefined;
        if (code === 'username_taken' || code === 'email_taken') {
          await deps.admitIdentifierConflict?.(
            code === 'email_taken' ? 'email' : 'username',
            code === 'email_taken' ? account.emailCanonical : account.usernameSkeleton,
            context,
          );
        }
        throw error;
      }
    },

    async verifyCredentials(rawUsername, password, hashing) {
      const username = normaliseUsername(rawUsername);
      const credentials =
        username && password.length <= deps.maxPasswordLength * 2
          ? await users.findCredentialsByUsername(username.canonical)
          : undefined;
      if (!credentials) {
        await hasher.verifyDummy(password.slice(0, deps.maxPasswordLength * 2), hashing);
        return { outcome: 'unknown_user' };
      }
      const wrongPassword = { outcome: 'wrong_password', userId: credentials.user.id } as const;
      if (!(await verifyPassword(credentials, password, hashing))) return wrongPassword;
      let verifiedHash = credentials.passwordHash;
      if (hasher.needsRehash(credentials.passwordHash, password)) {
        try {
          const upgraded = await hasher.hash(password);
          // Only over the hash just verified: a password changed meanwhile must not be undone.
          if (await users.replacePasswordHash(credentials.user.id, verifiedHash, upgraded, clock.now())) {
            verifiedHash = upgraded;
          } else {
            const current = await currentHashOfSamePassword(credentials.user.id, password, verifiedHash);
            if (current === undefined) return wrongPassword;
            verifiedHash = current;
          }
        } catch (error) {
          // The login itself succeeded; the upgrade is retried at the next one.
          deps.onRehashFailed?.(error);
        }
      }
      return { outcome: 'verified', user: credentials.user, verifiedHash };
    },

    findUser: (id) => users.findUserById(id),

    async equaliseFailureTiming() {
      // One scan of the table on a database whose hashes are all current (the usual case), a second only if not.
      if (!(await users.hasPasswordHashesUnlike(hasher.currentHashPrefix))) return;
      hasher.activateFailureFloor((await users.hasBcryptPasswordHashes()) ? 'bcrypt' : 'argon2');
    },

    async updateProfile(userId, changes, context) {
      const email = changes.email === undefined ? undefined : storedEmail(changes.email);
      const emailProblem = email === undefined ? undefined : findEmailProblem(email);
      if (emailProblem) throw new AppError('validation_failed', 'Invalid email', { details: [emailProblem] });
      // A password given is checked (age and level need none; a new address does, below).
      const credentials =
        changes.currentPassword === undefined
          ? undefined
          : await checkPassword(userId, changes.currentPassword, context);
      const expectedHash = credentials?.passwordHash;
      const previous =
        email === undefined ? undefined : (credentials?.user ?? (await users.findUserById(userId)));
      if (email !== undefined && !previous) throw userGone();
      // Clients that send the whole profile each time resend the same address: only a new one is a change to prove.
      const newEmail =
        email !== undefined && previous && canonicalEmail(email) !== canonicalEmail(previous.email)
          ? email
          : undefined;
      // A stolen access token alone must not move the account to another mailbox, from which a reset would take it.
      if (newEmail !== undefined && changes.currentPassword === undefined) {
        throw new AppError('validation_failed', 'Invalid profile', {
          details: [
            {
              loc: ['body', 'current_password'],
              msg: 'current_password is required to change the email to a new address',
              type: 'missing',
            },
          ],
        });
      }
      let issued: IssuedToken | undefined;
      if (newEmail !== undefined && previous) {
        // A 409 says the address has an account (ASVS 6.3.8): asking for a taken address costs the places a change
        // costs per client address and per user, and a place of the address's own conflicts (R15). R9 counts mails
        // to an address, and a taken one is mailed nothing.
        await deps.emailChanges.admit(previous, context);
        const canonical = canonicalEmail(newEmail);
        if (await users.findUserByEmail(canonical)) {
          await deps.admitIdentifierConflict?.('email', canonical, context);
          throw new AppError('email_taken', 'Email already registered');
        }
        issued = await deps.emailChanges.prepare(previous, newEmail, context);
      }
      const update = (expectedHash: string | undefined) =>
        users.updateUserProfile(
          userId,
          {
            // The same address with its ASCII letters in another case or its domain in another spelling: no new mailbox
            // to prove.
            ...(email !== undefined && newEmail === undefined
              ? { email: { display: email, canonical: canonicalEmail(email) } }
              : {}),
            ...(newEmail !== undefined ? { pendingEmail: newEmail } : {}),
            // The current address again while another waits: the user changed their mind, and that link must die.
            ...(email !== undefined && newEmail === undefined && previous?.pendingEmail != null
              ? { pendingEmail: null }
              : {}),
            ...(changes.age !== undefined ? { age: changes.age } : {}),
            ...(changes.level !== undefined ? { level: changes.level } : {}),
          },
          clock.now(),
          { liveSessionId: changes.sessionId, ...(expectedHash !== undefined ? { expectedHash } : {}) },
          issued,
        );
      let user = await update(expectedHash);
      if (!user && expectedHash !== undefined && changes.currentPassword !== undefined) {
        const current = await currentHashOfSamePassword(userId, changes.currentPassword, expectedHash);
        if (current !== undefined) user = await update(current);
      }
      // Something committed since the request was authenticated, and the change must not land after it.
      if (!user) throw await refusedWrite(userId, changes.sessionId, expectedHash !== undefined);
      if (newEmail !== undefined) {
        deps.emailChanges.queued();
        context.audit('email_change_requested', { userId });
      } else if (email !== undefined && previous) {
        // The same mailbox spelled otherwise changes at once, and the current address again drops a pending one: both
        // are changes of the account the activity shows (found from outside: neither was recorded).
        if (user.email !== previous.email) context.audit('email_changed', { userId, reason: 'respelled' });
        if (previous.pendingEmail != null) context.audit('email_change_cancelled', { userId });
      }
      return user;
    },

    async changePassword(userId, change, context) {
      const credentials = await checkPassword(userId, change.currentPassword, context);
      const { newPassword } = change;
      const problems: FieldProblem[] = [];
      if (normalisePassword(newPassword) === normalisePassword(change.currentPassword)) {
        problems.push({
          loc: ['body', 'new_password'],
          msg: 'The new password must differ from the current one',
          type: 'password_unchanged',
        });
      } else {
        const problem = await checkNewPassword(policy, credentials.user, newPassword);
        if (problem) problems.push({ ...describePasswordProblem(problem), loc: ['body', 'new_password'] });
      }
      if (problems.length > 0)
        throw new AppError('validation_failed', 'Invalid password', { details: problems });
      const newHash = await hasher.hash(newPassword);
      const replaced = await overCurrentHash(
        userId,
        change.currentPassword,
        credentials.passwordHash,
        (expectedHash) =>
          users.replacePasswordHashEndingOtherSessions(
            userId,
            expectedHash,
            newHash,
            change.keepSessionId,
            clock.now(),
            (changed) => [deps.emailChanges.passwordChangedNotice(changed)],
          ),
      );
      if (!replaced) throw await refusedWrite(userId, change.keepSessionId, true);
      deps.emailChanges.queued();
      await deps.onPasswordChanged?.(credentials.user.username);
    },

    async confirmPassword(userId, password, context) {
      const credentials = await checkPassword(userId, password, context);
      return { outcome: 'verified', user: credentials.user, verifiedHash: credentials.passwordHash };
    },

    async deleteAccount(userId, password, sessionId, context) {
      const credentials = await checkPassword(userId, password, context);
      // Only while the hash just verified is still the user's: a password changed meanwhile voids this proof.
      const deleted = await overCurrentHash(userId, password, credentials.passwordHash, (expectedHash) =>
        users.deleteUser(userId, expectedHash, sessionId),
      );
      if (!deleted) throw await refusedWrite(userId, sessionId, true);
    },
  };

  // The README's rule for a token whose user is gone: 401, whichever request noticed it.
  function userGone() {
    return new AppError('invalid_token', 'Could not validate credentials');
  }

  /**
   * Why a write guarded by the session and the verified hash did not land. The session ended, or its account was
   * disabled or deleted, since the request was authenticated: 401, as for any request after that (a password change
   * that won a race ended the loser's session too). Otherwise the password given here is no longer the user's.
   */
  async function refusedWrite(userId: number, sessionId: string, provedPassword: boolean) {
    if (!provedPassword || !(await users.sessionMayAct(userId, sessionId))) return userGone();
    return new AppError('invalid_password', 'Incorrect password');
  }

  // A login may have upgraded the stored hash of the same password meanwhile (a bcrypt hash imported from the seed,
  // older argon2id parameters): no change of password, which is what a compare-and-swap on the hash guards against.
  // Returns the current hash when the password matches it too; undefined when the hash is unchanged (the write
  // failed for another reason) or the password is no longer the user's.
  async function currentHashOfSamePassword(userId: number, password: string, staleHash: string) {
    const current = await users.findCredentialsById(userId);
    if (!current || current.passwordHash === staleHash) return undefined;
    return (await verifyPassword(current, password)) ? current.passwordHash : undefined;
  }

  /** Runs a write guarded by the verified hash, and once more over the current hash when it is the same password's. */
  async function overCurrentHash(
    userId: number,
    password: string,
    verifiedHash: string,
    write: (expectedHash: string) => Promise<boolean>,
  ): Promise<boolean> {
    if (await write(verifiedHash)) return true;
    const current = await currentHashOfSamePassword(userId, password, verifiedHash);
    return current !== undefined && (await write(current));
  }

  async function verifyPassword(credentials: Credentials, password: string, hashing?: HashOptions) {
    if (await hasher.verify(credentials.passwordHash, password, hashing)) return true;
    const problem = findStoredHashProblem(credentials.passwordHash);
    if (problem) deps.onUnverifiableHash?.(credentials.user.id, problem);
    return false;
  }

  // A stolen access token must not become a password oracle: these checks count like logins of the account.
  async function checkPassword(userId: number, password: string, context: RequestContext) {
    const credentials = await users.findCredentialsById(userId);
    if (!credentials) throw userGone();
    const { username } = credentials.user;
    const refusal = await deps.passwordChecks?.reserve(username, context);
    if (refusal !== undefined) {
      const { rule, retryAfterSeconds } = refusal;
      context.audit('password_check_throttled', { userId, rule, retryAfterSeconds });
      throw new AppError('temporarily_unavailable', 'Too many attempts; retry later.', { retryAfterSeconds });
    }
    if (!(await verifyPassword(credentials, password))) {
      context.audit('password_check_failed', { userId });
      throw new AppError('invalid_password', 'Incorrect password');
    }
    await deps.passwordChecks?.succeeded(username, context);
    return credentials;
  }
}

function describeUsernameProblem(problem: UsernameProblem): FieldProblem {
  const loc = ['body', 'username'];
  switch (problem) {
    case 'mixed_scripts':
      return {
        loc,
        msg: 'Username must not mix scripts, such as Latin and Cyrillic',
        type: 'username_mixed_scripts',
      };
    case 'mixed_digit_systems':
      return { loc, msg: 'Username must use one kind of digits', type: 'username_mixed_digit_systems' };
    case 'no_letter_or_digit':
      return {
        loc,
        msg: 'Username must contain a letter or a digit',
        type: 'username_without_letter_or_digit',
      };
    case 'bidi_order':
      return {
        loc,
        msg: 'Username in a right-to-left script must begin with a letter of it and end with a letter or a digit',
        type: 'username_bidi_order',
      };
    case 'invisible_characters':
      return {
        loc,
        msg: 'Username must not hold characters drawn as nothing, such as Hangul fillers',
        type: 'username_invisible_characters',
      };
  }
}

/** Returns a password problem as the field problem registration's 422 lists. */
export function describePasswordProblem(problem: PasswordProblem): FieldProblem {
  const loc = ['body', 'password'];
  switch (problem.type) {
    case 'too_short':
      return {
        loc,
        msg: `Password must have at least ${problem.minLength} characters`,
        type: 'string_too_short',
      };
    case 'too_long':
      return {
        loc,
        msg: `Password must have at most ${problem.maxLength} characters`,
        type: 'string_too_long',
      };
    case 'combining_marks':
      return {
        loc,
        msg: `Password must not hold more than ${problem.maxRun} combining marks in a row`,
        type: 'password_combining_marks',
      };
    case 'control_character':
      return { loc, msg: 'Password must not contain control characters', type: 'password_control_character' };
    case 'lone_surrogate':
      return {
        loc,
        msg: 'Password must be Unicode text: it holds half of a surrogate pair (\\ud800-\\udfff) alone',
        type: 'password_lone_surrogate',
      };
    case 'too_common':
      return { loc, msg: `Password is too easy to guess: ${problem.reason}`, type: 'password_too_common' };
    case 'breached':
      return {
        loc,
        msg: 'Password appears in a known data breach (Have I Been Pwned): choose one nobody has published',
        type: 'password_breached',
      };
  }
}
