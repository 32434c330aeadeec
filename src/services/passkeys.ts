import { randomBytes } from 'node:crypto';
import type {
  AuthenticationResponseJSON,
  PublicKeyCredentialCreationOptionsJSON,
  PublicKeyCredentialRequestOptionsJSON,
  RegistrationResponseJSON,
  verifyAuthenticationResponse,
  verifyRegistrationResponse,
} from '@simplewebauthn/server';
import type { ChallengePurpose, PasskeysRepository, StoredPasskey } from '../db/passkeys.ts';
import type { UsersRepository } from '../db/users.ts';
import type { User } from '../domain/user.ts';
import { AppError } from '../errors.ts';
import type { Clock } from '../security/clock.ts';
import type { MailDelivery } from './mail.ts';
import type { FactorChangeCredentials, MfaService } from './mfa.ts';
import type { RequestContext } from './request-context.ts';
import type { Throttle } from './throttle.ts';

// Loaded at the first passkey operation: 5 MB of heap (its ASN.1, CBOR and COSE code) that a server whose users sign
// in with passwords never holds.
let webAuthnModule: Promise<typeof import('@simplewebauthn/server')> | undefined;
const webAuthn = () => {
  webAuthnModule ??= import('@simplewebauthn/server');
  return webAuthnModule;
};

/** A passkey as its owner sees it. */
export interface PasskeyRecord {
  id: string;
  name: string;
  createdAt: Date;
  lastUsedAt: Date | null;
  /** BS: the authenticator says the credential is backed up (synced) now. */
  backedUp: boolean;
  /** Its counter went backwards once (a possible clone): it is refused from then on. */
  suspect: boolean;
}

export interface CeremonyOptions<T> {
  challengeId: string;
  options: T;
}

/** RFC 8176: `hwk` for a key bound to one device, `swk` for a synced (backup-eligible) passkey. */
export type PasskeyAmr = 'hwk' | 'swk';

/** What an assertion of a known user proves for: a login's second leg, or a password reset of the account. */
export type SecondFactorPurpose = Extract<ChallengePurpose, 'second_factor' | 'password_reset'>;

/** A passwordless login that passed: who and how they proved it (no password: its session binds to no hash). */
export interface PasskeyLogin {
  user: User;
  amr: [PasskeyAmr, 'user', 'mfa'];
}

/** The relying party, from configuration: never from a request's Host. */
export interface RelyingParty {
  rpId: string;
  rpName: string;
  origins: readonly string[];
}

export interface PasskeysService {
  /** Options for a new passkey, under MfaService.authoriseFactorChange's rule; throws passkey_limit at 10. */
  registrationOptions(
    userId: number,
    credentials: FactorChangeCredentials,
    context: RequestContext,
  ): Promise<CeremonyOptions<PublicKeyCredentialCreationOptionsJSON>>;
  /** Verifies a registration response and stores the passkey; throws invalid_passkey or passkey_limit. */
  verifyRegistration(
    userId: number,
    challengeId: string,
    response: unknown,
    name: string | undefined,
    context: RequestContext,
    /** The session asking, which stays signed in when the password-only ones end. */
    sessionId?: string,
  ): Promise<PasskeyRecord>;
  list(userId: number): Promise<PasskeyRecord[]>;
  rename(userId: number, id: string, name: string, context: RequestContext): Promise<PasskeyRecord>;
  /** Deletes one of the user's passkeys under authoriseFactorChange's rule; throws not_found for any other id. */
  remove(
    userId: number,
    id: string,
    credentials: FactorChangeCredentials,
    context: RequestContext,
  ): Promise<void>;
  /** Options for a login without username: an empty allowCredentials, so nothing about accounts leaks. */
  passwordlessOptions(
    context: RequestContext,
  ): Promise<CeremonyOptions<PublicKeyCredentialRequestOptionsJSON>>;
  /** Checks a passwordless assertion; undefined for every refusal (audited with its reason). LoginService's port. */
  passwordlessLogin(
    challengeId: string,
    response: unknown,
    context: RequestContext,
  ): Promise<PasskeyLogin | undefined>;
  /** Second-factor options for the holder of an mfa_token, without spending one of its attempts; throws invalid_grant. */
  secondFactorOptionsForMfaToken(
    mfaToken: string,
    context: RequestContext,
  ): Promise<CeremonyOptions<PublicKeyCredentialRequestOptionsJSON>>;
  /**
   * Options for the holder of a live password reset link of this user, listing their usable passkeys; undefined when
   * they have none. Throttled as the public options (R14).
   */
  passwordResetOptions(
    userId: number,
    context: RequestContext,
  ): Promise<CeremonyOptions<PublicKeyCredentialRequestOptionsJSON> | undefined>;
  /**
   * Checks an assertion of this user for a challenge of the purpose (a login's second leg, or a password reset);
   * undefined for every refusal. Only a login's is audited passkey_login: a reset signs nobody in.
   */
  verifySecondFactor(
    userId: number,
    challengeId: string,
    response: unknown,
    context: RequestContext,
    purpose: SecondFactorPurpose,
  ): Promise<{ amr: PasskeyAmr } | undefined>;
  /** The user's usable passkeys: a suspect one is refused, so it is no second factor. */
  countPasskeys(userId: number): Promise<number>;
}

