import type { PublicKeyCredentialRequestOptionsJSON } from '@simplewebauthn/server';
import type { EmailFlowsRepository } from '../db/email-flows.ts';
import type { NewOneTimeToken, OneTimeTokensRepository } from '../db/one-time-tokens.ts';
import type { UsersRepository } from '../db/users.ts';
import { canonicalEmail } from '../domain/email.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import {
  generateOneTimeToken,
  hashOneTimeToken,
  ONE_TIME_TOKEN_TTL_SECONDS,
  type OneTimeTokenPurpose,
} from '../security/one-time-tokens.ts';
import type { PasswordPolicy } from '../security/password-policy.ts';
import type { PasswordHasher } from '../security/passwords.ts';
import { checkNewPassword, describePasswordProblem, type EmailChangeMailer } from './accounts.ts';
import type { BackgroundWork } from './background-work.ts';
import type { MailComposer } from './mail.ts';
import { invalidSecondFactor, type LoginSecondFactorProof, type MfaService } from './mfa.ts';
import type { CeremonyOptions, PasskeysService } from './passkeys.ts';
import type { RequestContext } from './request-context.ts';
import { isAccountUsable } from './session-state.ts';
import type { Throttle } from './throttle.ts';

export interface EmailFlowsService {
  /** Mails a verification link to the user's address unless it is verified already; throws temporarily_unavailable. */
  requestVerification(user: User, context: RequestContext): Promise<void>;
  /**
   * Mails a verification link to an unverified account with this address, after the request is answered; throws
   * temporarily_unavailable only, and the same for every address.
   */
  resendVerification(email: string, context: RequestContext): Promise<void>;
  /**
   * Spends a verification token: marks its address verified (a pending one becomes the email) and ends every session
   * of the user; returns the user. Throws invalid_one_time_token, email_taken or temporarily_unavailable.
   */
  verifyEmail(token: string, context: RequestContext): Promise<User>;
  /** Mails a reset link to the account with this address, after the request is answered; throws as resend does. */
  forgotPassword(email: string, context: RequestContext): Promise<void>;
  /**
   * Spends a reset token: sets the new password, marks the email verified and ends every session; throws
   * invalid_one_time_token, validation_failed or temporarily_unavailable, and for an account with second factors (an
   * active authenticator app, a usable passkey) second_factor_required (naming the methods) without a proof, or
   * invalid_second_factor for a wrong one or for several; either way the token stays unspent.
   */
  resetPassword(
    token: string,
    newPassword: string,
    context: RequestContext,
    proof?: LoginSecondFactorProof,
  ): Promise<void>;
  /**
   * Passkey options for the account of a live reset token, which stays unspent; throws as resetPassword does for a
   * dead token, and no_passkey when the account has no usable passkey.
   */
  resetPasskeyOptions(
    token: string,
    context: RequestContext,
  ): Promise<CeremonyOptions<PublicKeyCredentialRequestOptionsJSON>>;
}

export interface EmailLinkDependencies {
  mail: MailComposer;
  clock: Clock;
  /** Where users reach this service, no trailing slash: links start with it, never with the request's Host. */
  publicUrl: string;
  /** Called once a transaction that queued mail committed: the sender looks now instead of at its next poll. */
  mailQueued?: () => void;
  throttle?: Throttle | undefined;
}

export interface EmailFlowsDependencies extends EmailLinkDependencies {
  users: UsersRepository;
  tokens: OneTimeTokensRepository;
  flows: EmailFlowsRepository;
  hasher: PasswordHasher;
  policy: PasswordPolicy;
  background: BackgroundWork;
  /** An account with second factors resets its password only with one of them. */
  secondFactors?: Pick<MfaService, 'methodsOf' | 'spendSecondFactor'> | undefined;
  /** The passkey options of a reset; without it the options route answers no_passkey. */
  passkeys?: Pick<PasskeysService, 'passwordResetOptions'> | undefined;
  /**
   * Runs after a reset commits: login throttling forgets the account's failures, and those of the client the reset
   * came from (R1), which is most often the owner's own device.
   */
  onPasswordReset?: (username: string, context: RequestContext) => Promise<void>;
  /** onPasswordReset failed (the counter store): the reset stands, so the failure is reported rather than answered. */
  onAftermathFailed?: (error: unknown) => void;
}

const PAGES: Readonly<Record<OneTimeTokenPurpose, string>> = {
  verify_email: '/account/verify-email',
  reset_password: '/account/reset-password',
};

const invalidToken = () =>
  new AppError('invalid_one_time_token', 'The link is invalid, expired or already used');

/**
 * Returns a new token of the purpose for the user and the address, with its link. The token rides in the fragment,
 * which browsers never send: it stays out of server logs, proxies and Referer headers.
 */
