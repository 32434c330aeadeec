import { parentPort } from 'node:worker_threads';
import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import { adjacencyGraphs, dictionary } from '@zxcvbn-ts/language-common';

export interface StrengthRequest {
  id: number;
  password: string;
  userInputs: string[];
}

export interface StrengthAnswer {
  id: number;
  score: number;
  warning: string | null;
}

// zxcvbn's matching grows faster than linearly with length: 64 characters cost ~45 ms here, 128 cost ~110 ms.
// Its docs advise a limit; a password whose first 64 characters are guessable is refused as a whole.
export const ZXCVBN_MAX_LENGTH = 64;

const estimator = new ZxcvbnFactory({ dictionary, graphs: adjacencyGraphs, maxLength: ZXCVBN_MAX_LENGTH });

parentPort?.on('message', ({ id, password, userInputs }: StrengthRequest) => {
  const estimate = estimator.check(password, userInputs);
  parentPort?.postMessage({
    id,
    score: estimate.score,
    warning: estimate.feedback.warning,
  } satisfies StrengthAnswer);
});
