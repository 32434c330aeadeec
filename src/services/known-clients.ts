import type { KnownIpsRepository } from '../db/known-ips.ts';
import type { Clock } from '../security/clock.ts';
import type { DeviceTokens } from '../security/device-tokens.ts';

/** What is known of the client of a login before its password is checked. */
export interface ClientIdentity {
  /** The account the username names, if there is one. */
  userId: number | undefined;
  /** The account's trust generation, which a device token for it carries. */
  trustGeneration: number;
  /** The device id of a valid device token issued for that account. */
  deviceId: string | undefined;
  /** When the account last logged in from this client's address, within the remembered time. */
  ipLastSuccessAt: Date | undefined;
  /** A valid device token or a known address. */
  trusted: boolean;
}

export interface KnownClients {
  /** Returns who the client is to the account named by `usernameCanonical` (undefined: no account can have it). */
  identify(
    usernameCanonical: string | undefined,
    ip: string,
    deviceToken: string | undefined,
  ): Promise<ClientIdentity>;
  /** Remembers the client after a successful login and returns its (renewed) device token. */
  remember(userId: number, ip: string, identity: ClientIdentity): Promise<string>;
}

export interface KnownClientsDependencies {
  knownIps: KnownIpsRepository;
  deviceTokens: DeviceTokens;
  clock: Clock;
  /** How many addresses each user keeps; 0 trusts device tokens only. */
  knownIpsPerUser: number;
  /** How long an address stays known after its last success (the device tokens' lifetime too). */
  rememberSeconds: number;
}

// A known address is written again only when its last success is older than this: most logins then write nothing.
const REFRESH_KNOWN_IP_AFTER_MS = 3600_000;

const UNKNOWN: ClientIdentity = {
  userId: undefined,
  trustGeneration: 0,
  deviceId: undefined,
  ipLastSuccessAt: undefined,
  trusted: false,
};

/** Builds the known-client set of login throttling: device tokens and each user's recent addresses. */
export function createKnownClients(deps: KnownClientsDependencies): KnownClients {
  const { knownIps, deviceTokens, clock } = deps;
  const since = (now: Date) => new Date(now.getTime() - deps.rememberSeconds * 1000);

  return {
    async identify(usernameCanonical, ip, deviceToken) {
      if (usernameCanonical === undefined) return UNKNOWN;
      const now = clock.now();
      const subject = await knownIps.findLoginSubject(usernameCanonical, ip, since(now));
      if (!subject) return UNKNOWN;
      const deviceId = deviceToken
        ? deviceTokens.verify(deviceToken, subject.userId, subject.trustGeneration, now)
        : undefined;
      const ipLastSuccessAt = deps.knownIpsPerUser > 0 ? subject.ipLastSuccessAt : undefined;
      return {
        userId: subject.userId,
        trustGeneration: subject.trustGeneration,
        deviceId,
        ipLastSuccessAt,
        trusted: deviceId !== undefined || ipLastSuccessAt !== undefined,
      };
    },

    async remember(userId, ip, identity) {
      const now = clock.now();
      const known = identity.userId === userId ? identity : UNKNOWN;
      const lastMs = known.ipLastSuccessAt?.getTime() ?? Number.NEGATIVE_INFINITY;
      if (deps.knownIpsPerUser > 0 && now.getTime() - lastMs > REFRESH_KNOWN_IP_AFTER_MS) {
        await knownIps.recordKnownIp(userId, ip, now, deps.knownIpsPerUser, since(now));
      }
      return deviceTokens.issue(userId, known.trustGeneration, known.deviceId, now);
    },
  };
}
