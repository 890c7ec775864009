#!/usr/bin/env node
// The `pneumotype` command: runs the compiled CLI (build with `npm run build`; `npm install` does it).
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const cli = new URL('../dist/cli.js', import.meta.url);
if (!existsSync(fileURLToPath(cli))) {
  process.stderr.write('pneumotype: dist/cli.js is missing; run `npm install` (or `npm run build`) in the project first\n');
  process.exit(1);
}
const { runCli } = await import(cli.href);
await runCli();
