import { existsSync } from 'node:fs';
import closeWithGrace from 'close-with-grace';
import { buildApp } from './app.ts';
import { runKeysCommand } from './commands/keys.ts';
import { runMigrateCommand } from './commands/migrate.ts';
import { type Config, ConfigError, loadConfig } from './config.ts';
import { createDb } from './db/connect.ts';
import { migrateToLatest } from './db/migrate.ts';
import { systemClock } from './security/clock.ts';
import { createPasswordHasher } from './security/passwords.ts';

function readConfig(): Config {
  if (existsSync('.env')) process.loadEnvFile('.env');
  try {
    return loadConfig(process.env);
  } catch (error) {
    if (error instanceof ConfigError) {
      for (const problem of error.problems) console.error(`gatehouse: configuration error: ${problem}`);
      process.exit(1);
    }
    throw error;
  }
}

async function serve(config: Config): Promise<void> {
  const handle = createDb(config.database);
  try {
    await migrateToLatest(handle);
  } catch (error) {
    console.error(`gatehouse: cannot prepare the database: ${(error as Error).cause ?? error}`);
    await handle.close().catch(() => {});
    process.exit(1);
  }
  const app = await buildApp(config, {
    db: handle,
    clock: systemClock,
    passwords: createPasswordHasher(config.passwords.argon2),
  });

  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an error');
    else app.log.info({ signal }, 'shutting down: draining requests');
    const closing = app.close();
    // Keep-alive sockets whose request finished after close() began would otherwise hold the process open.
    const sweep = setInterval(() => app.server.closeIdleConnections(), 50);
    await closing.finally(() => clearInterval(sweep));
    await handle.close();
  });

  await app.listen({ host: config.host, port: config.port });
  app.log.info(
    { database: config.database.kind, algorithm: config.jwt.algorithm },
    `Gatehouse listening on http://${config.host}:${config.port} (docs at /docs)`,
  );
}

const [command = 'serve', ...args] = process.argv.slice(2);
const config = readConfig();
if (command === 'serve') {
  await serve(config);
} else {
  const print = (line: string) => console.log(line);
  try {
    if (command === 'migrate') process.exitCode = await runMigrateCommand(config, print);
    else if (command === 'keys') process.exitCode = await runKeysCommand(config, args, print);
    else {
      console.error('usage: node src/main.ts [serve | migrate | keys list|rotate|retire <kid>]');
      process.exitCode = 2;
    }
  } catch (error) {
    console.error(`gatehouse ${command}: ${(error as Error).cause ?? (error as Error).message}`);
    process.exitCode = 1;
  }
}
