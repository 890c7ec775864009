#!/usr/bin/env node
// postinstall's second step: builds dist/ with TypeScript, which is a dev dependency; an install without dev
// dependencies (`npm ci --omit=dev`) keeps a dist/ built before, and fails with what to do when there is none.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const tsc = join(root, 'node_modules', 'typescript', 'bin', 'tsc');
const dist = join(root, 'dist', 'index.js');
const built = [dist, join(root, 'dist', 'cli.js')];

/** The lib/ sources changed since `time` (ms), relative to the project folder. */
function newerSources(time) {
  const lib = join(root, 'lib');
  if (!existsSync(lib)) return [];
  return readdirSync(lib, { recursive: true })
    .map((f) => join('lib', String(f)))
    .filter((f) => f.endsWith('.ts') && statSync(join(root, f)).mtimeMs > time);
}

if (existsSync(tsc)) {
  const r = spawnSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
if (built.every((f) => existsSync(f))) {
  process.stderr.write('[pneumotype] TypeScript is not installed (dev dependencies omitted): using the dist/ built before\n');
  const newer = newerSources(Math.min(...built.map((f) => statSync(f).mtimeMs)));
  if (newer.length > 0) {
    process.stderr.write(
      `[pneumotype] warning: dist/ is older than ${newer.length} source file(s) (${newer.slice(0, 3).join(', ')}${newer.length > 3 ? ', …' : ''}): ` +
        'it may not match this checkout; install with dev dependencies (npm ci) to build it again\n',
    );
  }
  process.exit(0);
}
process.stderr.write(
  `[pneumotype] cannot build ${dist}: TypeScript is a dev dependency and this install omitted them (--omit=dev, ` +
    'NODE_ENV=production). Install once with dev dependencies (npm ci), which builds dist/, then remove them with ' +
    '`npm prune --omit=dev`\n',
);
process.exit(1);
