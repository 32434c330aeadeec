import { build } from 'vite';

/** Builds the account page from web/ into dist/web, so that the servers under test serve what the sources say. */
export default async function setup(): Promise<void> {
  await build({ configFile: 'vite.config.ts', logLevel: 'warn' });
}
