// node bench/key-objects.ts [N]: HMAC-SHA256 and AES-256-GCM with a key given as bytes against one made a KeyObject
// once, in µs per operation. Node 24 makes a key object from bytes on every call; the keys used per request
// (refresh-token derivation, device tokens, throttling's address key, the secret box) are made KeyObjects at start.
import { createCipheriv, createHmac, createSecretKey, randomBytes } from 'node:crypto';

const rounds = Number(process.argv[2] ?? 20_000);
const bytes = randomBytes(32);
const keyObject = createSecretKey(bytes);
const iv = randomBytes(12);
const operations = {
  hmac: (key: Buffer | typeof keyObject, i: number) =>
    createHmac('sha256', key).update(`device-token\0${i}`).digest(),
  aesGcm: (key: Buffer | typeof keyObject) => {
    const cipher = createCipheriv('aes-256-gcm', key, iv);
    cipher.update('a sealed secret');
    cipher.final();
    return cipher.getAuthTag();
  },
};
const microsPerOperation = (run: (i: number) => unknown) => {
  const start = process.hrtime.bigint();
  for (let i = 0; i < rounds; i += 1) run(i);
  return Number(process.hrtime.bigint() - start) / rounds / 1000;
};
const result: Record<string, { bytes: number; keyObject: number }> = {};
for (const [name, operation] of Object.entries(operations)) {
  // Twice each, alternated: the first round of either warms the JIT.
  let fromBytes = 0;
  let fromKeyObject = 0;
  for (let round = 0; round < 2; round += 1) {
    fromBytes = microsPerOperation((i) => operation(bytes, i));
    fromKeyObject = microsPerOperation((i) => operation(keyObject, i));
  }
  result[name] = { bytes: Number(fromBytes.toFixed(2)), keyObject: Number(fromKeyObject.toFixed(2)) };
}
console.log(JSON.stringify({ node: process.version, rounds, microsPerOperation: result }));
