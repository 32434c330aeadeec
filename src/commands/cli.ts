import { readFileSync } from 'node:fs';
import { type ParseArgsOptionsConfig, parseArgs } from 'node:util';
import type { Config } from '../config.ts';
import { generateSecret } from '../security/secret-box.ts';
import { runImportFastapiCommand } from './import-fastapi.ts';
import { listKeysCommand, retireKeyCommand, rotateKeyCommand } from './keys.ts';
import { listMailsCommand, showMailCommand } from './mail.ts';
import { runMigrateCommand } from './migrate.ts';
import type { CommandIo } from './output.ts';
import { runSecretCommand, type SecretSource } from './secret.ts';
import { runSeedUsersCommand } from './seed-users.ts';
import {
  type CommandInput,
  deleteUserCommand,
  disableUserCommand,
  EXIT_OK,
  EXIT_USAGE,
  enableUserCommand,
  grantRoleCommand,
  listSessionsCommand,
  listUsersCommand,
  resetMfaCommand,
  revokeRoleCommand,
  revokeSessionsCommand,
  showUserCommand,
  unlockUserCommand,
  userEventsCommand,
} from './users.ts';

/** What a configured command gets beyond its arguments. */
export interface CommandEnvironment {
  config: Config;
  secretSource: SecretSource;
}

export interface CommandSpec {
  /** The words that name it: `users list`. */
  name: string;
  summary: string;
  /** Its arguments and options, after the name. */
  usage: string;
  options?: ParseArgsOptionsConfig;
  /** Descriptions of the options, by name, for its help. */
  optionHelp?: Readonly<Record<string, string>>;
  /** How many positional arguments it takes, at least and at most. */
  positionals?: readonly [number, number];
  /** Options it cannot run without. */
  requiredOptions?: readonly string[];
  examples: readonly string[];
  /**
   * Makes the SQLite database when its file does not exist yet, as a server start does; every other command refuses
   * such a path, where a typo in DATABASE_URL would otherwise leave an empty database that seems to have lost every user.
   */
  createsDatabase?: boolean;
  /** Runs without reading the configuration (and without making secret.key). */
  unconfigured?: (input: Pick<CommandInput, 'options' | 'positionals' | 'io'>) => number;
  run?: (input: CommandInput, environment: CommandEnvironment, rawArgs: readonly string[]) => Promise<number>;
}

export type Resolution =
  | { kind: 'help'; text: string }
  | { kind: 'usage'; message: string; help: string }
  | { kind: 'serve' }
  | {
      kind: 'command';
      command: CommandSpec;
      options: Record<string, string | boolean | undefined>;
      positionals: string[];
      rawArgs: string[];
    };

const JSON_OPTION: ParseArgsOptionsConfig = { json: { type: 'boolean' } };
const JSON_HELP = { json: 'print JSON instead of a table' };

