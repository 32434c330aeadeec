import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createDeviceTokens } from '../../src/security/device-tokens.ts';
import { deriveSuccessor } from '../../src/security/refresh-tokens.ts';
import {
  createSecretBox,
  deriveDeviceTokenKey,
  deriveMailAddressKey,
  deriveRefreshTokenKey,
  secretKeyId,
} from '../../src/security/secret-box.ts';

// Known answers, computed once from fixed secrets: what a running deployment stored or handed out (sealed rows,
// refresh-token families, device tokens, counter keys in Redis) must keep its meaning across releases. The other
// suites compare the code with itself and would not notice a derivation that changed for everyone at once.
const SECRET = Buffer.alloc(32, 7).toString('base64url');
const OLD_SECRET = Buffer.alloc(32, 9).toString('base64url');

describe('keys derived from GATEHOUSE_SECRET, against known answers', () => {
  it('names each secret by the same key id', () => {
    expect(secretKeyId(SECRET)).toBe('Pq-oE-4QDir3');
    expect(secretKeyId(OLD_SECRET)).toBe('UjppRapQZLFO');
  });

  it("derives a refresh token's successor as before", () => {
    const parent = {
      id: Buffer.alloc(16, 1).toString('base64url'),
      secret: Buffer.alloc(32, 2).toString('base64url'),
    };
    expect(deriveSuccessor(parent, deriveRefreshTokenKey(SECRET))).toEqual({
      id: 'oaEkauRPq3-fBP5_XNEIew',
      secret: 'C5LhXa_A5JTrumt8u9JhfNQOUHunSpDf12BH6XwVfGM',
    });
  });

  it('issues the same device token and accepts it', () => {
    const tokens = createDeviceTokens([deriveDeviceTokenKey(SECRET)], 90 * 86400);
    const deviceId = Buffer.alloc(16, 5).toString('base64url');
    const now = new Date('2026-12-07T00:00:00Z');
    const token = 'BQUFBQUFBQUFBQUFBQUFBQ.1804377600.gk6KZxo4l6Ywg5dDVcdPUBwz_JSfpwSNhebOMFf31h0';
    expect(tokens.issue(7, 3, deviceId, now)).toBe(token);
    expect(tokens.verify(token, 7, 3, now)).toBe(deviceId);
    expect(tokens.verify(token, 7, 4, now)).toBeUndefined();
  });

  it("keys throttling's address names as before", () => {
    const named = createHmac('sha256', deriveMailAddressKey(SECRET))
      .update('alice@example.com')
      .digest('base64url')
      .slice(0, 24);
    expect(named).toBe('onV5A9A4CPqdxG86W88-3Qwv');
  });

  it('opens a value sealed under a secret now second in the list, and only in its context', () => {
    const sealed = 'gh1:UjppRapQZLFO:Q5Xrx2P8y-GRhSU5:kYgM1Ts7krmri54c1DnE:sLh_aaK-1WxY0ChRtVymHA';
    const box = createSecretBox([SECRET, OLD_SECRET]);
    expect(box.open(sealed, 'mfa_factors:f1:7')).toBe('a sealed secret');
    expect(() => box.open(sealed, 'mfa_factors:f1:8')).toThrow();
    expect(box.sealingKeyId).toBe('Pq-oE-4QDir3');
  });
});
