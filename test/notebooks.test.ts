// The notebooks: committed without outputs, thin cells, and (the slow test, 2-4 minutes) executed headlessly with the
// tslab kernel into HTML that a real browser draws offline; the upload notebook against a loopback S3 server.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { drawnFigures, launchOffline, noChromium, openWatched } from './helpers/browser.js';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { datasetFiles, writeTree } from './helpers/fixtures.js';
import { startS3Server } from './helpers/s3-server.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const NOTEBOOK_DIR = join(ROOT, 'notebooks');
const EXPECTED = ['01-obtain-data', '02-three-labels', '03-batches-and-tensors', '04-upload-to-s3', '05-train', '06-evaluate'];
/** Figures each notebook draws (plotly-figure divs in its outputs), at least. */
const MIN_FIGURES: Record<string, number> = {
  '01-obtain-data': 0,
  '02-three-labels': 3,
  '03-batches-and-tensors': 4,
  '04-upload-to-s3': 0,
  '05-train': 1,
  '06-evaluate': 5,
};
const SKIP_RUN = process.env.PNEUMOTYPE_SKIP_NOTEBOOKS === '1';
const MAX_CELL_LINES = 5;
// The loopback S3 server's client would print the SDK's notice about Node.js 22 (as in upload.test.ts).
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

interface Output {
  readonly output_type: string;
  readonly name?: string;
  readonly text?: string | string[];
  readonly data?: Record<string, string | string[]>;
}
interface Cell {
  readonly cell_type: 'code' | 'markdown' | 'raw';
  readonly source: string | string[];
  readonly outputs?: Output[];
  readonly execution_count?: number | null;
  readonly metadata?: { readonly execution?: unknown };
}
interface Notebook {
  readonly cells: Cell[];
  readonly metadata: { readonly kernelspec?: { readonly name?: string } };
  readonly nbformat: number;
}

const joined = (s: string | string[] | undefined): string => (Array.isArray(s) ? s.join('') : (s ?? ''));

async function readNotebook(path: string): Promise<Notebook> {
  return JSON.parse(await readFile(path, 'utf8')) as Notebook;
}

const committed = new Map<string, Notebook>();
let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-notebooks-test-'));
  for (const name of EXPECTED) {
    const path = join(NOTEBOOK_DIR, `${name}.ipynb`);
    if (existsSync(path)) committed.set(name, await readNotebook(path));
  }
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

/**
 * The code of a cell with string literals, template text and comments blanked out (template `${...}` expressions are
 * kept: they are code), so that keywords are only found where they are code.
 */