// Every command, in the order help lists them.
export const COMMANDS: readonly CommandSpec[] = [
  {
    name: 'serve',
    summary: 'start the server (what `gatehouse` alone does)',
    usage: '',
    examples: ['gatehouse', 'PORT=8080 gatehouse serve'],
  },
  {
    name: 'users list',
    summary: 'list users in id order, a page at a time',
    usage: '[--search TEXT] [--limit N] [--cursor C] [--json]',
    options: {
      search: { type: 'string' },
      limit: { type: 'string' },
      cursor: { type: 'string' },
      ...JSON_OPTION,
    },
    optionHelp: {
      search: 'only users whose username or email contains TEXT (any letter case)',
      limit: 'users per page, 1 to 100 (default 50)',
      cursor: 'the next page, as the previous one said',
      ...JSON_HELP,
    },
    examples: ['gatehouse users list --search example.com --limit 20', 'gatehouse users list --json'],
    run: listUsersCommand,
  },
  {
    name: 'users show',
    summary: 'show an account: roles, status, live sessions, last login',
    usage: 'NAME [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['gatehouse users show alice'],
    run: showUserCommand,
  },
  {
    name: 'users disable',
    summary: 'stop an account from logging in and end its sessions at once',
    usage: 'NAME [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['gatehouse users disable mallory'],
    run: disableUserCommand,
  },
  {
    name: 'users enable',
    summary: 'let a disabled account log in again',
    usage: 'NAME [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['gatehouse users enable mallory'],
    run: enableUserCommand,
  },
  {
    name: 'users unlock',
    summary:
      'forget the failed logins and second-factor failures counted against an account (needs REDIS_URL; else use the admin API)',
    usage: 'NAME [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['REDIS_URL=redis://127.0.0.1:6379 gatehouse users unlock alice'],
    run: unlockUserCommand,
  },
  {
    name: 'users reset-mfa',
    summary:
      'remove every second factor of an account (authenticator app, recovery codes, passkeys) when its user lost them',
    usage: 'NAME [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['gatehouse users reset-mfa alice'],
    run: resetMfaCommand,
  },
  {
    name: 'users delete',
    summary: 'delete an account with its conversation and sessions',
    usage: 'NAME [--yes] [--json]',
    options: { yes: { type: 'boolean' }, ...JSON_OPTION },
    optionHelp: { yes: 'do not ask for confirmation (needed when stdin is not a terminal)', ...JSON_HELP },
    positionals: [1, 1],
    examples: ['gatehouse users delete mallory --yes'],
    run: deleteUserCommand,
  },
  {
    name: 'users grant-role',
    summary: 'give an account a role (admin)',
    usage: 'NAME ROLE [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [2, 2],
    examples: ['gatehouse users grant-role alice admin'],
    run: grantRoleCommand,
  },
  {
    name: 'users revoke-role',
    summary: 'take a role (admin) from an account',
    usage: 'NAME ROLE [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [2, 2],
    examples: ['gatehouse users revoke-role alice admin'],
    run: revokeRoleCommand,
  },
  {
    name: 'users events',
    summary: "an account's audit events, newest first",
    usage: 'NAME [--limit N] [--before C] [--json]',
    options: { limit: { type: 'string' }, before: { type: 'string' }, ...JSON_OPTION },
    optionHelp: {
      limit: 'events per page, 1 to 100 (default 20)',
      before: 'the next page, as the previous one said',
      ...JSON_HELP,
    },
    positionals: [1, 1],
    examples: ['gatehouse users events alice --limit 50'],
    run: userEventsCommand,
  },
  {
    name: 'sessions list',
    summary: "an account's live sessions, newest first",
    usage: '--user NAME [--json]',
    options: { user: { type: 'string' }, ...JSON_OPTION },
    optionHelp: { user: 'the account', ...JSON_HELP },
    requiredOptions: ['user'],
    examples: ['gatehouse sessions list --user alice'],
    run: listSessionsCommand,
  },
  {
    name: 'sessions revoke',
    summary: "end one of an account's sessions, or all of them",
    usage: '--user NAME [--session ID] [--json]',
    options: { user: { type: 'string' }, session: { type: 'string' }, ...JSON_OPTION },
    optionHelp: { user: 'the account', session: 'only this session (else all of them)', ...JSON_HELP },
    requiredOptions: ['user'],
    examples: [
      'gatehouse sessions revoke --user alice',
      'gatehouse sessions revoke --user alice --session 3q2-7Yh',
    ],
    run: revokeSessionsCommand,
  },
  {
    name: 'keys list',
    summary: 'signing keys: kid, state (signing, verifying, retired), created',
    usage: '[--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    examples: ['gatehouse keys list'],
    run: listKeysCommand,
  },
  {
    name: 'keys rotate',
    summary: 'a new Ed25519 signing key; every instance signs with it from its next login',
    usage: '[--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    examples: ['gatehouse keys rotate'],
    run: rotateKeyCommand,
  },
  {
    name: 'keys retire',
    summary: "refuse a key's tokens now (a leaked key); rotate first if it signs",
    usage: 'KID [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['gatehouse keys retire 0c6f2a1e'],
    run: retireKeyCommand,
  },
  {
    name: 'mail list',
    summary: 'the mail outbox, newest first: recipient, template, status (queued, sent, failed), attempts',
    usage: '[--limit N] [--before ID] [--json]',
    options: { limit: { type: 'string' }, before: { type: 'string' }, ...JSON_OPTION },
    optionHelp: {
      limit: 'mails per page, 1 to 100 (default 20)',
      before: 'the next page, as the previous one said',
      ...JSON_HELP,
    },
    examples: ['gatehouse mail list', 'gatehouse mail list --limit 5 --json'],
    run: listMailsCommand,
  },
  {
    name: 'mail show',
    summary: "a mail's headers and text, its link included (for development without SMTP_URL)",
    usage: 'ID [--json]',
    options: JSON_OPTION,
    optionHelp: JSON_HELP,
    positionals: [1, 1],
    examples: ['gatehouse mail show 12'],
    run: showMailCommand,
  },
  {
    name: 'migrate',
    summary: 'apply pending database migrations',
    usage: '',
    examples: ['DATABASE_URL=postgres://gatehouse@db/gatehouse gatehouse migrate'],
    createsDatabase: true,
    run: (i) => runMigrateCommand(i.config, i.io.print),
  },
  {
    name: 'import fastapi',
    summary: "import the FastAPI seed's users from its SQLite database (again: only what is new)",
    usage: 'PATH [--json]',
    options: JSON_OPTION,
    optionHelp: { json: 'print the summary as JSON' },
    positionals: [1, 1],
    examples: ['gatehouse import fastapi ./app.db', 'gatehouse import fastapi /srv/fastapi/app.db --json'],
    createsDatabase: true,
    // Its progress goes to the process's stderr, as a bar only when a person watches (import-fastapi.ts decides).
    run: (i, _environment, rawArgs) => runImportFastapiCommand(i.config, [...rawArgs], i.io.print),
  },
  {
    name: 'seed-users',
    summary: 'fill a benchmark database with N users sharing one published password',
    usage: '--count N [--allow-real-users]',
    options: { count: { type: 'string' }, 'allow-real-users': { type: 'boolean' } },
    optionHelp: {
      count: 'how many users to add',
      'allow-real-users': 'add them even to a database that holds users seed-users did not create',
    },
    requiredOptions: ['count'],
    examples: ['gatehouse seed-users --count 10000'],
    createsDatabase: true,
    run: (i, _environment, rawArgs) =>
      runSeedUsersCommand(i.config, [...rawArgs], i.io.print, i.io.progress, i.io.warn),
  },
  {
    name: 'secret generate',
    summary: 'print a new GATEHOUSE_SECRET',
    usage: '',
    examples: ['gatehouse secret generate'],
    unconfigured: ({ io }) => {
      io.print(generateSecret());
      return EXIT_OK;
    },
  },
  {
    name: 'secret rotate',
    summary: 're-seal the private keys with the first secret of GATEHOUSE_SECRET ("new,old")',
    usage: '',
    examples: ['GATEHOUSE_SECRET="$NEW,$OLD" gatehouse secret rotate'],
    run: (i, environment) => runSecretCommand(i.config, environment.secretSource, ['rotate'], i.io.print),
  },
  {
    name: 'version',
    summary: 'print the version of Gatehouse and of Node.js',
    usage: '',
    examples: ['gatehouse version'],
    unconfigured: ({ io }) => {
      const { version } = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
      io.print(`gatehouse ${version} (Node.js ${process.version})`);
      return EXIT_OK;
    },
  },
];

