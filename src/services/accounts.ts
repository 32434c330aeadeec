import type { Level } from '../db/schema.ts';
import type { User, UsersRepository } from '../db/users.ts';
import { AppError, type FieldProblem } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import type { PasswordPolicy, PasswordProblem } from '../security/password-policy.ts';
import type { PasswordHasher } from '../security/passwords.ts';

export interface Registration {
  username: string;
  email: string;
  password: string;
  age: number;
  level: Level;
}

export interface AccountsService {
  /** Creates the user and their conversation; throws validation_failed, username_taken or email_taken. */
  registerUser(registration: Registration): Promise<User>;
  /** Returns the user whose credentials these are, or undefined, in the same time either way. */
  verifyCredentials(username: string, password: string): Promise<User | undefined>;
  /** Returns the user with this id, or undefined when there is none (any more). */
  findUser(id: number): Promise<User | undefined>;
}

export interface AccountsDependencies {
  users: UsersRepository;
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  clock: Clock;
  maxPasswordLength: number;
  welcomeMessage: string;
  onRehashFailed?: (error: unknown) => void;
}

const USERNAME = /^[\p{L}\p{Nd}._-]{3,32}$/u;

/** Returns the display form (trimmed, NFKC) and the canonical form (case-folded) of a username. */
export function normaliseUsername(raw: string): { display: string; canonical: string } | undefined {
  const display = raw.trim().normalize('NFKC');
  if (!USERNAME.test(display)) return undefined;
  // Upper then lower case folds ß/SS and ﬁ/fi like Unicode full case folding does.
  return { display, canonical: display.toUpperCase().toLowerCase().normalize('NFKC') };
}

export function createAccountsService(deps: AccountsDependencies): AccountsService {
  const { users, hasher, policy, clock } = deps;

  return {
    async registerUser(registration) {
      const problems: FieldProblem[] = [];
      const username = normaliseUsername(registration.username);
      if (!username) {
        problems.push({
          loc: ['body', 'username'],
          msg: "Username must be 3 to 32 letters, digits, '.', '_' or '-'",
          type: 'string_pattern_mismatch',
        });
      }
      const email = registration.email.trim();
      const passwordProblem = policy.check(registration.password, [
        registration.username,
        email,
        ...email.split('@'),
      ]);
      if (passwordProblem) problems.push(describePasswordProblem(passwordProblem));
      if (!username || problems.length > 0) {
        throw new AppError('validation_failed', 'Invalid registration', { details: problems });
      }

      const passwordHash = await hasher.hash(registration.password);
      return users.insertUserWithConversation(
        {
          username: username.display,
          usernameCanonical: username.canonical,
          email,
          emailCanonical: email.toLowerCase(),
          passwordHash,
          age: registration.age,
          level: registration.level,
        },
        deps.welcomeMessage,
        clock.now(),
      );
    },

    async verifyCredentials(rawUsername, password) {
      const username = normaliseUsername(rawUsername);
      const credentials =
        username && password.length <= deps.maxPasswordLength * 2
          ? await users.findCredentialsByUsername(username.canonical)
          : undefined;
      if (!credentials) {
        await hasher.verifyDummy(password.slice(0, deps.maxPasswordLength * 2));
        return undefined;
      }
      if (!(await hasher.verify(credentials.passwordHash, password))) return undefined;
      if (hasher.needsRehash(credentials.passwordHash)) {
        try {
          await users.updatePasswordHash(credentials.user.id, await hasher.hash(password), clock.now());
        } catch (error) {
          // The login itself succeeded; the upgrade is retried at the next one.
          deps.onRehashFailed?.(error);
        }
      }
      return credentials.user;
    },

    findUser: (id) => users.findUserById(id),
  };
}

function describePasswordProblem(problem: PasswordProblem): FieldProblem {
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
    case 'control_character':
      return { loc, msg: 'Password must not contain control characters', type: 'password_control_character' };
    case 'too_common':
      return { loc, msg: `Password is too easy to guess: ${problem.reason}`, type: 'password_too_common' };
  }
}
