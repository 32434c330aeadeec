import { createHash } from 'node:crypto';
import { AppError } from '../errors.ts';

export interface BreachedPasswords {
  /**
   * Resolves whether the password appears in a breach corpus. When that is unknown it reports why, then resolves false
   * (failing open) or throws service_unavailable (failing closed).
   */
  isBreached(password: string): Promise<boolean>;
}

export interface RangeApiOptions {
  /** Base URL of a Have I Been Pwned range API (https://api.pwnedpasswords.com), without a trailing slash. */
  apiUrl: string;
  /** For the whole answer, body included. */
  timeoutMs: number;
  /**
   * When the range API cannot answer: `open` accepts the password without the check, `closed` refuses the request
   * with service_unavailable (503) instead.
   */
  failure: 'open' | 'closed';
  /** Told why the range API could not be asked. */
  onUnavailable(reason: string): void;
}

// A real answer is about 800 to 1,000 lines of 40 bytes, padded; anything far larger is not one.
const MAX_ANSWER_BYTES = 256 * 1024;
const ENTRY = /^([0-9A-Fa-f]{35}):(\d+)$/;

class RangeUnavailable extends Error {}

/**
 * Builds the k-anonymity check of Have I Been Pwned's range API: only the first five hex digits of the password's
 * SHA-1 leave the process, with Add-Padding so that the answer's size says nothing of the prefix either. By default it
 * fails open: a slow or broken service must not stop registrations, and the common-password check still runs. Failing
 * closed throws service_unavailable, for deployments that would rather refuse a password than accept it unchecked.
 */
export function createBreachedPasswordsCheck(options: RangeApiOptions): BreachedPasswords {
  return {
    async isBreached(password) {
      const digest = createHash('sha1').update(password, 'utf8').digest('hex').toUpperCase();
      let entries: [suffix: string, count: number][];
      try {
        entries = parseRange(
          await fetchRange(`${options.apiUrl}/range/${digest.slice(0, 5)}`, options.timeoutMs),
        );
      } catch (error) {
        // Never the prefix: beside a user id in a log it would narrow an offline search of that user's hash
        // a millionfold. Only the kind of failure.
        options.onUnavailable(describeFailure(error, options.timeoutMs));
        if (options.failure === 'closed') {
          throw new AppError(
            'service_unavailable',
            'The breached-password check is unavailable; try again shortly',
            { unavailableReason: 'password_check_unavailable' },
          );
        }
        return false;
      }
      const suffix = digest.slice(5);
      // Padding entries carry a count of 0.
      return entries.some(([listed, count]) => listed === suffix && count > 0);
    },
  };
}

async function fetchRange(url: string, timeoutMs: number): Promise<string> {
  const response = await fetch(url, {
    headers: { 'add-padding': 'true', 'user-agent': 'gatehouse' },
    redirect: 'error',
    // Covers the body too: a service that sends its headers and then stalls is cut off as well.
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (response.status !== 200 || !response.body) {
    await response.body?.cancel();
    throw new RangeUnavailable(`answered HTTP ${response.status}`);
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of response.body) {
    size += chunk.byteLength;
    if (size > MAX_ANSWER_BYTES) throw new RangeUnavailable(`answered more than ${MAX_ANSWER_BYTES} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseRange(answer: string): [suffix: string, count: number][] {
  const entries = answer
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => ENTRY.exec(line.trim()));
  if (entries.length === 0 || entries.some((entry) => entry === null)) {
    throw new RangeUnavailable('answered something that is not a range');
  }
  return entries.map((entry) => [(entry?.[1] ?? '').toUpperCase(), Number(entry?.[2])]);
}

function describeFailure(error: unknown, timeoutMs: number): string {
  if (error instanceof RangeUnavailable) return error.message;
  const { name, cause } = error as { name?: string; cause?: { code?: unknown } };
  if (name === 'TimeoutError') return `no complete answer within ${timeoutMs} ms`;
  const code = typeof cause?.code === 'string' ? cause.code : name;
  return `unreachable (${code ?? 'unknown error'})`;
}
