import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const src = resolve(dirname(fileURLToPath(import.meta.url)), '../../src');

// src/README.md's layers: each may import only from itself and the layers listed.
const ALLOWED: Record<string, string[]> = {
  'main.ts': [
    'runtime-check.ts',
    'app.ts',
    'commands',
    'config.ts',
    'db',
    'http',
    'security',
    'services',
    'domain',
    'errors.ts',
  ],
  commands: ['app.ts', 'config.ts', 'db', 'security', 'services', 'domain', 'errors.ts'],
  'app.ts': ['config.ts', 'db', 'outbound', 'http', 'security', 'services', 'domain', 'errors.ts'],
  'config.ts': ['security', 'errors.ts'],
  http: ['services', 'domain', 'errors.ts'],
  services: ['security', 'db', 'domain', 'errors.ts'],
  security: ['domain', 'errors.ts'],
  db: ['domain', 'errors.ts'],
  outbound: ['domain', 'errors.ts'],
  domain: [],
  'errors.ts': [],
  'runtime-check.ts': [],
  'README.md': [],
};
const FRAMEWORK_FREE = new Set(['services', 'security', 'domain', 'errors.ts']);

function sourceFiles(directory: string): string[] {
  return readdirSync(directory, { withFileTypes: true }).flatMap((entry) => {
    const path = join(directory, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') ? [path] : [];
  });
}

const layerOf = (path: string) => relative(src, path).split('/')[0] ?? '';

function importsOf(path: string): string[] {
  const text = readFileSync(path, 'utf8');
  return [...text.matchAll(/(?:from|import)\s*\(?\s*'([^']+)'/g)].map((match) => match[1] ?? '');
}

describe('layers', () => {
  const files = sourceFiles(src).filter((path) => !relative(src, path).startsWith('db/migrations/'));

  it('knows the layer of every file under src/', () => {
    for (const path of files) expect(Object.keys(ALLOWED), relative(src, path)).toContain(layerOf(path));
  });

  it('imports only downwards, as src/README.md draws the layers', () => {
    const upward: string[] = [];
    for (const path of files) {
      const from = layerOf(path);
      for (const specifier of importsOf(path).filter((name) => name.startsWith('.'))) {
        const to = layerOf(resolve(dirname(path), specifier));
        if (to !== from && !ALLOWED[from]?.includes(to)) upward.push(`${relative(src, path)} → ${specifier}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('keeps Fastify, the database drivers and the rate-limit stores out of the rules', () => {
    const leaks: string[] = [];
    for (const path of files.filter((file) => FRAMEWORK_FREE.has(layerOf(file)))) {
      for (const specifier of importsOf(path)) {
        if (
          /^(fastify|@fastify\/|kysely|pg$|node:sqlite|ioredis|rate-limiter-flexible|nodemailer)/.test(
            specifier,
          )
        ) {
          leaks.push(`${relative(src, path)} → ${specifier}`);
        }
      }
    }
    expect(leaks).toEqual([]);
  });

  it('keeps migrations frozen: they import nothing from src/', () => {
    const migrations = sourceFiles(join(src, 'db/migrations'));
    expect(migrations.length).toBeGreaterThan(0);
    for (const path of migrations) {
      expect(
        importsOf(path).filter((name) => name.startsWith('.')),
        relative(src, path),
      ).toEqual([]);
    }
  });
});