function issueToken(
  deps: EmailLinkDependencies,
  user: User,
  email: string,
  purpose: OneTimeTokenPurpose,
): { token: NewOneTimeToken; link: string } {
  const { token, tokenHash } = generateOneTimeToken();
  const now = deps.clock.now();
  return {
    token: {
      userId: user.id,
      purpose,
      email,
      tokenHash,
      expiresAt: new Date(now.getTime() + ONE_TIME_TOKEN_TTL_SECONDS[purpose] * 1000),
    },
    link: `${deps.publicUrl}${PAGES[purpose]}#token=${token}`,
  };
}

/** The notice a reset or a change of the password mails to the account's address (ASVS 6.3.7). */
function passwordChangedNotice(mail: MailComposer, user: User) {
  return mail.compose({
    userId: user.id,
    to: user.email,
    template: 'password_changed',
    values: { username: user.username },
  });
}

/** Builds what an email change mails: a verify_email link to the new address, a notice to the old one. */
export function createEmailChangeMailer(deps: EmailLinkDependencies): EmailChangeMailer {
  return {
    // A stolen session must not make the service mail one address after another, from one client or many.
    async admit(user, context) {
      await deps.throttle?.admitMailRequest(context);
      await deps.throttle?.admitEmailChange(user.id, context);
    },
    async prepare(user, newEmail, context) {
      await deps.throttle?.admitMailTo(newEmail, context);
      const { token, link } = issueToken(deps, user, newEmail, 'verify_email');
      return {
        token,
        mails: [
          deps.mail.compose({
            userId: user.id,
            to: newEmail,
            template: 'verify_email',
            values: { username: user.username, link },
          }),
          deps.mail.compose({
            userId: user.id,
            to: user.email,
            template: 'email_change_requested',
            values: { username: user.username, newEmail },
          }),
        ],
      };
    },
    passwordChangedNotice: (user) => passwordChangedNotice(deps.mail, user),
    queued: () => deps.mailQueued?.(),
  };
}

