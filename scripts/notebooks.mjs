#!/usr/bin/env node
// Runs the notebooks headlessly: each executed in order with the tslab kernel through nbconvert, then exported as HTML.
//
// Usage: node scripts/notebooks.mjs [--out DIR] [--data DIR] [--run DIR] [--preset NAME] [--source SRC] [--only 01,03]
//        [--timeout SECONDS]
//   --out      where the HTML exports go (default data/reports; PNEUMOTYPE_REPORTS_DIR), executed notebooks in OUT/executed
//   --data     the notebooks' data folder (default data/notebooks; PNEUMOTYPE_DATA_DIR)
//   --run      the training run folder (default runs/notebooks-PRESET, cleared first; PNEUMOTYPE_RUN_DIR, kept)
//   --preset   smoke (default; PNEUMOTYPE_PRESET), cpu or gpu (tiny = smoke, as the CLI takes it)
//   --source   the dataset (PNEUMOTYPE_SOURCE; default ../shared/data/chest_xray_train_224.zip beside the checkout,
//              else, or with `--source fixture`, a small generated archive in DATA/fixture)
//   --only     run only the notebooks whose names start with these prefixes (they still need the earlier ones' data)
//   --timeout  seconds a cell may run (default 600 for smoke, none otherwise)
// Installs Jupyter and the tslab kernel first when they are missing (scripts/setup-notebooks.sh) and builds dist/ when
// it is missing or older than lib/. The HTML is made with a template that loads nothing from the network (no
// require.js, MathJax or mermaid from a CDN; plotly.js is inlined by the notebooks' first figure) and forbids requests
// with a Content-Security-Policy. Exits 1 at the first notebook with an error, after printing the failing cell.
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const VENV = process.env.PNEUMOTYPE_NOTEBOOK_VENV ? resolve(process.env.PNEUMOTYPE_NOTEBOOK_VENV) : join(ROOT, '.venv-notebooks');
const JUPYTER = join(VENV, 'bin', 'jupyter');
const TSLAB = join(ROOT, 'node_modules', '.bin', 'tslab');
const KERNEL_JSON = join(VENV, 'share', 'jupyter', 'kernels', 'tslab', 'kernel.json');
const SHARED_ZIP = resolve(ROOT, '..', 'shared', 'data', 'chest_xray_train_224.zip');
const PRESETS = ['smoke', 'cpu', 'gpu'];

const log = (msg) => process.stderr.write(`[notebooks] ${msg}\n`);
const fail = (msg) => {
  log(msg);
  process.exit(1);
};

const { values: args } = parseArgs({
  options: {
    out: { type: 'string' },
    data: { type: 'string' },
    run: { type: 'string' },
    preset: { type: 'string' },
    source: { type: 'string' },
    only: { type: 'string' },
    timeout: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});
if (args.help) {
  const lines = readFileSync(fileURLToPath(import.meta.url), 'utf8').split('\n').slice(1);
  const header = lines.slice(0, lines.findIndex((l) => !l.startsWith('//')));
  process.stdout.write(`${header.map((l) => l.replace(/^\/\/ ?/, '')).join('\n')}\n`);
  process.exit(0);
}

const fromRoot = (p) => (isAbsolute(p) ? p : resolve(ROOT, p));
const named = args.preset ?? process.env.PNEUMOTYPE_PRESET ?? 'smoke';
const preset = named === 'tiny' ? 'smoke' : named;
if (!PRESETS.includes(preset)) fail(`--preset "${named}" is not one of ${PRESETS.join(', ')} (tiny = smoke)`);
const outDir = fromRoot(args.out ?? process.env.PNEUMOTYPE_REPORTS_DIR ?? join('data', 'reports'));
const dataDir = fromRoot(args.data ?? process.env.PNEUMOTYPE_DATA_DIR ?? join('data', 'notebooks'));
const runGiven = args.run ?? process.env.PNEUMOTYPE_RUN_DIR;
const runDir = fromRoot(runGiven ?? join('runs', `notebooks-${preset}`));
const timeout = args.timeout !== undefined ? Number(args.timeout) : preset === 'smoke' ? 600 : -1;
if (!Number.isInteger(timeout) || timeout === 0 || timeout < -1) fail(`--timeout "${args.timeout}" is not valid: expected whole seconds`);

/** The command running now, which Ctrl-C or SIGTERM is passed on to (see below). */
let current;

/** Runs a command to completion; returns its status and output (inherited when `quiet` is false). */
async function run(command, argv, options = {}) {
  const child = spawn(command, argv, {
    cwd: options.cwd ?? ROOT,
    env: options.env ?? process.env,
    stdio: options.quiet === false ? 'inherit' : ['ignore', 'pipe', 'pipe'],
  });
  current = child;
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (c) => (stdout += c));
  child.stderr?.setEncoding('utf8').on('data', (c) => (stderr += c));
  const [status] = await new Promise((done, failed) => {
    child.once('error', (err) => failed(err));
    child.once('close', (...result) => done(result));
  }).catch((err) => fail(`cannot run ${command}: ${err.message}`));
  current = undefined;
  return { status, stdout, stderr };
}