function codeOnly(source: string): string {
  let out = '';
  const templates: number[] = []; // brace depth at which each open template's `${` started
  let depth = 0;
  let i = 0;
  const inTemplateText = (): boolean => templates.length > 0 && templates.at(-1) === -1;
  while (i < source.length) {
    const c = source[i] as string;
    const next = source[i + 1];
    if (inTemplateText()) {
      if (c === '\\') i += 2;
      else if (c === '`') {
        templates.pop();
        i++;
      } else if (c === '$' && next === '{') {
        templates[templates.length - 1] = depth;
        depth++;
        out += ' ';
        i += 2;
      } else i++;
      continue;
    }
    if (c === '/' && next === '/') {
      while (i < source.length && source[i] !== '\n') i++;
    } else if (c === '/' && next === '*') {
      const end = source.indexOf('*/', i + 2);
      i = end < 0 ? source.length : end + 2;
    } else if (c === "'" || c === '"') {
      i++;
      while (i < source.length && source[i] !== c && source[i] !== '\n') i += source[i] === '\\' ? 2 : 1;
      i++;
      out += '""';
    } else if (c === '`') {
      templates.push(-1);
      out += '""';
      i++;
    } else if (c === '{') {
      depth++;
      out += c;
      i++;
    } else if (c === '}') {
      depth--;
      if (templates.length > 0 && templates.at(-1) === depth) templates[templates.length - 1] = -1;
      else out += c;
      i++;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

const FORBIDDEN: readonly [RegExp, string][] = [
  [/\bfunction\b/, 'function'],
  [/\bclass\b/, 'class'],
  [/\bfor\b/, 'for loop'],
  [/\bwhile\b/, 'while loop'],
  [/\bdo\s*\{/, 'do loop'],
  [/=>/, 'arrow function'],
  [/\bif\s*\(/, 'if statement'],
  [/\bswitch\s*\(/, 'switch statement'],
];

/** What breaks the thin-cell rule in one code cell: too many lines, or logic that belongs in the library. */
function thinCellViolations(source: string): string[] {
  const problems: string[] = [];
  const lines = source.trimEnd().split('\n').length;
  if (lines > MAX_CELL_LINES) problems.push(`${lines} lines (at most ${MAX_CELL_LINES})`);
  const code = codeOnly(source);
  for (const [re, what] of FORBIDDEN) if (re.test(code)) problems.push(what);
  return problems;
}

test('the thin-cell check finds logic in code and not in strings', () => {
  assert.deepEqual(thinCellViolations("showTable(tslab.display, [{ title: 'for a while, if (x) => y; function class' }]);"), []);
  assert.deepEqual(thinCellViolations('const t = `${nb.runDir}/for => model`; // a function for each class'), []);
  assert.deepEqual(thinCellViolations('items.map((x) => x * 2)'), ['arrow function']);
  assert.deepEqual(thinCellViolations('const s = `${items.map((x) => x)}`'), ['arrow function']);
  assert.deepEqual(thinCellViolations('for (const f of files) show(f)'), ['for loop']);
  assert.deepEqual(thinCellViolations('function f() {}\nclass A {}'), ['function', 'class']);
  assert.deepEqual(thinCellViolations('if (x) y()'), ['if statement']);
  assert.deepEqual(thinCellViolations('a\nb\nc\nd\ne\nf'), ['6 lines (at most 5)']);
});

test('the six notebooks are in notebooks/, for the tslab kernel', async () => {
  const files = (await readdir(NOTEBOOK_DIR)).filter((f) => f.endsWith('.ipynb')).sort();
  assert.deepEqual(files, EXPECTED.map((n) => `${n}.ipynb`));
  for (const [name, nb] of committed) {
    assert.equal(nb.nbformat, 4, name);
    assert.equal(nb.metadata.kernelspec?.name, 'tslab', `${name}: kernel`);
    assert.ok(nb.cells.some((c) => c.cell_type === 'markdown'), `${name}: tells its story in markdown`);
    assert.ok(nb.cells.some((c) => c.cell_type === 'code' && joined(c.source).includes("from '../dist/index.js'")), `${name}: imports the built library`);
  }
});

test('notebooks in the repository carry no outputs and no execution counts', () => {
  for (const [name, nb] of committed) {
    nb.cells.forEach((cell, i) => {
      if (cell.cell_type !== 'code') return;
      assert.deepEqual(cell.outputs, [], `${name} cell ${i}: outputs`);
      assert.equal(cell.execution_count, null, `${name} cell ${i}: execution count`);
      assert.equal(cell.metadata?.execution, undefined, `${name} cell ${i}: execution metadata`);
    });
  }
});

test('code cells are thin: at most 5 lines calling the library, no function, class, loop or branch', () => {
  const problems: string[] = [];
  for (const [name, nb] of committed) {
    nb.cells.forEach((cell, i) => {
      if (cell.cell_type !== 'code') return;
      const found = thinCellViolations(joined(cell.source));
      if (found.length > 0) problems.push(`${name} cell ${i}: ${found.join(', ')}`);
    });
  }
  assert.deepEqual(problems, []);
});

/** Runs the notebook runner; resolves with its output, rejects with it on a non-zero exit. */
function runNotebooks(args: readonly string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolvePromise, reject) => {
    execFile(process.execPath, [join(ROOT, 'scripts', 'notebooks.mjs'), ...args], { cwd: ROOT, env, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`npm run notebooks failed (${err.message}):\n${stderr.slice(-8000)}`));
      else resolvePromise({ stdout, stderr });
    });
  });
}

/** The environment without any notebook, S3 or AWS setting of the person running the tests. */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(PNEUMOTYPE_|AWS_)/.test(k) || k === 'PNEUMOTYPE_TEST') env[k] = v;
  return { ...env, ...extra };
}