export interface PasskeysDependencies {
  passkeys: PasskeysRepository;
  users: UsersRepository;
  /**
   * The second factors' rules this service follows: who may change factors, and whose mfa_token is presented (both
   * live in services/mfa.ts).
   */
  mfa: Pick<MfaService, 'authoriseFactorChange' | 'userOfChallenge' | 'secondFactorAdded'>;
  clock: Clock;
  mail: MailDelivery;
  rp: RelyingParty;
  /** R14, the per-address cap of the public options; off with RATE_LIMITS=off. */
  throttle?: Throttle | undefined;
}

export const MAX_PASSKEYS = 10;
// Assertions of one passkey recorded while one waits to be: each try past the first means another login succeeded.
const MAX_COUNTER_RACES = 5;
const CHALLENGE_TTL_MS = 5 * 60_000;
// WebAuthn L3 §5.4.3 recommends COSE algorithms in this order: Ed25519, ES256, RS256.
const ALGORITHMS = [-8, -7, -257];
// L3 §7.1 step 22: credential ids are at most 1023 bytes.
const MAX_CREDENTIAL_ID_BYTES = 1023;

const toRecord = (passkey: StoredPasskey): PasskeyRecord => ({
  id: passkey.id,
  name: passkey.name,
  createdAt: passkey.createdAt,
  lastUsedAt: passkey.lastUsedAt ?? null,
  backedUp: passkey.backupState,
  suspect: passkey.suspect,
});

const amrOf = (passkey: StoredPasskey): PasskeyAmr => (passkey.backupEligible ? 'swk' : 'hwk');