// 1. Jupyter and the tslab kernel: a spec whose argv[0] is this checkout's tslab, parsed (tslab writes it with Python's
// json.dump, which escapes a non-ASCII path: /home/zoë as /home/zo\u00eb).
function kernelReady() {
  if (!existsSync(JUPYTER) || !existsSync(KERNEL_JSON)) return false;
  try {
    return JSON.parse(readFileSync(KERNEL_JSON, 'utf8'))?.argv?.[0] === TSLAB;
  } catch {
    return false;
  }
}
if (!kernelReady()) {
  log('Jupyter or the tslab kernel is missing: running scripts/setup-notebooks.sh');
  if ((await run('bash', [join(ROOT, 'scripts', 'setup-notebooks.sh')], { quiet: false })).status !== 0 || !kernelReady()) {
    fail('setting up Jupyter and the tslab kernel failed (see above)');
  }
}

// 2. The library the notebooks import: dist/, rebuilt when a lib/ file is newer.
const distIndex = join(ROOT, 'dist', 'index.js');
const libDir = join(ROOT, 'lib');
const newestLib = Math.max(...(await readdir(libDir)).filter((f) => f.endsWith('.ts')).map((f) => statSync(join(libDir, f)).mtimeMs));
if (!existsSync(distIndex) || statSync(distIndex).mtimeMs < newestLib) {
  log('building dist/ (npm run build)');
  if ((await run(process.execPath, [join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { quiet: false })).status !== 0) {
    fail('npm run build failed');
  }
}

// 3. The data: the given source, the shared train split beside the checkout, or a generated fixture.
let source = args.source ?? process.env.PNEUMOTYPE_SOURCE;
if (source === undefined && existsSync(SHARED_ZIP)) source = SHARED_ZIP;
if (source === undefined || source === 'fixture') {
  const why = source === 'fixture' ? '--source fixture' : `no dataset given and no ${SHARED_ZIP}`;
  source = join(dataDir, 'fixture', 'chest_xray_fixture.zip');
  if (!existsSync(source)) {
    log(`${why}: generating a small fixture archive ${source}`);
    const helper = pathToFileURL(join(ROOT, 'test', 'helpers', 'zip-writer.ts')).href;
    const code =
      `import { mkdir, rename, writeFile } from 'node:fs/promises';\n` +
      `import { datasetZip } from ${JSON.stringify(helper)};\n` +
      `const { zip } = await datasetZip({ perClass: { train: 40, test: 12 }, width: 64, height: 64 });\n` +
      `await mkdir(${JSON.stringify(dirname(source))}, { recursive: true });\n` +
      `await writeFile(${JSON.stringify(`${source}.part`)}, zip);\n` +
      `await rename(${JSON.stringify(`${source}.part`)}, ${JSON.stringify(source)});\n`;
    const r = await run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code]);
    if (r.status !== 0) fail(`generating the fixture archive failed:\n${r.stderr}`);
  }
} else if (!/^(v2|v3)$/.test(source) && !/^https?:\/\//i.test(source)) {
  source = fromRoot(source);
}
// Metrics by group: a CSV of the same name beside a local archive (the shared data's derived_from column).
let groupsCsv = process.env.PNEUMOTYPE_GROUPS_CSV;
if (groupsCsv === undefined && isAbsolute(source) && source.endsWith('.zip') && existsSync(source.replace(/\.zip$/, '.csv'))) {
  groupsCsv = source.replace(/\.zip$/, '.csv');
}

