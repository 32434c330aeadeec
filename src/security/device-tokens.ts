import { createHmac, type KeyObject, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * A device token marks a client that has logged in to an account before (OWASP's device cookie): failures it makes
 * are counted for it alone, and locks that other clients cause do not reach it. Wire form `deviceId.expiry.mac`, the
 * MAC binding the device to one user id and trust generation until the expiry (seconds since the epoch). Nothing is
 * stored: raising the user's generation voids every token issued before.
 */
export interface DeviceTokens {
  /** Returns a token for this device (a new one when no id is given) and user, valid for the configured time. */
  issue(userId: number, generation: number, deviceId: string | undefined, now: Date): string;
  /** Returns the device id of a token that is unexpired and was issued to this user at this generation, else undefined. */
  verify(token: string, userId: number, generation: number, now: Date): string | undefined;
}

const DEVICE_ID_BYTES = 16;
const TOKEN = /^([A-Za-z0-9_-]{22})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})$/;

/** Builds device tokens signed with the first key and accepted under any of them (a secret being rotated). */
export function createDeviceTokens(keys: readonly KeyObject[], ttlSeconds: number): DeviceTokens {
  const [signingKey] = keys;
  if (!signingKey) throw new Error('device tokens need a key');
  const mac = (key: KeyObject, userId: number, generation: number, deviceId: string, expiresAt: string) =>
    createHmac('sha256', key)
      .update(`device-token\0${userId}\0${generation}\0${deviceId}\0${expiresAt}`)
      .digest();

  return {
    issue(userId, generation, deviceId, now) {
      const id = deviceId ?? randomBytes(DEVICE_ID_BYTES).toString('base64url');
      const expiresAt = String(Math.floor(now.getTime() / 1000) + ttlSeconds);
      return `${id}.${expiresAt}.${mac(signingKey, userId, generation, id, expiresAt).toString('base64url')}`;
    },
    verify(token, userId, generation, now) {
      const match = TOKEN.exec(token);
      if (!match) return undefined;
      const [, deviceId = '', expiresAt = '', presented = ''] = match;
      if (Number(expiresAt) * 1000 <= now.getTime()) return undefined;
      const given = Buffer.from(presented, 'base64url');
      const valid = keys.some((key) =>
        timingSafeEqual(mac(key, userId, generation, deviceId, expiresAt), given),
      );
      return valid ? deviceId : undefined;
    },
  };
}