/** A response as clients send it: the object, or its JSON in a form field. */
function parseResponse<T>(response: unknown): T | undefined {
  let value = response;
  if (typeof value === 'string') {
    try {
      value = JSON.parse(value);
    } catch {
      return undefined;
    }
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const shape = value as { id?: unknown; rawId?: unknown; response?: unknown };
  if (typeof shape.id !== 'string' || typeof shape.rawId !== 'string') return undefined;
  if (typeof shape.response !== 'object' || shape.response === null) return undefined;
  return value as T;
}

/** Builds the passkey use cases: registration and management, passwordless login, and the second factor. */
export function createPasskeysService(deps: PasskeysDependencies): PasskeysService {
  const { passkeys, users, clock, mail, rp, throttle } = deps;

  const notice = (user: User, what: string) =>
    mail.composer.compose({
      userId: user.id,
      to: user.email,
      template: 'mfa_changed',
      values: { username: user.username, what },
    });

  const newChallenge = async (purpose: ChallengePurpose, userId: number | undefined) => {
    const challenge = new Uint8Array(randomBytes(32));
    const id = randomBytes(16).toString('base64url');
    const now = clock.now();
    await passkeys.insertChallenge(
      {
        id,
        purpose,
        userId,
        challenge: Buffer.from(challenge).toString('base64url'),
        expiresAt: new Date(now.getTime() + CHALLENGE_TTL_MS),
      },
      now,
    );
    return { id, challenge };
  };

  const requestOptions = async (
    purpose: ChallengePurpose,
    userId: number | undefined,
    allowed: readonly StoredPasskey[],
  ) => {
    const { id, challenge } = await newChallenge(purpose, userId);
    const options = await (await webAuthn()).generateAuthenticationOptions({
      rpID: rp.rpId,
      challenge,
      timeout: CHALLENGE_TTL_MS,
      userVerification: 'required',
      allowCredentials: allowed.map((passkey) => ({
        id: passkey.credentialId,
        ...(passkey.transports.length > 0 ? { transports: passkey.transports } : {}),
      })),
    });
    return { challengeId: id, options };
  };

  /**
   * Checks an assertion against a challenge of `purpose` (and of `userId` when given); returns the passkey it used,
   * its use recorded, or undefined, the refusal audited with its reason.
   */
  const verifyAssertion = async (
    purpose: ChallengePurpose,
    userId: number | undefined,
    challengeId: string,
    presented: unknown,
    context: RequestContext,
  ): Promise<StoredPasskey | undefined> => {
    const refuse = (reason: string, refusedUserId = userId) => {
      context.audit('passkey_refused', { reason, ...(refusedUserId ? { userId: refusedUserId } : {}) });
      return undefined;
    };
    const response = parseResponse<AuthenticationResponseJSON>(presented);
    if (!response) return refuse('malformed_response');
    // Spent before anything is checked: a challenge answers one assertion, right or wrong, and of two parallel
    // submissions of one assertion only one gets this far.
    const challenge = await passkeys.consumeChallenge(challengeId, purpose, userId, clock.now());
    if (!challenge) return refuse('challenge_unknown_or_spent');
    const passkey = await passkeys.findByCredentialId(response.id);
    if (!passkey) return refuse('unknown_credential');
    if (userId !== undefined && passkey.userId !== userId) return refuse('credential_of_another_user');
    if (purpose === 'passwordless') {
      // L3 §7.2 step 6: a discoverable login names its user, and that must be the credential's owner.
      const handle = await passkeys.findUserHandle(passkey.userId);
      if (!response.response.userHandle || response.response.userHandle !== handle)
        return refuse('user_handle_mismatch', passkey.userId);
    }
    if (passkey.suspect) return refuse('suspect_credential', passkey.userId);
    // Outside the try: a library that failed to load is a server fault, not a refused assertion.
    const { verifyAuthenticationResponse: verifyAssertion } = await webAuthn();
    let verification: Awaited<ReturnType<typeof verifyAuthenticationResponse>>;
    try {
      verification = await verifyAssertion({
        response,
        expectedChallenge: challenge,
        expectedOrigin: [...rp.origins],
        expectedRPID: rp.rpId,
        // The library refuses any counter at or below this; the L3 rule below is applied here instead, where a
        // regression can mark the credential.
        credential: {
          id: passkey.credentialId,
          publicKey: Buffer.from(passkey.publicKey, 'base64url'),
          counter: 0,
        },
        requireUserVerification: true,
      });
    } catch {
      return refuse('invalid_assertion', passkey.userId);
    }
    const info = verification.authenticationInfo;
    if (!verification.verified || !info.userVerified) return refuse('invalid_assertion', passkey.userId);
    const newCount = info.newCounter;
    const copied = async () => {
      const user = await users.findUserById(passkey.userId);
      const marked =
        user &&
        (await passkeys.markSuspect(
          passkey.id,
          [notice(user, `the passkey "${passkey.name}" was refused: it may have been copied`)],
          clock.now(),
        ));
      if (marked) mail.mailQueued();
      return refuse('counter_regression', passkey.userId);
    };
    // L3 §6.1.1: when either counter is non-zero, the new one must be greater; otherwise the authenticator may have
    // been cloned. Synced passkeys report 0 throughout, which passes.
    if ((newCount !== 0 || passkey.signCount !== 0) && newCount <= passkey.signCount) return copied();
    let storedCount = passkey.signCount;
    for (let attempt = 0; attempt < MAX_COUNTER_RACES; attempt += 1) {
      const recorded = await passkeys.recordUse(
        {
          id: passkey.id,
          storedCount,
          newCount,
          backupState: info.credentialBackedUp,
          userVerified: info.userVerified,
        },
        clock.now(),
      );
      if (recorded) return passkey;
      // Another assertion of this passkey was recorded since this one read the counter: judged against the counter
      // it left. The same non-zero counter twice is a copy's mark, whatever the order they came in (found from outside:
      // it was refused unmarked when both had read the counter first); a lower one may be the same authenticator's
      // earlier assertion that came late, and is refused unmarked; a higher one is recorded.
      const current = await passkeys.findPasskey(passkey.userId, passkey.id);
      if (!current || current.suspect) return refuse('suspect_credential', passkey.userId);
      if ((newCount !== 0 || current.signCount !== 0) && newCount <= current.signCount) {
        if (newCount === current.signCount) return copied();
        break;
      }
      storedCount = current.signCount;
    }
    return refuse('counter_race', passkey.userId);
  };

  const passwordlessLogin: PasskeysService['passwordlessLogin'] = async (challengeId, response, context) => {
    const passkey = await verifyAssertion('passwordless', undefined, challengeId, response, context);
    if (!passkey) return undefined;
    const credentials = await users.findCredentialsById(passkey.userId);
    if (!credentials) return undefined;
    // A passkey with user verification is a second factor that succeeded: R13's failures are forgotten, as after a
    // second leg.
    await throttle?.recordSecondFactorSuccess(passkey.userId);
    context.audit('passkey_login', { userId: passkey.userId, reason: 'passwordless' });
    return {
      user: credentials.user,
      amr: [amrOf(passkey), 'user', 'mfa'],
    };
  };

  const usablePasskeys = async (userId: number) =>
    (await passkeys.listPasskeys(userId)).filter((passkey) => !passkey.suspect);

  return {
    async registrationOptions(userId, credentials, context) {
      const user = await deps.mfa.authoriseFactorChange(userId, credentials, context);
      const existing = await passkeys.listPasskeys(userId);
      if (existing.length >= MAX_PASSKEYS)
        throw new AppError('passkey_limit', `At most ${MAX_PASSKEYS} passkeys per account`);
      const handle = await passkeys.ensureUserHandle(userId, randomBytes(64).toString('base64url'));
      // The account was deleted since this request was authenticated: as for any token of a deleted account.
      if (!handle) throw new AppError('invalid_token', 'Could not validate credentials');
      const { id, challenge } = await newChallenge('registration', userId);
      const options = await (await webAuthn()).generateRegistrationOptions({
        rpName: rp.rpName,
        rpID: rp.rpId,
        userName: user.username,
        userDisplayName: user.username,
        userID: new Uint8Array(Buffer.from(handle, 'base64url')),
        challenge,
        timeout: CHALLENGE_TTL_MS,
        attestationType: 'none',
        excludeCredentials: existing.map((passkey) => ({
          id: passkey.credentialId,
          ...(passkey.transports.length > 0 ? { transports: passkey.transports } : {}),
        })),
        authenticatorSelection: {
          residentKey: 'required',
          requireResidentKey: true,
          userVerification: 'required',
        },
        supportedAlgorithmIDs: ALGORITHMS,
      });
      return { challengeId: id, options };
    },

    async verifyRegistration(userId, challengeId, presented, name, context, sessionId) {
      const refuse = (reason: string) => {
        context.audit('passkey_refused', { userId, reason });
        return new AppError('invalid_passkey', 'The passkey could not be registered');
      };
      const response = parseResponse<RegistrationResponseJSON>(presented);
      if (!response) throw refuse('malformed_response');
      const challenge = await passkeys.consumeChallenge(challengeId, 'registration', userId, clock.now());
      if (!challenge) throw refuse('challenge_unknown_or_spent');
      const user = await users.findUserById(userId);
      if (!user) throw new AppError('invalid_token', 'Could not validate credentials');
      const { verifyRegistrationResponse: verifyAttestation } = await webAuthn();
      let verification: Awaited<ReturnType<typeof verifyRegistrationResponse>>;
      try {
        verification = await verifyAttestation({
          response,
          expectedChallenge: challenge,
          expectedOrigin: [...rp.origins],
          expectedRPID: rp.rpId,
          requireUserVerification: true,
          supportedAlgorithmIDs: ALGORITHMS,
        });
      } catch {
        throw refuse('invalid_attestation');
      }
      if (!verification.verified) throw refuse('invalid_attestation');
      const info = verification.registrationInfo;
      const credentialId = info.credential.id;
      // A browser names the credential it made (L3 §5.1: id is the credential's id); another id is a made-up response
      // (found from outside: one was stored).
      if (credentialId !== response.id) throw refuse('credential_id_mismatch');
      if (Buffer.from(credentialId, 'base64url').length > MAX_CREDENTIAL_ID_BYTES)
        throw refuse('credential_id_too_long');
      const count = await passkeys.countPasskeys(userId);
      const chosen = name?.trim() || `Passkey ${count + 1}`;
      const passkeyId = randomBytes(16).toString('base64url');
      const stored = await passkeys.insertPasskey(
        {
          id: passkeyId,
          userId,
          credentialId,
          publicKey: Buffer.from(info.credential.publicKey).toString('base64url'),
          signCount: info.credential.counter,
          transports: (info.credential.transports ?? []).filter((transport) =>
            /^[a-z-]{1,32}$/.test(transport),
          ),
          aaguid: info.aaguid,
          backupEligible: info.credentialDeviceType === 'multiDevice',
          backupState: info.credentialBackedUp,
          uvInitialized: info.userVerified,
          name: chosen,
        },
        MAX_PASSKEYS,
        [notice(user, `a passkey ("${chosen}") was added`)],
        clock.now(),
        sessionId,
      );
      if (stored === 'limit')
        throw new AppError('passkey_limit', `At most ${MAX_PASSKEYS} passkeys per account`);
      if (stored === 'user_gone') throw new AppError('invalid_token', 'Could not validate credentials');
      if (stored === 'duplicate') throw refuse('credential_already_registered');
      mail.mailQueued();
      context.audit('passkey_registered', { userId, passkeyId });
      await deps.mfa.secondFactorAdded(userId, sessionId, context);
      const passkey = await passkeys.findPasskey(userId, passkeyId);
      if (!passkey) throw new AppError('not_found', 'Passkey not found');
      return toRecord(passkey);
    },

    async list(userId) {
      return (await passkeys.listPasskeys(userId)).map(toRecord);
    },

    async rename(userId, id, name, context) {
      const renamed = await passkeys.renamePasskey(userId, id, name.trim());
      if (!renamed) throw new AppError('not_found', 'Passkey not found');
      context.audit('passkey_renamed', { userId, passkeyId: id });
      return toRecord(renamed);
    },

    async remove(userId, id, credentials, context) {
      // The removal is the change authorised: a recovery code spent for it is given back when it does not happen.
      await deps.mfa.authoriseFactorChange(userId, credentials, context, {
        commit: async (user) => {
          const passkey = await passkeys.findPasskey(userId, id);
          const deleted =
            passkey &&
            (await passkeys.deletePasskey(
              userId,
              id,
              [notice(user, `the passkey "${passkey.name}" was removed`)],
              clock.now(),
              credentials.sessionId,
            ));
          if (!deleted) throw new AppError('not_found', 'Passkey not found');
        },
      });
      mail.mailQueued();
      context.audit('passkey_deleted', { userId, passkeyId: id });
    },

    async passwordlessOptions(context) {
      await throttle?.admitPasskeyOptions(context);
      return requestOptions('passwordless', undefined, []);
    },

    passwordlessLogin,

    async secondFactorOptionsForMfaToken(mfaToken, context) {
      // Each answer stores a challenge: R14 caps them per address as for the public options.
      await throttle?.admitPasskeyOptions(context);
      const userId = await deps.mfa.userOfChallenge(mfaToken);
      return requestOptions('second_factor', userId, await usablePasskeys(userId));
    },

    async passwordResetOptions(userId, context) {
      await throttle?.admitPasskeyOptions(context);
      const usable = await usablePasskeys(userId);
      return usable.length === 0 ? undefined : requestOptions('password_reset', userId, usable);
    },

    async verifySecondFactor(userId, challengeId, response, context, purpose) {
      const passkey = await verifyAssertion(purpose, userId, challengeId, response, context);
      if (!passkey) return undefined;
      return { amr: amrOf(passkey) };
    },

    countPasskeys: (userId) => passkeys.countUsablePasskeys(userId),
  };
}