// 4. The notebooks, in order.
const only = args.only?.split(',').map((s) => s.trim()).filter((s) => s !== '');
const notebooks = (await readdir(join(ROOT, 'notebooks')))
  .filter((f) => f.endsWith('.ipynb') && !f.startsWith('.'))
  .sort()
  .filter((f) => only === undefined || only.some((p) => f.startsWith(p)));
if (notebooks.length === 0) fail(`no notebook in notebooks/ matches ${only ? `--only ${args.only}` : '*.ipynb'}`);

if (runGiven === undefined && notebooks.some((f) => f.startsWith('05')) && existsSync(runDir)) {
  log(`clearing the previous run ${runDir} (give --run DIR to keep and resume a run)`);
  await rm(runDir, { recursive: true, force: true });
}
const executedDir = join(outDir, 'executed');
await mkdir(executedDir, { recursive: true });

// 5. An HTML template without network: the lab template minus require.js, MathJax and mermaid, plus a CSP.
const work = await mkdtemp(join(tmpdir(), 'pneumotype-notebooks-'));
// Removed however the script ends: fail() exits at once, past the `finally` below.
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
// Ctrl-C (to the process group, the command included) or SIGTERM (to this process alone, passed on as SIGINT): the
// command running now gets one SIGINT (nbconvert then shuts its kernel down; killed outright, it would leave the kernel
// running) and 10 s to end, then this exits with the signal's status, the folder removed through 'exit'.
for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]]) {
  process.on(signal, () => {
    const child = current;
    if (!child || child.exitCode !== null || child.signalCode !== null) process.exit(status);
    // Ctrl-C reached the whole process group, the command included: a second SIGINT would cut its clean-up short.
    if (signal === 'SIGTERM') child.kill('SIGINT');
    const force = setTimeout(() => {
      child.kill('SIGKILL');
      process.exit(status);
    }, 10_000);
    child.once('close', () => {
      clearTimeout(force);
      process.exit(status);
    });
  });
}
await mkdir(join(work, 'templates', 'pneumotype'), { recursive: true });
await mkdir(join(work, 'runtime'), { recursive: true });
await writeFile(join(work, 'templates', 'pneumotype', 'conf.json'), JSON.stringify({ base_template: 'lab', mimetypes: { 'text/html': true } }));
const csp = "default-src 'none'; script-src 'unsafe-inline' 'unsafe-eval'; style-src 'unsafe-inline'; img-src data: blob:; font-src data:";
await writeFile(
  join(work, 'templates', 'pneumotype', 'index.html.j2'),
  [
    "{%- extends 'lab/index.html.j2' -%}",
    `{%- block html_head_js_requirejs -%}<meta http-equiv="Content-Security-Policy" content="${csp}">{%- endblock html_head_js_requirejs -%}`,
    '{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}',
    // Long code lines wrap instead of being cut off at the cell's edge.
    '{%- block extra_css -%}<style>.jp-InputArea-editor .highlight pre { white-space: pre-wrap; overflow-wrap: break-word; }</style>{%- endblock extra_css -%}',
    '{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}',
    '',
  ].join('\n'),
);

