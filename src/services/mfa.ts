import { createHash, randomBytes } from 'node:crypto';
import type { MfaRepository } from '../db/mfa.ts';
import type { Credentials, UsersRepository } from '../db/users.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import { generateOneTimeToken, hashOneTimeToken } from '../security/one-time-tokens.ts';
import type { HashOptions, PasswordHasher } from '../security/passwords.ts';
import type { SecretBox } from '../security/secret-box.ts';
import {
  generateRecoveryCode,
  generateTotpSecret,
  hashRecoveryCode,
  matchTotpStep,
  normaliseRecoveryCode,
  recoveryCodeMatches,
  totpUri,
} from '../security/totp.ts';
import type { AccountsService } from './accounts.ts';
import type { MailDelivery } from './mail.ts';
import type { RequestContext } from './request-context.ts';
import type { SessionLogin, SessionsService } from './sessions.ts';
import type { Throttle } from './throttle.ts';

/** A second factor as a request presents it: a TOTP code or a recovery code. */
export interface SecondFactorProof {
  otp?: string | undefined;
  recoveryCode?: string | undefined;
}

/** A WebAuthn assertion answering a second-factor challenge (the passkeys' options for an mfa_token). */
export interface WebauthnProof {
  challengeId: string;
  /** The AuthenticationResponseJSON, as sent: a JSON string or the object. */
  response: unknown;
}

/** The second leg of a login as the MFA grant presents it: exactly one of a code, a recovery code or an assertion. */
export interface LoginSecondFactorProof extends SecondFactorProof {
  webauthn?: WebauthnProof | undefined;
}

export type SecondFactorMethod = 'otp' | 'recovery_code' | 'webauthn';

/**
 * Passkeys as a second factor (services/passkeys.ts implements it): verifies an assertion of one of the user's
 * credentials against a challenge of the purpose: a login's second leg, or a password reset (a challenge handed out for
 * one does not answer the other); undefined for anything refused. `hwk` or `swk` (synced) for amr.
 */
export interface WebauthnSecondFactor {
  verifySecondFactor(
    userId: number,
    challengeId: string,
    response: unknown,
    context: RequestContext,
    purpose: 'second_factor' | 'password_reset',
  ): Promise<{ amr: 'hwk' | 'swk' } | undefined>;
}

/** Which second factors an account has: it has second factors when the list is not empty. */
export interface SecondFactors {
  methodsOf(userId: number): Promise<SecondFactorMethod[]>;
}

/**
 * The account's second factors: an active authenticator app (a pending one does not count) brings its recovery
 * codes; a registered passkey brings webauthn.
 */
export function createSecondFactors(deps: {
  mfa: Pick<MfaService, 'hasActiveFactor'>;
  countPasskeys?: ((userId: number) => Promise<number>) | undefined;
}): SecondFactors {
  return {
    async methodsOf(userId) {
      const [totp, passkeys] = await Promise.all([
        deps.mfa.hasActiveFactor(userId),
        deps.countPasskeys ? deps.countPasskeys(userId) : Promise.resolve(0),
      ]);
      const methods: SecondFactorMethod[] = totp ? ['otp', 'recovery_code'] : [];
      if (passkeys > 0) methods.push('webauthn');
      return methods;
    },
  };
}

/**
 * What a request changing second factors presents: the password always; a code of the account when it has factors,
 * unless the session it comes with logged in with a second factor a moment ago.
 */
export interface FactorChangeCredentials {
  password: string;
  proof: SecondFactorProof;
  /** The caller's session's login; without it only a code in the body stands for the second factor. */
  session?: SessionLogin | undefined;
  /** The caller's session: the change lands only while it may act (the account enabled, the session live). */
  sessionId?: string | undefined;
}

export interface TotpEnrolment {
  factorId: string;
  secret: string;
  otpauthUri: string;
}

export interface MfaStatus {
  totp: { status: 'pending' | 'active'; createdAt: Date } | null;
  recoveryCodesLeft: number;
}

