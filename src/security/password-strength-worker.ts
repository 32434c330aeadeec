import { parentPort } from 'node:worker_threads';
import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import { adjacencyGraphs, dictionary } from '@zxcvbn-ts/language-common';

export interface StrengthRequest {
  id: number;
  password: string;
  userInputs: string[];
}

export type StrengthAnswer =
  | { id: number; score: number; warning: string | null }
  /** The estimate threw; only the error's class crosses over, since its message may quote the password. */
  | { id: number; failedWith: string };

// zxcvbn's matching grows faster than linearly with length: 64 characters cost ~45 ms here, 128 cost ~110 ms.
// Its docs advise a limit; a password whose first 64 characters are guessable is refused as a whole.
export const ZXCVBN_MAX_LENGTH = 64;

const estimator = new ZxcvbnFactory({ dictionary, graphs: adjacencyGraphs, maxLength: ZXCVBN_MAX_LENGTH });

parentPort?.on('message', ({ id, password, userInputs }: StrengthRequest) => {
  let answer: StrengthAnswer;
  try {
    const estimate = estimator.check(password, userInputs);
    answer = { id, score: estimate.score, warning: estimate.feedback.warning };
  } catch (error) {
    answer = { id, failedWith: error instanceof Error ? error.name : typeof error };
  }
  parentPort?.postMessage(answer);
});
