import { createSecretKey, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createDeviceTokens } from '../../src/security/device-tokens.ts';
import { deriveDeviceTokenKey, generateSecret } from '../../src/security/secret-box.ts';

const DAY_SECONDS = 86400;
const now = new Date('2026-12-01T12:00:00Z');
const later = (days: number) => new Date(now.getTime() + days * DAY_SECONDS * 1000);

describe('device tokens', () => {
  const key = deriveDeviceTokenKey(generateSecret());
  const tokens = createDeviceTokens([key], 90 * DAY_SECONDS);

  it('names the same device for the user it was issued to until it expires', () => {
    const token = tokens.issue(7, 0, undefined, now);
    const deviceId = tokens.verify(token, 7, 0, now);
    expect(deviceId).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(tokens.verify(token, 7, 0, later(89))).toBe(deviceId);
    expect(tokens.verify(token, 7, 0, later(90))).toBeUndefined();
  });

  it('is worth nothing for another user', () => {
    expect(tokens.verify(tokens.issue(7, 0, undefined, now), 8, 0, now)).toBeUndefined();
  });

  it('keeps the device id when renewed', () => {
    const first = tokens.issue(7, 0, undefined, now);
    const deviceId = tokens.verify(first, 7, 0, now);
    const renewed = tokens.issue(7, 0, deviceId, later(30));
    expect(renewed).not.toBe(first);
    expect(tokens.verify(renewed, 7, 0, later(100))).toBe(deviceId);
  });

  it('refuses a token whose device, expiry or signature was changed', () => {
    const token = tokens.issue(7, 0, undefined, now);
    const [deviceId = '', expiry = '', mac = ''] = token.split('.');
    const otherDevice = randomBytes(16).toString('base64url');
    const flip = (text: string) => (text[0] === 'A' ? 'B' : 'A') + text.slice(1);
    for (const forged of [
      `${otherDevice}.${expiry}.${mac}`,
      `${deviceId}.${Number(expiry) + DAY_SECONDS}.${mac}`,
      `${deviceId}.${expiry}.${flip(mac)}`,
      `${deviceId}.${expiry}`,
      `${token}.x`,
      '',
    ]) {
      expect(tokens.verify(forged, 7, 0, now), forged).toBeUndefined();
    }
  });

  it('refuses a token signed under a secret not configured, and accepts one of a secret being rotated out', () => {
    const old = deriveDeviceTokenKey(generateSecret());
    const fromOld = createDeviceTokens([old], 90 * DAY_SECONDS).issue(7, 0, undefined, now);
    expect(tokens.verify(fromOld, 7, 0, now)).toBeUndefined();
    const rotating = createDeviceTokens([key, old], 90 * DAY_SECONDS);
    expect(rotating.verify(fromOld, 7, 0, now)).toBeDefined();
    expect(tokens.verify(rotating.issue(7, 0, undefined, now), 7, 0, now)).toBeDefined();
  });

  it('refuses a token issued before the trust generation of its user was raised (password change, signing out everywhere)', () => {
    const tokens = createDeviceTokens([createSecretKey(randomBytes(32))], 90 * DAY_SECONDS);
    const token = tokens.issue(7, 0, undefined, now);
    expect(tokens.verify(token, 7, 0, now)).toBeDefined();
    expect(tokens.verify(token, 7, 1, now)).toBeUndefined();
    expect(tokens.verify(tokens.issue(7, 1, undefined, now), 7, 1, now)).toBeDefined();
  });
});