/** Every text output of a code cell, and every problem: an error output, or anything written to stderr. */
function outputsOf(nb: Notebook, name: string): { text: string; html: string; problems: string[] } {
  let text = '';
  let html = '';
  const problems: string[] = [];
  nb.cells.forEach((cell, i) => {
    if (cell.cell_type !== 'code') return;
    if (cell.metadata?.execution === undefined) problems.push(`${name} cell ${i} was not executed`);
    for (const o of cell.outputs ?? []) {
      if (o.output_type === 'error') problems.push(`${name} cell ${i}: error output`);
      if (o.output_type === 'stream' && o.name === 'stderr') problems.push(`${name} cell ${i} wrote to stderr: ${joined(o.text).slice(0, 300)}`);
      if (o.output_type === 'stream') text += joined(o.text);
      html += joined(o.data?.['text/html']);
      text += joined(o.data?.['text/plain']);
    }
  });
  return { text, html, problems };
}

test(
  'slow: every notebook executes headlessly with the tslab kernel, and its HTML export draws offline in Chromium',
  { timeout: 540_000, skip: SKIP_RUN ? 'PNEUMOTYPE_SKIP_NOTEBOOKS=1' : false },
  async (t) => {
    const out = join(tmp, 'reports');
    const { stdout } = await runNotebooks(['--out', out, '--data', join(tmp, 'data'), '--run', join(tmp, 'run')], cleanEnv());
    assert.match(stdout, /6 notebooks executed and exported/);

    const figures = new Map<string, number>();
    for (const name of EXPECTED) {
      const executed = await readNotebook(join(out, 'executed', `${name}.ipynb`));
      const { text, html, problems } = outputsOf(executed, name);
      assert.deepEqual(problems, [], `${name}: executed without error or stderr`);
      // Numbered as Jupyter would (tslab sends no counts): the export shows In [1]:, In [2]:, …
      const codeCells = executed.cells.filter((c) => c.cell_type === 'code');
      assert.deepEqual(codeCells.map((c) => c.execution_count), codeCells.map((_, i) => i + 1), `${name}: execution counts`);
      const page = readFileSync(join(out, `${name}.html`), 'utf8');
      assert.ok(page.includes('[1]:'), `${name}.html shows the cells' numbers`);
      // Its "Next" link leads to the next export, not to a notebook that is not beside it.
      const next = EXPECTED[EXPECTED.indexOf(name) + 1];
      if (next !== undefined) assert.ok(page.includes(`href="${next}.html"`) && !page.includes('.ipynb"'), `${name}.html links to ${next}.html`);
      const count = html.split('class="plotly-figure"').length - 1;
      assert.ok(count >= (MIN_FIGURES[name] ?? 0), `${name}: ${count} figures, expected at least ${MIN_FIGURES[name]}`);
      figures.set(name, count);
      if (name === '04-upload-to-s3') assert.match(text, /No S3 bucket is configured, so nothing was uploaded/);
      // Notebook 6 sets its run beside the shipped model's saved validation evaluation.
      if (name === '06-evaluate') assert.ok(html.includes('<th scope="col">models/default</th>') && html.includes('<td>523 (val)</td>'), `${name}: the shipped model's column`);
      assert.ok(existsSync(join(out, `${name}.html`)), `${name}.html written`);
    }
    assert.ok(existsSync(join(out, 'run-report-smoke.html')), 'the run report exported by notebook 6');

    const missing = noChromium();
    if (missing) {
      t.diagnostic(`${missing}: the exported HTML was not opened in a browser`);
      return;
    }
    const context = await launchOffline(tmp, { width: 1200, height: 900 });
    try {
      for (const name of EXPECTED) {
        const { page, requests, problems } = await openWatched(context, pathToFileURL(join(out, `${name}.html`)).href);
        const expected = figures.get(name) ?? 0;
        const drawn = await drawnFigures(page, expected);
        assert.equal(drawn.length, expected, `${name}: figures in the page`);
        assert.ok(drawn.every((n) => n >= 1), `${name}: every figure has its svg.main-svg`);
        if (process.env.PNEUMOTYPE_SCREENSHOT_DIR) {
          await mkdir(process.env.PNEUMOTYPE_SCREENSHOT_DIR, { recursive: true });
          await writeFile(join(process.env.PNEUMOTYPE_SCREENSHOT_DIR, `${name}.png`), await page.screenshot({ fullPage: true }));
        }
        assert.deepEqual(problems, [], `${name}: console errors`);
        assert.deepEqual(requests.filter((u) => !u.startsWith('file://')), [], `${name}: requests leaving the machine`);
        await page.close();
      }
    } finally {
      await context.close();
    }
  },
);

