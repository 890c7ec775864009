#!/usr/bin/env node
// postinstall's second step: builds dist/ with TypeScript, which is a dev dependency; an install without dev
// dependencies (`npm ci --omit=dev`) keeps a dist/ built before, and fails with what to do when there is none.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const dist = join(root, 'dist', 'index.js');

if (existsSync(tsc)) {
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
if (existsSync(dist)) {
  process.stderr.write('[pneumotype] TypeScript is not installed (dev dependencies omitted): using the dist/ built before\n');
  process.exit(0);
}
process.stderr.write(
  `[pneumotype] cannot build ${dist}: TypeScript is a dev dependency and this install omitted them (--omit=dev, ` +
    'NODE_ENV=production). Install once with dev dependencies (npm ci), which builds dist/, then remove them with ' +
    '`npm prune --omit=dev`\n',
);
process.exit(1);