const HELP_FLAGS = new Set(['--help', '-h']);

const groupOf = (name: string) => name.split(' ')[0] ?? '';

function topHelp(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length));
  return [
    'usage: gatehouse [COMMAND] [OPTIONS]',
    '',
    'Gatehouse, an authentication service. Without a command, starts the server. Commands read the same',
    'configuration as the server (environment variables and .env; see the README).',
    '',
    'commands:',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    'Run `gatehouse COMMAND --help` for its options and an example. Listing and showing commands print a',
    'table, or JSON with --json. Exit status: 0 done, 1 not found or refused, 2 wrong usage.',
  ].join('\n');
}

function groupHelp(group: string): string {
  const members = COMMANDS.filter((command) => groupOf(command.name) === group);
  const width = Math.max(...members.map((command) => command.name.length));
  return [
    `usage: gatehouse ${group} ${members.map((command) => command.name.split(' ')[1]).join('|')} ...`,
    '',
    ...members.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    `Run \`gatehouse ${group} COMMAND --help\` for its options and an example.`,
  ].join('\n');
}

const usageLine = (command: CommandSpec) => `usage: gatehouse ${command.name} ${command.usage}`.trimEnd();

export function commandHelp(command: CommandSpec): string {
  const options = Object.entries(command.optionHelp ?? {});
  const width = Math.max(0, ...options.map(([name]) => name.length + 2));
  return [
    usageLine(command),
    '',
    `${command.summary[0]?.toUpperCase()}${command.summary.slice(1)}.`,
    ...(options.length > 0
      ? ['', 'options:', ...options.map(([name, text]) => `  ${`--${name}`.padEnd(width)}  ${text}`)]
      : []),
    '',
    command.examples.length > 1 ? 'examples:' : 'example:',
    ...command.examples.map((example) => `  ${example}`),
  ].join('\n');
}