test(
  'slow: the upload notebook sends the labelled set to the S3-compatible endpoint given in the environment (the data from an extracted folder)',
  { timeout: 300_000, skip: SKIP_RUN ? 'PNEUMOTYPE_SKIP_NOTEBOOKS=1' : false },
  async () => {
    const s3 = await startS3Server({ buckets: ['pneumotype-notebooks'], region: 'eu-west-1' });
    try {
      const out = join(tmp, 'upload-reports');
      // An archive extracted by other means as PNEUMOTYPE_SOURCE: notebooks 1 and 2 take the folder as it is.
      const extracted = join(tmp, 'extracted-by-hand');
      await writeTree(extracted, await datasetFiles({ perClass: { train: 6, test: 2 } }));
      await runNotebooks(
        ['--only', '01,02,04', '--source', extracted, '--out', out, '--data', join(tmp, 'upload-data'), '--run', join(tmp, 'upload-run')],
        cleanEnv({
          PNEUMOTYPE_S3_BUCKET: 'pneumotype-notebooks',
          PNEUMOTYPE_S3_PREFIX: 'chest-xray',
          PNEUMOTYPE_S3_ENDPOINT: s3.endpoint,
          AWS_REGION: 'eu-west-1',
          AWS_ACCESS_KEY_ID: s3.accessKeyId,
          AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
        }),
      );
      const obtained = outputsOf(await readNotebook(join(out, 'executed', '01-obtain-data.ipynb')), '01-obtain-data');
      assert.deepEqual(obtained.problems, []);
      assert.ok(obtained.html.includes('<td>folder</td>') && obtained.html.includes('<td>chest_xray/train/PNEUMONIA</td>'), 'notebook 1 shows a folder source and lists its files');
      const executed = await readNotebook(join(out, 'executed', '04-upload-to-s3.ipynb'));
      const { text, problems } = outputsOf(executed, '04-upload-to-s3');
      assert.deepEqual(problems, []);
      assert.match(text, /\d+ files sent \(.*\), 0 already there; s3:\/\/pneumotype-notebooks\/chest-xray\/ holds the \d+ files of the dataset/);
      const keys = await s3.listKeys('pneumotype-notebooks', 'chest-xray/');
      assert.ok(keys.includes('chest-xray/_pneumotype-upload.json'), 'the manifest object, written last');
      assert.ok(keys.includes('chest-xray/manifest.csv') && keys.some((k) => k.startsWith('chest-xray/train/virus/')), 'the labelled files');
    } finally {
      await s3.close();
    }
  },
);