/** Builds the email verification and password reset use cases. */
export function createEmailFlowsService(deps: EmailFlowsDependencies): EmailFlowsService {
  const { users, tokens, flows, mail, clock, throttle, background } = deps;

  // Only ever for an address never verified (the callers check): the mail tells its owner how to take the account.
  const mailVerificationLink = async (user: User) => {
    const { token, link } = issueToken(deps, user, user.email, 'verify_email');
    const verifyMail = mail.compose({
      userId: user.id,
      to: user.email,
      template: 'verify_email',
      values: { username: user.username, link, signInUrl: `${deps.publicUrl}/` },
    });
    await flows.issueTokenWithMails(token, [verifyMail], clock.now());
    deps.mailQueued?.();
  };

  // Checked before anything is looked up: the limits, and so the answer, are the same for every address.
  const admitMailRequest = async (email: string, context: RequestContext) => {
    await throttle?.admitMailRequest(context);
    await throttle?.admitMailTo(email, context);
  };

  // Refusals are audited: a run of them against one account is someone holding old links or guessing. The user is
  // named only when the token was issued to them (spent, expired or stale), never the token itself.
  const refused = async (
    purpose: OneTimeTokenPurpose,
    tokenHash: string | undefined,
    context: RequestContext,
  ) => {
    const userId =
      tokenHash === undefined ? undefined : await tokens.findOneTimeTokenUser(tokenHash, purpose);
    context.audit('one_time_token_refused', { purpose, ...(userId !== undefined ? { userId } : {}) });
    return invalidToken();
  };

  const redeemable = async (token: string, purpose: OneTimeTokenPurpose, context: RequestContext) => {
    const tokenHash = hashOneTimeToken(token);
    if (tokenHash === undefined) throw await refused(purpose, undefined, context);
    return tokenHash;
  };

  /** The user of a live reset token, which stays unspent; refused (and audited) otherwise. */
  const resetTokenUser = async (token: string, context: RequestContext) => {
    await throttle?.admitTokenSubmission(context);
    const tokenHash = await redeemable(token, 'reset_password', context);
    // A link mailed to an address the account has since left is no owner's: refused before a factor is spent on it.
    const owner = await tokens.findLiveResetToken(tokenHash, clock.now());
    const user = owner && (await users.findUserById(owner.userId));
    // A disabled account is shut to its user, password included, until an operator enables it again.
    if (!user || !isAccountUsable(user)) throw await refused('reset_password', tokenHash, context);
    return { user, tokenHash };
  };

  /**
   * A mailbox alone must not take over an account its owner protected with a second factor. Returns whether the
   * proof must be spent; throws when one is missing or several are given (then none is checked, spent or counted).
   */
  const secondFactorNeeded = async (user: User, proof: LoginSecondFactorProof) => {
    const methods = (await deps.secondFactors?.methodsOf(user.id)) ?? [];
    if (methods.length === 0) return false;
    const given = [proof.otp, proof.recoveryCode, proof.webauthn].filter((value) => value !== undefined);
    if (given.length === 0) {
      throw new AppError('second_factor_required', 'A second factor is required', { mfaMethods: methods });
    }
    if (given.length > 1) throw invalidSecondFactor();
    return true;
  };

  return {
    async requestVerification(user, context) {
      await throttle?.admitMailTo(user.email, context);
      if (user.emailVerifiedAt !== null) return;
      await mailVerificationLink(user);
      context.audit('email_verification_requested', { userId: user.id });
    },

    async resendVerification(email, context) {
      await admitMailRequest(email, context);
      background.run('email verification resend', async () => {
        const user = await users.findUserByEmail(canonicalEmail(email));
        // Answered as for an unknown address, as a reset request is: its link would be refused while disabled.
        if (!user || user.emailVerifiedAt !== null || !isAccountUsable(user)) return;
        await mailVerificationLink(user);
        context.audit('email_verification_requested', { userId: user.id });
      });
    },

    async verifyEmail(token, context) {
      await throttle?.admitTokenSubmission(context);
      const tokenHash = await redeemable(token, 'verify_email', context);
      const result = await flows.verifyEmail(tokenHash, clock.now(), (verified) =>
        verified.previousEmail === undefined
          ? []
          : [
              mail.compose({
                userId: verified.user.id,
                to: verified.previousEmail,
                template: 'email_changed',
                values: { username: verified.user.username, newEmail: verified.user.email },
              }),
            ],
      );
      if (result.outcome !== 'verified') throw await refused('verify_email', tokenHash, context);
      const { user, endedSessions, previousEmail } = result;
      if (previousEmail !== undefined) {
        deps.mailQueued?.();
        context.audit('email_changed', { userId: user.id });
      }
      context.audit('email_verified', { userId: user.id, ended: endedSessions });
      return user;
    },

    async forgotPassword(email, context) {
      await admitMailRequest(email, context);
      background.run('password reset request', async () => {
        const user = await users.findUserByEmail(canonicalEmail(email));
        // Answered as for an unknown address: a disabled account's reset would be refused at its link anyway.
        if (!user || !isAccountUsable(user)) return;
        const { token, link } = issueToken(deps, user, user.email, 'reset_password');
        const resetMail = mail.compose({
          userId: user.id,
          to: user.email,
          template: 'password_reset',
          values: { username: user.username, link },
        });
        await flows.issueTokenWithMails(token, [resetMail], clock.now());
        deps.mailQueued?.();
        context.audit('password_reset_requested', { userId: user.id });
      });
    },

    async resetPassword(token, newPassword, context, proof = {}) {
      const { user, tokenHash } = await resetTokenUser(token, context);
      const problem = await checkNewPassword(deps.policy, user, newPassword);
      if (problem) {
        throw new AppError('validation_failed', 'Invalid password', {
          details: [{ ...describePasswordProblem(problem), loc: ['body', 'new_password'] }],
        });
      }
      const needsFactor = await secondFactorNeeded(user, proof);
      // Hashed before the proof is spent: a hash shed under load must not cost the user a recovery code.
      const passwordHash = await deps.hasher.hash(
        newPassword,
        context.signal ? { signal: context.signal } : {},
      );
      let attempted = false;
      let reset: Awaited<ReturnType<typeof flows.resetPassword>>;
      const write = async () => {
        attempted = true;
        reset = await flows.resetPassword(tokenHash, passwordHash, clock.now(), (changed) => [
          passwordChangedNotice(mail, changed),
        ]);
        return reset !== undefined;
      };
      // Spent by a parallel reset between the look-up and here, or mailed to an address the account no longer has: a
      // recovery code this reset spent is given back, and no use of it recorded, as a login's that loses its mfa_token.
      if (needsFactor) {
        const spent = await deps.secondFactors?.spendSecondFactor(user.id, proof, context, write);
        if (!spent && !attempted) throw invalidSecondFactor();
      } else await write();
      if (!reset) throw await refused('reset_password', tokenHash, context);
      deps.mailQueued?.();
      context.audit('password_reset', { userId: reset.user.id, ended: reset.endedSessions });
      // The reset is committed: a counter store that fails now must not turn it into a 5xx the user would retry.
      try {
        await deps.onPasswordReset?.(reset.user.username, context);
      } catch (error) {
        deps.onAftermathFailed?.(error);
      }
    },

    async resetPasskeyOptions(token, context) {
      const { user } = await resetTokenUser(token, context);
      // An account deleted since its link was read: the link is as dead as the account, and no bearer token was sent.
      const ceremony = await deps.passkeys?.passwordResetOptions(user.id, context).catch((error: unknown) => {
        if (error instanceof AppError && error.code === 'account_gone') throw invalidToken();
        throw error;
      });
      if (!ceremony) throw new AppError('no_passkey', 'The account has no passkey');
      return ceremony;
    },
  };
}
