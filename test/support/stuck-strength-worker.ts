import { parentPort } from 'node:worker_threads';
import type { StrengthAnswer, StrengthRequest } from '../../src/security/password-strength-worker.ts';

// A stand-in for zxcvbn caught in a runaway estimate: a password starting with "stuck" blocks the thread for good
// (without spinning a core); any other is answered at once as strong.
parentPort?.on('message', ({ id, password }: StrengthRequest) => {
  if (password.startsWith('stuck')) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  parentPort?.postMessage({ id, score: 4, warning: null } satisfies StrengthAnswer);
});