/** A login whose second leg passed: who, the hash its password leg matched, what it asked for, how it proved it. */
export interface SecondFactorLogin {
  user: User;
  verifiedHash: string;
  scope: string;
  /**
   * RFC 8176: `otp` for a TOTP code; a recovery code is a one-time code too, so `otp` as well; `hwk`/`swk` for a
   * passkey; always after `pwd` and before `mfa`.
   */
  amr: string[];
  method: SecondFactorMethod;
}

export interface MfaService extends SecondFactors {
  /**
   * The one rule for changing second factors: the password (else invalid_password); then, when the account has
   * second factors, a code or recovery code in `proof` (spent, counted by R13; else invalid_second_factor) or a session
   * whose login used a second factor within the last 10 minutes; else insufficient_user_authentication. With `proofRequired`
   * only a code in the body counts, factors or not. `commit`, the change itself, runs once authorised: a recovery code
   * spent for it is given back if it throws. Returns the user.
   */
  authoriseFactorChange(
    userId: number,
    credentials: FactorChangeCredentials,
    context: RequestContext,
    options?: { proofRequired?: boolean; commit?: (user: User) => Promise<unknown> },
  ): Promise<User>;
  /**
   * Starts (or restarts) a TOTP enrolment under authoriseFactorChange's rule; throws mfa_already_enrolled, or what
   * that rule throws.
   */
  enrolTotp(
    userId: number,
    credentials: FactorChangeCredentials,
    context: RequestContext,
  ): Promise<TotpEnrolment>;
  /** Activates the pending factor with a current code; returns the 10 recovery codes, shown once. */
  /**
   * Activates the pending factor with a current code; returns the 10 recovery codes, shown once. `sessionId` is the
   * session asking, which stays signed in.
   */
  confirmTotp(userId: number, code: string, context: RequestContext, sessionId?: string): Promise<string[]>;
  /**
   * Called once a second factor was added: the user's sessions that signed in with the password alone end (all but
   * `sessionId`), so that one opened with a stolen password does not outlive the decision to require more.
   */
  secondFactorAdded(userId: number, sessionId: string | undefined, context: RequestContext): Promise<void>;
  status(userId: number): Promise<MfaStatus>;
  /** Removes the factor and its recovery codes after the password and a second factor. */
  removeTotp(userId: number, credentials: FactorChangeCredentials, context: RequestContext): Promise<void>;
  /**
   * Replaces the recovery codes after the password and a TOTP code (insufficient_user_authentication without one, once
   * the password matched); returns the new ones.
   */
  regenerateRecoveryCodes(
    userId: number,
    password: string,
    otp: string | undefined,
    context: RequestContext,
    sessionId?: string,
  ): Promise<string[]>;
  hasActiveFactor(userId: number): Promise<boolean>;
  /**
   * Opens the second leg of a login whose password matched `verifiedHash`; returns the opaque mfa_token, or undefined
   * when the account was disabled meanwhile.
   */
  startChallenge(user: User, verifiedHash: string, scope: string): Promise<string | undefined>;
  /**
   * The user of an mfa_token that could still be redeemed, without spending one of its attempts (the passkey leg's
   * options); throws invalid_grant otherwise.
   */
  userOfChallenge(mfaToken: string): Promise<number>;
  /** Passes the second leg of a login; throws invalid_grant for any failure, told apart from nothing. */
  redeemChallenge(
    mfaToken: string,
    proof: LoginSecondFactorProof,
    context: RequestContext,
  ): Promise<SecondFactorLogin>;
  /**
   * Checks and spends one second factor of the user (a code's step, a recovery code, or a passkey's assertion for a
   * password_reset challenge of this user: the one route outside a login that takes a passkey), counted by R13; returns
   * the method, with `release` to give a recovery code back when what it was spent for did not happen, or undefined for
   * a wrong, replayed or locked-out one. A proof with an assertion is checked as the assertion alone: the caller sees to
   * "exactly one". With `commit`, what the proof is spent for, run once it passed: when that does not happen, a
   * recovery code is given back, no use is recorded, and the answer is undefined too.
   */
  spendSecondFactor(
    userId: number,
    proof: LoginSecondFactorProof,
    context: RequestContext,
    commit?: () => Promise<boolean>,
  ): Promise<Pick<SpentProof, 'method' | 'release'> | undefined>;
}