const env = {
  ...process.env,
  PNEUMOTYPE_PRESET: preset,
  PNEUMOTYPE_SOURCE: source,
  PNEUMOTYPE_DATA_DIR: dataDir,
  PNEUMOTYPE_RUN_DIR: runDir,
  PNEUMOTYPE_REPORTS_DIR: outDir,
  ...(groupsCsv !== undefined ? { PNEUMOTYPE_GROUPS_CSV: groupsCsv } : {}),
  // This checkout's kernel first, whatever else is registered for the user; connection files in our temp folder.
  JUPYTER_PATH: join(VENV, 'share', 'jupyter'),
  JUPYTER_RUNTIME_DIR: join(work, 'runtime'),
  JUPYTER_PLATFORM_DIRS: '1',
  TF_CPP_MIN_LOG_LEVEL: process.env.TF_CPP_MIN_LOG_LEVEL ?? '2',
};

log(`preset ${preset}, source ${source}`);
log(`data ${dataDir}, run ${runDir}, HTML to ${outDir}`);
const started = performance.now();
/**
 * Numbers the executed notebook's code cells 1, 2, … in order, as Jupyter would: tslab sends no execution counts, so
 * the HTML export would show `In [ ]:` on every executed cell.
 */
function numberCells(path) {
  const nb = JSON.parse(readFileSync(path, 'utf8'));
  let n = 0;
  for (const cell of nb.cells) {
    if (cell.cell_type !== 'code') continue;
    cell.execution_count = ++n;
    for (const o of cell.outputs ?? []) if (o.output_type === 'execute_result') o.execution_count = n;
  }
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(nb, null, 1)}\n`);
  renameSync(tmp, path);
}

const results = [];
let failed = false;
try {
  for (const file of notebooks) {
    const name = basename(file, '.ipynb');
    const t0 = performance.now();
    const exec = await run(JUPYTER, [
      'nbconvert', '--to', 'notebook', '--execute',
      '--ExecutePreprocessor.kernel_name=tslab',
      `--ExecutePreprocessor.timeout=${timeout}`,
      '--ExecutePreprocessor.startup_timeout=120',
      '--output-dir', executedDir,
      join(ROOT, 'notebooks', file),
    ], { env, cwd: join(ROOT, 'notebooks') });
    const seconds = (performance.now() - t0) / 1000;
    if (exec.status !== 0) {
      // nbconvert's CellExecutionError names the cell and carries the kernel's message; show that part.
      const text = `${exec.stdout}\n${exec.stderr}`;
      const at = text.indexOf('An error occurred while executing the following cell');
      log(`${name} FAILED after ${seconds.toFixed(1)} s:\n${at >= 0 ? text.slice(at) : text.slice(-6000)}`);
      failed = true;
      break;
    }
    numberCells(join(executedDir, file));
    const html = await run(JUPYTER, [
      'nbconvert', '--to', 'html',
      '--template', 'pneumotype',
      `--TemplateExporter.extra_template_basedirs=${join(work, 'templates')}`,
      '--output-dir', outDir,
      join(executedDir, file),
    ], { env });
    if (html.status !== 0) {
      log(`${name}: the HTML export failed:\n${html.stderr.slice(-4000)}`);
      failed = true;
      break;
    }
    const out = join(outDir, `${name}.html`);
    // The "Next: …" links name the .ipynb beside it in Jupyter; the exports sit beside each other as .html.
    const page = readFileSync(out, 'utf8');
    const linked = page.replace(/href="(0\d-[\w-]+)\.ipynb"/g, 'href="$1.html"');
    if (linked !== page) writeFileSync(out, linked);
    const mb = statSync(out).size / 1e6;
    results.push({ name, seconds, out, mb });
    log(`${name}: ${seconds.toFixed(1)} s, ${out} (${mb.toFixed(1)} MB)`);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

const total = (performance.now() - started) / 1000;
if (failed) process.exit(1);
process.stdout.write(`${results.length} notebooks executed and exported to ${outDir} in ${total.toFixed(1)} s\n`);
