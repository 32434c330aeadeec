import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { Config } from '../config.ts';
import { type FastapiSeedDatabase, openFastapiSeedDatabase, SeedDatabaseError } from '../db/fastapi-seed.ts';
import { createImportedUsersRepository } from '../db/imported-users.ts';
import { systemClock } from '../security/clock.ts';
import { type FastapiImportSummary, importFastapiUsers } from '../services/fastapi-import.ts';
import { openDatabase } from './open-database.ts';

const USAGE = `usage: gatehouse import fastapi PATH [--json]

Imports the users of the FastAPI seed's SQLite database (its app.db) into Gatehouse's database (DATABASE_URL):
ids where free, usernames, emails, ages, levels and bcrypt hashes (upgraded to argon2id at each user's next login),
each with their conversation. Rows Gatehouse cannot take are reported and skipped; running it again imports only
what is new. Exit code 0 when the import ran, 1 when PATH cannot be read or is not the seed's database, 2 on usage.

  --json   print the summary as JSON
  --help   print this help`;

/** Where progress goes: stderr, so that stdout holds only the summary (JSON with --json). */
export interface ProgressTerminal {
  /** Whether a person watches: a bar redrawn in place; otherwise plain lines, as a log wants them. */
  isTTY: boolean;
  write(text: string): void;
}

const processTerminal: ProgressTerminal = {
  isTTY: Boolean(process.stdout.isTTY && process.stderr.isTTY),
  write: (text) => process.stderr.write(text),
};

// Fewer rows take a moment, and a bar would only flash.
const PROGRESS_FROM_ROWS = 1000;
const BAR_WIDTH = 30;
const BAR_REDRAW_MS = 100;
const LINE_EVERY_MS = 2000;

/**
 * `gatehouse import fastapi PATH [--json]` (args: what follows `import fastapi`): imports the FastAPI seed's users;
 * returns the process exit code.
 */
export async function runImportFastapiCommand(
  config: Config,
  args: string[],
  print: (line: string) => void,
  terminal: ProgressTerminal = processTerminal,
): Promise<number> {
  // What went wrong goes where the progress goes (stderr), never among the summary that --json prints.
  const warn = (line: string) => terminal.write(`${line}\n`);
  let values: { json?: boolean; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args,
      options: { json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
    }));
  } catch (error) {
    warn(`gatehouse import fastapi: ${(error as Error).message}`);
    warn(USAGE);
    return 2;
  }
  if (values.help) {
    print(USAGE);
    return 0;
  }
  const [path] = positionals;
  if (path === undefined || positionals.length !== 1) {
    warn(USAGE);
    return 2;
  }

  let seed: FastapiSeedDatabase;
  try {
    seed = openFastapiSeedDatabase(path);
  } catch (error) {
    if (!(error instanceof SeedDatabaseError)) throw error;
    warn(`gatehouse import fastapi: ${error.message}`);
    return 1;
  }
  try {
    const { handle } = await openDatabase(config, (line) => terminal.write(`gatehouse: warning: ${line}\n`));
    try {
      const progress = createProgress(terminal, seed.count);
      const summary = await importFastapiUsers(seed, {
        importedUsers: createImportedUsersRepository(handle.db, handle.dialect),
        clock: systemClock,
        onProgress: progress.update,
      });
      progress.finish();
      for (const line of values.json
        ? [JSON.stringify(toJson(resolve(path), summary))]
        : describe(summary, path))
        print(line);
      return 0;
    } finally {
      await handle.close();
    }
  } finally {
    seed.close();
  }
}

function createProgress(terminal: ProgressTerminal, total: number) {
  let shownAt = Number.NEGATIVE_INFINITY;
  let shown = false;
  const started = performance.now();
  const draw = (done: number, final: boolean) => {
    const now = performance.now();
    if (!final && now - shownAt < (terminal.isTTY ? BAR_REDRAW_MS : LINE_EVERY_MS)) return;
    shownAt = now;
    shown = true;
    const share = total === 0 ? 1 : Math.min(1, done / total);
    const percent = `${Math.floor(share * 100)}%`;
    const seconds = ((now - started) / 1000).toFixed(1);
    if (terminal.isTTY) {
      const bar = '#'.repeat(Math.floor(share * BAR_WIDTH)).padEnd(BAR_WIDTH, '.');
      terminal.write(`\r[${bar}] ${percent.padStart(4)} ${done}/${total} rows, ${seconds} s`);
    } else terminal.write(`import fastapi: ${done}/${total} rows (${percent}), ${seconds} s\n`);
  };
  return {
    update: (done: number) => {
      if (total >= PROGRESS_FROM_ROWS && done < total) draw(done, false);
    },
    finish: () => {
      if (total < PROGRESS_FROM_ROWS) return;
      draw(total, true);
      if (terminal.isTTY && shown) terminal.write('\n');
    },
  };
}

function toJson(source: string, summary: FastapiImportSummary) {
  return {
    source,
    read: summary.read,
    imported: summary.imported,
    already_present: summary.alreadyPresent.length,
    skipped: summary.skipped.map((row) => ({
      source_id: sourceId(row.sourceId),
      username: row.username,
      code: row.code,
      reason: row.reason,
    })),
    renumbered: summary.renumbered.map((user) => ({
      source_id: sourceId(user.sourceId),
      id: user.id,
      username: user.username,
      reason: user.reason,
    })),
  };
}

// SQLite ids reach 2^63 - 1; JSON numbers stay exact only to 2^53.
const sourceId = (id: bigint) =>
  id <= BigInt(Number.MAX_SAFE_INTEGER) && id >= -BigInt(Number.MAX_SAFE_INTEGER) ? Number(id) : String(id);

const NAMES_SHOWN = 10;

function describe(summary: FastapiImportSummary, path: string): string[] {
  const kept = summary.imported - summary.renumbered.length;
  const lines = [
    `imported ${summary.imported} of ${summary.read} users from ${path} (${kept} kept their id, ${summary.renumbered.length} got a new one)`,
  ];
  const present = summary.alreadyPresent;
  const names = present.slice(0, NAMES_SHOWN).map((user) => user.username);
  const more = present.length > NAMES_SHOWN ? `, and ${present.length - NAMES_SHOWN} more` : '';
  lines.push(
    `already present: ${present.length}${present.length > 0 ? ` (${names.join(', ')}${more})` : ''}`,
  );
  lines.push(`skipped: ${summary.skipped.length}`);
  for (const row of summary.skipped) {
    const name = row.username === null ? 'no username' : JSON.stringify(row.username);
    lines.push(`  source id ${row.sourceId} ${name}: ${row.code}: ${row.reason}`);
  }
  if (summary.renumbered.length > 0) {
    lines.push('new ids:');
    for (const user of summary.renumbered) {
      lines.push(`  source id ${user.sourceId} "${user.username}" is now id ${user.id}: ${user.reason}`);
    }
  }
  if (summary.skipped.length > 0) {
    lines.push('Correct the skipped rows in the seed database (or in Gatehouse) and run the import again.');
  }
  return lines;
}