export interface MfaDependencies {
  mfa: MfaRepository;
  users: UsersRepository;
  accounts: AccountsService;
  box: SecretBox;
  /** The password hasher: recovery codes are stored and checked as argon2id through its bounded queue. */
  hasher: Pick<PasswordHasher, 'hash' | 'verifyLookupSecret'>;
  clock: Clock;
  mail: MailDelivery;
  issuer: string;
  /** Counts second-factor failures per user; off with RATE_LIMITS=off. */
  throttle?: Throttle | undefined;
  /** Passkeys as a second factor; without it a webauthn proof is refused. */
  webauthn?: WebauthnSecondFactor | undefined;
  /** Ends the password-only sessions once a factor is added; without it they run on. */
  sessions?: Pick<SessionsService, 'endPasswordOnlySessions'> | undefined;
  /** How many usable (not suspect) passkeys the user has; none while passkeys are not wired. */
  countPasskeys?: ((userId: number) => Promise<number>) | undefined;
}

const RECOVERY_CODE_COUNT = 10;
const CHALLENGE_TTL_MS = 5 * 60_000;
const CHALLENGE_ATTEMPTS = 5;
// How long a login with a second factor stands for one when the session then changes factors (NIST 800-63B's
// reauthentication is about the session; 10 minutes is short enough that a stolen, older session does not qualify).
const RECENT_MFA_MS = 10 * 60_000;

/**
 * The refusal of a factor change that lacks `missing` (RFC 9470): a 401 that leaves the session as it was. With
 * `recentLoginWouldDo`, a login with a second factor within RECENT_MFA_MS would have done instead (its max_age).
 */
export const insufficientAuthentication = (
  missing: 'password' | 'second_factor',
  recentLoginWouldDo = false,
) =>
  new AppError(
    'insufficient_user_authentication',
    missing === 'password' ? 'Your password is required' : 'A second factor is required',
    recentLoginWouldDo ? { maxAgeSeconds: RECENT_MFA_MS / 1000 } : {},
  );

/** The sealing context of a TOTP secret: a secret copied onto another factor's row does not open. */
export const totpSealContext = (factorId: string, userId: number) => `mfa_factors:totp:${factorId}:${userId}`;
const hashingOf = (context: RequestContext): HashOptions =>
  context.signal ? { signal: context.signal } : {};
/** A proof checked and spent; `release` gives back a recovery code when what it was spent for did not happen. */
export interface SpentProof {
  method: SecondFactorMethod;
  amr: 'otp' | 'hwk' | 'swk';
  release?: () => Promise<void>;
}

/** The one answer to a wrong, replayed or locked-out second factor, wherever one is asked for. */
export const invalidSecondFactor = () =>
  new AppError('invalid_second_factor', 'Incorrect or already used code');

const digestOf = (passwordHash: string) => createHash('sha256').update(passwordHash).digest('base64url');

