import { execFileSync } from 'node:child_process';
import type { Bench, Row } from '../support/context.ts';

export interface RevocationCheck {
  userLookupCpuUs: number;
  userAndSessionCpuUs: number;
  extraCpuUsPerRequest: number;
  shareOfConversationCpu: number;
}

// Issue 4's revocation check: its extra CPU per request against the whole request's CPU.
export function revocationCheck(bench: Bench, sqliteUrl: string, conversation: Row): RevocationCheck {
  const revocation = JSON.parse(
    execFileSync(process.execPath, ['bench/revocation-check.ts', sqliteUrl, bench.quick ? '5000' : '20000'], {
      cwd: bench.root,
    }).toString(),
  ) as { userLookupCpuUs: number; userAndSessionCpuUs: number };
  const check = {
    ...revocation,
    extraCpuUsPerRequest: revocation.userAndSessionCpuUs - revocation.userLookupCpuUs,
    shareOfConversationCpu:
      (revocation.userAndSessionCpuUs - revocation.userLookupCpuUs) / (conversation.cpuMsPerRequest * 1000),
  };
  bench.extra.revocationCheck = check;
  return check;
}
