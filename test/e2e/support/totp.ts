/**
 * RFC 6238 codes computed in the test with node:crypto alone (SHA-1, 6 digits, 30 s), so that the page and the server
 * are checked against an implementation that shares no code with either.
 */
import { createHmac } from 'node:crypto';

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

export function base32Decode(text: string): Buffer {
  const clean = text.replace(/[\s=-]/g, '').toUpperCase();
  let bits = 0;
  let value = 0;
  const bytes: number[] = [];
  for (const char of clean) {
    const index = BASE32.indexOf(char);
    if (index < 0) throw new Error(`not base32: ${char}`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      bytes.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(bytes);
}

/** RFC 4226 HOTP for a counter. */
export function hotp(key: Buffer, counter: number): string {
  const message = Buffer.alloc(8);
  message.writeBigUInt64BE(BigInt(counter));
  const mac = createHmac('sha1', key).update(message).digest();
  const offset = (mac[mac.length - 1] ?? 0) & 0x0f;
  const binary = mac.readUInt32BE(offset) & 0x7fffffff;
  return String(binary % 1_000_000).padStart(6, '0');
}

/**
 * The code of the time step `offset` steps away from now. A step once used is refused again, so a test that uses
 * several codes within 30 s walks forward through the window the server accepts: -1, then 0, then +1.
 */
export function totpCode(secret: string, offset = 0, nowMs = Date.now()): string {
  return hotp(base32Decode(secret), Math.floor(nowMs / 30_000) + offset);
}

/**
 * The code of the step before now, taken with at least `marginMs` of the current step left (else in the next one): a
 * -1 code whose request crosses into the next step on its way is two steps old by then, and refused (seen once in CI).
 */
export async function previousStepCode(secret: string, marginMs = 5000): Promise<string> {
  const left = 30_000 - (Date.now() % 30_000);
  if (left < marginMs) await new Promise((resolve) => setTimeout(resolve, left + 50));
  return totpCode(secret, -1);
}