test(
  'slow: the stop button (a kernel interrupt) stops training started with interruptSignal, and the kernel lives on',
  { timeout: 300_000, skip: SKIP_RUN ? 'PNEUMOTYPE_SKIP_NOTEBOOKS=1' : false },
  async () => {
    // The data the first notebook test prepared (its labelled set and cache), trained on with the smoke preset.
    const data = join(tmp, 'data');
    assert.ok(existsSync(join(data, 'labeled', 'manifest.csv')), `the notebook run above prepared ${data}`);
    const runDir = join(tmp, 'interrupted-run');
    const steps = [
      { execute: "import { interruptSignal, notebookSettings, train } from '../dist/index.js';\nconst nb = notebookSettings();\nconst seen: { started?: boolean; promise?: Promise<unknown> } = {};" },
      {
        execute:
          `seen.promise = train({ data: nb.labeledDir, out: ${JSON.stringify(runDir)}, cacheDir: nb.cacheDir, preset: 'smoke', config: { epochs: 500, patience: 500 }, signal: interruptSignal(),\n` +
          "  onProgress: (p) => { if (!seen.started && p.stage === 'train' && p.done > 0) { seen.started = true; console.log('training under way'); } } });\nawait seen.promise;",
      },
      { wait_for: 'training under way', timeout: 120 },
      { sleep: 1 },
      { mark: 'interrupted' },
      { interrupt: true },
      { wait_for: 'Interrupted asynchronously', timeout: 30 },
      // tslab drops the requests that reach it within 200 ms of a failed cell (as Jupyter drops queued cells).
      { sleep: 1 },
      { execute: "console.log('outcome:', await seen.promise.then((r) => `returned after ${(r as { history: unknown[] }).history.length} epoch(s)`, (e: Error) => e.message));" },
      { wait_for: 'outcome:', timeout: 60 },
    ];
    const python = join(ROOT, '.venv-notebooks', 'bin', 'python');
    const env = cleanEnv({
      PNEUMOTYPE_DATA_DIR: data,
      PNEUMOTYPE_PRESET: 'smoke',
      JUPYTER_PATH: join(ROOT, '.venv-notebooks', 'share', 'jupyter'),
      JUPYTER_RUNTIME_DIR: join(tmp, 'jupyter-runtime'),
      JUPYTER_PLATFORM_DIRS: '1',
      TF_CPP_MIN_LOG_LEVEL: '2',
    });
    const stdout = await new Promise<string>((resolvePromise, reject) => {
      execFile(python, [join(ROOT, 'test', 'helpers', 'kernel-session.py'), NOTEBOOK_DIR, JSON.stringify(steps)], { env, maxBuffer: 16 * 1024 * 1024 }, (err, out, stderr) => {
        if (err) reject(new Error(`kernel-session.py failed (${err.message}):\n${stderr.slice(-4000)}`));
        else resolvePromise(out);
      });
    });
    const result = JSON.parse(stdout.trim().split('\n').at(-1) ?? '{}') as { streams: Array<[string, string]>; alive: boolean; exitCode: number | null; timedOut: string | null };
    const after = result.streams.filter(([mark]) => mark === 'interrupted').map(([, text]) => text).join('');
    assert.equal(result.timedOut, null, `every awaited output came; after the interrupt:\n${after}`);
    assert.deepEqual([result.alive, result.exitCode], [true, null], 'the kernel survived the interrupt');
    // The training returned within seconds instead of running its 500 epochs: stopped in its first epoch (the shared
    // data), or a few epochs in (the small generated fixture, whose epochs take well under a second).
    const outcome = /outcome: (.*)/.exec(after)?.[1] ?? '';
    const epochs = /^returned after (\d+) epoch\(s\)$/.exec(outcome)?.[1];
    assert.ok(
      outcome === `training of "${runDir}" stopped before its first epoch ended: there is no model yet (run it again with --resume)` || (epochs !== undefined && Number(epochs) < 100),
      outcome,
    );
  },
);