/** Reads a command line: the command it names with its parsed arguments, a help text, or a usage error. */
export function resolveCommandLine(argv: readonly string[]): Resolution {
  const [first, second] = argv;
  if (first === undefined) return { kind: 'serve' };
  if (HELP_FLAGS.has(first) || first === 'help') {
    const topic = second;
    if (topic === undefined) return { kind: 'help', text: topHelp() };
    return resolveCommandLine([...argv.slice(1), '--help']);
  }
  const single = COMMANDS.find((command) => command.name === first);
  const inGroup = COMMANDS.some((command) => groupOf(command.name) === first && command.name !== first);
  let command: CommandSpec | undefined;
  let rest: string[];
  if (single) {
    command = single;
    rest = argv.slice(1);
  } else if (inGroup) {
    if (second === undefined || HELP_FLAGS.has(second)) {
      return second === undefined
        ? { kind: 'usage', message: `gatehouse ${first}: which one?`, help: groupHelp(first) }
        : { kind: 'help', text: groupHelp(first) };
    }
    command = COMMANDS.find((candidate) => candidate.name === `${first} ${second}`);
    if (!command) {
      return {
        kind: 'usage',
        message: `gatehouse ${first}: unknown command "${second}"`,
        help: groupHelp(first),
      };
    }
    rest = argv.slice(2);
  } else {
    return { kind: 'usage', message: `gatehouse: unknown command "${first}"`, help: topHelp() };
  }
  const endOfOptions = rest.indexOf('--');
  if ((endOfOptions === -1 ? rest : rest.slice(0, endOfOptions)).some((arg) => HELP_FLAGS.has(arg))) {
    return { kind: 'help', text: commandHelp(command) };
  }
  if (command.name === 'serve') {
    if (rest.length > 0) return usage(command, `unexpected argument "${rest[0]}"`);
    return { kind: 'serve' };
  }
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args: bindDashedValues(rest, command.options ?? {}),
      options: command.options ?? {},
      allowPositionals: true,
      strict: true,
    });
  } catch (error) {
    return usage(command, (error as Error).message);
  }
  const [min, max] = command.positionals ?? [0, 0];
  if (parsed.positionals.length < min) return usage(command, 'missing argument');
  if (parsed.positionals.length > max)
    return usage(command, `unexpected argument "${parsed.positionals[max]}"`);
  for (const name of command.requiredOptions ?? []) {
    if (parsed.values[name] === undefined) return usage(command, `--${name} is required`);
  }
  return {
    kind: 'command',
    command,
    options: parsed.values as Record<string, string | boolean | undefined>,
    positionals: parsed.positionals,
    rawArgs: rest,
  };
}

/**
 * Joins `--name -value` into `--name=-value` for a string option when `-value` is not an option itself: parseArgs
 * calls such a value ambiguous, and session ids (base64url) start with a dash one time in 64.
 */
function bindDashedValues(args: readonly string[], options: ParseArgsOptionsConfig): string[] {
  const known = new Set(
    Object.entries(options).flatMap(([name, option]) => [
      `--${name}`,
      ...(option.short ? [`-${option.short}`] : []),
    ]),
  );
  const bound: string[] = [];
  for (let i = 0; i < args.length; i += 1) {
    const arg = args[i] as string;
    const next = args[i + 1];
    const option = arg.startsWith('--') ? options[arg.slice(2)] : undefined;
    if (option?.type === 'string' && next?.startsWith('-') && next !== '--' && !known.has(next)) {
      bound.push(`${arg}=${next}`);
      i += 1;
    } else {
      bound.push(arg);
    }
    if (arg === '--') {
      bound.push(...args.slice(i + 1));
      break;
    }
  }
  return bound;
}

function usage(command: CommandSpec, problem: string): Resolution {
  return { kind: 'usage', message: `gatehouse ${command.name}: ${problem}`, help: usageLine(command) };
}

/** Runs a resolved command; returns the process's exit status. */
export async function runCommand(
  resolution: Extract<Resolution, { kind: 'command' }>,
  io: CommandIo,
  environment: (command: CommandSpec) => CommandEnvironment,
): Promise<number> {
  const { command, options, positionals, rawArgs } = resolution;
  if (command.unconfigured) return command.unconfigured({ options, positionals, io });
  if (!command.run) return EXIT_USAGE;
  const env = environment(command);
  return command.run({ config: env.config, options, positionals, io }, env, rawArgs);
}
