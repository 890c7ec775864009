// Writes every fixture archive of the zip tests (normal, v3-like and hostile) into a folder, for people to inspect.
// Usage: npx tsx scripts/make-fixtures.ts OUT_DIR
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { allFixtureZips } from '../test/helpers/zip-writer.js';

const outDir = process.argv[2];
if (outDir === undefined || process.argv.length > 3) {
  console.error('usage: npx tsx scripts/make-fixtures.ts OUT_DIR');
  process.exit(2);
}

await mkdir(outDir, { recursive: true });
const fixtures = await allFixtureZips();
const index: string[] = [];
for (const f of fixtures) {
  await writeFile(join(outDir, f.file), f.zip);
  index.push(`${f.file.padEnd(24)} ${String(f.zip.length).padStart(9)} bytes  ${f.description}`);
}
await writeFile(join(outDir, 'INDEX.txt'), `${index.join('\n')}\n`);
console.log(`wrote ${fixtures.length} archives to ${resolve(outDir)}:\n${index.join('\n')}`);
