// npm run bench [-- --quick] [-- --users N]
// Measures, in one run on this machine: the stack limit (bare node:http), the ceiling (node:http + jose), Gatehouse on SQLite and PostgreSQL,
// raw argon2id, Gatehouse /token and /register, /conversation while /token is flooded, two workers, and the
// FastAPI seed when its Debian packages are installed. Prints a Markdown table and writes bench/results/.
// A row is a file in bench/rows/; one that needs an earlier row's server or figures takes them as arguments.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { ceilingRow } from './rows/ceiling.ts';
import { conversationRows } from './rows/conversation.ts';
import { floodRows } from './rows/flood.ts';
import { refreshRow } from './rows/refresh.ts';
import { revocationCheck } from './rows/revocation.ts';
import { scaleRows } from './rows/scale.ts';
import { seedRows } from './rows/seed.ts';
import { tokenRows } from './rows/token.ts';
import { workersRow } from './rows/workers.ts';
import { createBench, log } from './support/context.ts';
import { stop } from './support/processes.ts';
import { report } from './support/report.ts';

const bench = createBench(process.argv.slice(2));
// As `npm ci` does (the prepare script), and through `npm start` itself, since Node keeps a cache per set of V8
// flags: a source file changed since would otherwise be compiled again by the first server measured, which would
// then also load TypeScript's type stripper and compile its WebAssembly on V8's worker threads during its row.
execFileSync('npm', ['start', '--silent', '--', 'version'], { cwd: bench.root, stdio: 'ignore' });
try {
  log(
    `${bench.quick ? 'quick' : 'full'} run, ${bench.seconds} s per measurement, ${bench.connections} connections, ${availableParallelism()} cores`,
  );
  // The three /conversation rows that the targets compare with the ceiling and the seed are measured next to
  // each other, since this machine's speed drifts within minutes.
  const stackLimit = await ceilingRow(bench, { unchecked: true });
  const ceiling = await ceilingRow(bench);
  const conversation = await conversationRows(bench);
  const seed = await seedRows(bench);
  const { sqlite } = conversation;
  const token = await tokenRows(bench, sqlite.server, sqlite.url);
  const refresh = await refreshRow(bench, sqlite.server);
  const flood = await floodRows(bench, sqlite);
  await workersRow(bench, sqlite.url);
  const revocation = revocationCheck(bench, sqlite.url, conversation.sqliteRow);
  await scaleRows(bench);
  report(bench, {
    stackLimit,
    ceiling,
    sqliteConversation: conversation.sqliteRow,
    postgresConversation: conversation.postgresRow,
    seedConversation: seed.conversation,
    seedToken: seed.token,
    token: token.token,
    tokenThrottled: token.tokenThrottled,
    register: token.register,
    refresh,
    argon2: token.argon2,
    flood: flood.idle,
    floodOverflow: flood.overflow,
    floodLow: flood.low,
    revocation,
  });
} finally {
  for (const child of bench.children) await stop(child);
  rmSync(bench.work, { recursive: true, force: true });
}