/** Builds the second-factor use cases: TOTP enrolment, recovery codes, and the second leg of a login. */
export function createMfaService(deps: MfaDependencies): MfaService {
  const { mfa, users, accounts, box, hasher, clock, mail, throttle } = deps;
  const secondFactors = createSecondFactors({
    mfa: { hasActiveFactor: (userId) => mfa.hasActiveFactor(userId) },
    countPasskeys: deps.countPasskeys,
  });

  const newRecoveryCodes = async (context: RequestContext) => {
    const codes = Array.from({ length: RECOVERY_CODE_COUNT }, generateRecoveryCode);
    const hashing = hashingOf(context);
    // One after another: ten at once would take ten places of the shared hash queue from the logins waiting in it.
    const hashes: string[] = [];
    for (const code of codes) hashes.push(await hashRecoveryCode(code, hasher, hashing));
    return { codes, hashes };
  };
  const notice = (user: User, what: string) =>
    mail.composer.compose({
      userId: user.id,
      to: user.email,
      template: 'mfa_changed',
      values: { username: user.username, what },
    });

  /** The step a code matches on the user's active factor, claimed; undefined otherwise. */
  const spendOtp = async (userId: number, code: string) => {
    const factor = await mfa.findTotpFactor(userId);
    if (factor?.status !== 'active') return false;
    const secret = box.open(factor.secretSealed, totpSealContext(factor.id, userId));
    const step = await matchTotpStep(secret, code, clock.now());
    return step !== undefined && (await mfa.claimTotpStep(factor.id, step));
  };

  /**
   * Spends the unused recovery code of the user that the typed one matches: a malformed one costs no hash; each
   * stored code is tried in turn (a user has at most 10), then the matching row is claimed in one statement.
   */
  const spendRecoveryCode = async (userId: number, typed: string, context: RequestContext) => {
    const normalised = normaliseRecoveryCode(typed);
    if (normalised === undefined || !(await mfa.hasActiveFactor(userId))) return undefined;
    const hashing = hashingOf(context);
    for (const stored of await mfa.unusedRecoveryCodes(userId, RECOVERY_CODE_COUNT)) {
      if (await recoveryCodeMatches(stored.codeHash, normalised, hasher, hashing)) {
        const claimedAt = clock.now();
        if (!(await mfa.claimRecoveryCodeById(userId, stored.id, claimedAt))) return undefined;
        return { release: () => mfa.releaseRecoveryCode(userId, stored.id, claimedAt) };
      }
    }
    return undefined;
  };

  /**
   * Checks and spends one proof of the user under the per-user lock (R13), whichever its kind: a code's step, a
   * recovery code, or an assertion of a passkey (the passkeys service's counter rule and suspect marking apply).
   * `commit`, when given, is what the proof is spent for: when it does not happen (another grant of the mfa_token won),
   * a recovery code is given back and no use is recorded.
   */
  const spend = async (
    userId: number,
    proof: LoginSecondFactorProof,
    context: RequestContext,
    passkeyPurpose: 'second_factor' | 'password_reset',
    commit?: () => Promise<boolean>,
  ): Promise<SpentProof | undefined> => {
    // During a lock the proof is not even checked: a right one is answered as a wrong one.
    const admission = await throttle?.reserveSecondFactorAttempt(
      userId,
      proof.otp !== undefined ? 'capped' : 'uncapped',
    );
    if (admission !== undefined && admission !== 'admitted') {
      context.audit('second_factor_failed', { userId, reason: admission });
      return undefined;
    }
    let passed: SpentProof | undefined;
    if (proof.webauthn !== undefined) {
      const verified = await deps.webauthn?.verifySecondFactor(
        userId,
        proof.webauthn.challengeId,
        proof.webauthn.response,
        context,
        passkeyPurpose,
      );
      if (verified) passed = { method: 'webauthn', amr: verified.amr };
    } else if (proof.otp !== undefined) {
      if (await spendOtp(userId, proof.otp)) passed = { method: 'otp', amr: 'otp' };
    } else if (proof.recoveryCode !== undefined) {
      const claimed = await spendRecoveryCode(userId, proof.recoveryCode, context);
      if (claimed) passed = { method: 'recovery_code', amr: 'otp', release: claimed.release };
    }
    if (!passed) {
      context.audit('second_factor_failed', {
        userId,
        reason: proof.webauthn !== undefined ? 'wrong_assertion' : 'wrong_code',
      });
      return undefined;
    }
    await throttle?.recordSecondFactorSuccess(userId);
    if (commit) {
      let committed: boolean;
      try {
        committed = await commit();
      } catch (error) {
        // A database that failed under the write: the code is given back all the same, as for a write that lost.
        await passed.release?.();
        throw error;
      }
      if (!committed) {
        await passed.release?.();
        return undefined;
      }
    }
    context.audit('second_factor_used', { userId, reason: passed.method });
    // A login's second step with a passkey, once it won its mfa_token.
    if (passed.method === 'webauthn' && passkeyPurpose === 'second_factor')
      context.audit('passkey_login', { userId, reason: 'second_factor' });
    return passed;
  };

  const spendSecondFactor: MfaService['spendSecondFactor'] = (userId, proof, context, commit) =>
    spend(userId, proof, context, 'password_reset', commit);

  const alreadyEnrolled = () =>
    new AppError('mfa_already_enrolled', 'An authenticator app is already set up');

  const authoriseFactorChange: MfaService['authoriseFactorChange'] = async (
    userId,
    { password, proof, session },
    context,
    options = {},
  ) => {
    const { user } = await accounts.confirmPassword(userId, password, context);
    const commit = async () => {
      await options.commit?.(user);
      return true;
    };
    if (!options.proofRequired && (await secondFactors.methodsOf(userId)).length === 0) {
      await commit();
      return user;
    }
    if (proof.otp !== undefined || proof.recoveryCode !== undefined) {
      // Spent for the change: a change refused at its write (its session ended meanwhile) gives a recovery code back.
      if (!(await spendSecondFactor(userId, proof, context, commit))) throw invalidSecondFactor();
      return user;
    }
    const recentMfa =
      !options.proofRequired &&
      session?.amr.includes('mfa') &&
      clock.now().getTime() - session.authTime.getTime() <= RECENT_MFA_MS;
    if (!recentMfa) throw insufficientAuthentication('second_factor', !options.proofRequired);
    await commit();
    return user;
  };

  const secondFactorAdded: MfaService['secondFactorAdded'] = async (userId, sessionId, context) => {
    const ended = (await deps.sessions?.endPasswordOnlySessions(userId, sessionId)) ?? 0;
    if (ended > 0) context.audit('password_only_sessions_ended', { userId, ended });
  };

  return {
    methodsOf: (userId) => secondFactors.methodsOf(userId),

    authoriseFactorChange,

    async enrolTotp(userId, credentials, context) {
      const user = await authoriseFactorChange(userId, credentials, context).catch(async (error) => {
        // An active app needs no second factor to be told it exists: the same answer as with one.
        if (
          error instanceof AppError &&
          error.code === 'insufficient_user_authentication' &&
          (await mfa.hasActiveFactor(userId))
        )
          throw alreadyEnrolled();
        throw error;
      });
      const factorId = randomBytes(16).toString('base64url');
      const secret = generateTotpSecret();
      const stored = await mfa.insertPendingTotp(
        {
          id: factorId,
          userId,
          secretSealed: box.seal(secret, totpSealContext(factorId, userId)),
          createdAt: clock.now(),
        },
        credentials.sessionId,
      );
      if (!stored) throw alreadyEnrolled();
      context.audit('mfa_enrolment_started', { userId });
      return { factorId, secret, otpauthUri: totpUri(secret, deps.issuer, user.username) };
    },

    async confirmTotp(userId, code, context, sessionId) {
      const factor = await mfa.findTotpFactor(userId);
      const user = await users.findUserById(userId);
      if (factor?.status !== 'pending' || !user)
        throw new AppError('not_found', 'No authenticator app to confirm');
      // Uncapped: the secret was just shown to the signed-in user, and a guess of its code would confirm an app the
      // guesser cannot read; past R13's cap the owner may still set up a new one.
      const admission = await throttle?.reserveSecondFactorAttempt(userId, 'uncapped');
      if (admission !== undefined && admission !== 'admitted') throw invalidSecondFactor();
      const step = await matchTotpStep(
        box.open(factor.secretSealed, totpSealContext(factor.id, userId)),
        code,
        clock.now(),
      );
      const wrongCode = () => {
        context.audit('second_factor_failed', { userId, reason: 'wrong_code' });
        return invalidSecondFactor();
      };
      // Only a right code pays for the ten hashes of the new recovery codes.
      if (step === undefined) throw wrongCode();
      const { codes, hashes } = await newRecoveryCodes(context);
      const activated = await mfa.activateTotp(
        factor.id,
        userId,
        step,
        hashes,
        [notice(user, 'an authenticator app was added')],
        clock.now(),
        sessionId,
      );
      if (!activated) throw wrongCode();
      mail.mailQueued();
      await throttle?.recordSecondFactorSuccess(userId);
      context.audit('mfa_enabled', { userId });
      await secondFactorAdded(userId, sessionId, context);
      return codes;
    },

    secondFactorAdded,

    async status(userId) {
      const factor = await mfa.findTotpFactor(userId);
      return {
        totp: factor ? { status: factor.status, createdAt: factor.createdAt } : null,
        recoveryCodesLeft: factor?.status === 'active' ? await mfa.countRecoveryCodesLeft(userId) : 0,
      };
    },

    async removeTotp(userId, credentials, context) {
      // Stricter than adding: a code in the body always (whoever holds the app or its codes can type one).
      await authoriseFactorChange(userId, { ...credentials, session: undefined }, context, {
        proofRequired: true,
        commit: (user) =>
          mfa.deleteSecondFactors(
            userId,
            [notice(user, 'the authenticator app and recovery codes were removed')],
            clock.now(),
            { sessionId: credentials.sessionId },
          ),
      });
      mail.mailQueued();
      context.audit('mfa_disabled', { userId });
    },

    async regenerateRecoveryCodes(userId, password, otp, context, sessionId) {
      const user = await authoriseFactorChange(userId, { password, proof: { otp } }, context, {
        proofRequired: true,
      });
      const { codes, hashes } = await newRecoveryCodes(context);
      await mfa.replaceRecoveryCodes(
        userId,
        hashes,
        [notice(user, 'new recovery codes were made; the old ones no longer work')],
        clock.now(),
        sessionId,
      );
      mail.mailQueued();
      context.audit('recovery_codes_regenerated', { userId });
      return codes;
    },

    hasActiveFactor: (userId) => mfa.hasActiveFactor(userId),

    async startChallenge(user, verifiedHash, scope) {
      const { token, tokenHash } = generateOneTimeToken();
      const now = clock.now();
      const stored = await mfa.insertMfaChallenge(
        {
          tokenHash,
          userId: user.id,
          scope,
          passwordDigest: digestOf(verifiedHash),
          expiresAt: new Date(now.getTime() + CHALLENGE_TTL_MS),
        },
        now,
      );
      return stored ? token : undefined;
    },

    async userOfChallenge(mfaToken) {
      const tokenHash = hashOneTimeToken(mfaToken);
      const userId =
        tokenHash && (await mfa.findMfaChallengeUser(tokenHash, CHALLENGE_ATTEMPTS, clock.now()));
      if (!userId) throw new AppError('invalid_grant', 'The mfa_token is invalid, expired or used');
      return userId;
    },

    async redeemChallenge(mfaToken, proof, context) {
      const invalid = () =>
        new AppError('invalid_grant', 'The mfa_token or the code is invalid, expired or used');
      const tokenHash = hashOneTimeToken(mfaToken);
      const attempt =
        tokenHash && (await mfa.countMfaChallengeAttempt(tokenHash, CHALLENGE_ATTEMPTS, clock.now()));
      if (!tokenHash || !attempt) throw invalid();
      // A password changed since the first leg voids it: the login proved a password that is no longer theirs. Known
      // before the proof is checked, so that a void token spends no code (its step, a recovery code) and logs no use.
      const proved = (credentials: Credentials | undefined): credentials is Credentials =>
        credentials !== undefined && digestOf(credentials.passwordHash) === attempt.passwordDigest;
      if (!proved(await users.findCredentialsById(attempt.userId))) throw invalid();
      let credentials: Credentials | undefined;
      // Again after the proof, which took time: the password may have changed meanwhile. And of parallel redemptions
      // of one mfa_token one wins: a recovery code spent by another is given back.
      const passed = await spend(attempt.userId, proof, context, 'second_factor', async () => {
        credentials = await users.findCredentialsById(attempt.userId);
        return proved(credentials) && (await mfa.consumeMfaChallenge(tokenHash, clock.now()));
      });
      if (!passed || !proved(credentials)) throw invalid();
      return {
        user: credentials.user,
        verifiedHash: credentials.passwordHash,
        scope: attempt.scope,
        amr: ['pwd', passed.amr, 'mfa'],
        method: passed.method,
      };
    },

    spendSecondFactor,
  };
}
