import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import { adjacencyGraphs, dictionary } from '@zxcvbn-ts/language-common';

export type PasswordProblem =
  | { type: 'too_short'; minLength: number }
  | { type: 'too_long'; maxLength: number }
  | { type: 'control_character' }
  | { type: 'too_common'; reason: string };

export interface PasswordPolicy {
  /** Returns the first rule the password breaks, or undefined when it is acceptable. */
  check(password: string, userInputs: string[]): PasswordProblem | undefined;
}

// zxcvbn score 0–1 means fewer than 10^6 guesses: on or next to a common-password list.
const MINIMUM_SCORE = 2;

/** Builds the NIST 800-63B policy: length in code points, no composition rules, a common-password check. */
export function createPasswordPolicy(limits: { minLength: number; maxLength: number }): PasswordPolicy {
  const estimator = new ZxcvbnFactory({ dictionary, graphs: adjacencyGraphs, maxLength: 128 });
  return {
    check(password, userInputs) {
      const length = [...password].length;
      if (length < limits.minLength) return { type: 'too_short', minLength: limits.minLength };
      if (length > limits.maxLength) return { type: 'too_long', maxLength: limits.maxLength };
      if (/[\p{Cc}\p{Cs}]/u.test(password)) return { type: 'control_character' };
      const estimate = estimator.check(password, userInputs);
      if (estimate.score < MINIMUM_SCORE) {
        const warning = estimate.feedback.warning;
        return { type: 'too_common', reason: warning ? describeWarning(warning) : 'it is too easy to guess' };
      }
      return undefined;
    },
  };
}

function describeWarning(warning: string): string {
  switch (warning) {
    case 'userInputs':
      return 'it contains the username or email';
    case 'common':
    case 'topTen':
    case 'topHundred':
    case 'similarToCommon':
      return 'it is on or close to a list of common passwords';
    case 'sequences':
    case 'straightRow':
    case 'keyPattern':
      return 'it is a keyboard or character sequence';
    case 'simpleRepeat':
    case 'extendedRepeat':
      return 'it repeats characters';
    case 'dates':
    case 'recentYears':
      return 'it is a date or year';
    default:
      return 'it is too easy to guess';
  }
}
