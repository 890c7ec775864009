// The CLI as a user runs it: the built `bin/pneumotype.js` in a child process (npm test builds dist/ first).
import assert from 'node:assert/strict';
import AdmZip from 'adm-zip';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, test } from 'node:test';
import { withoutTfLog } from './helpers/stderr.js';
import { datasetFiles, writeTree } from './helpers/fixtures.js';
import { COMMANDS, commandHelp, usageError } from '../lib/cli.js';

const BIN = resolve('bin/pneumotype.js');
let tmp: string;
before(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'pneumotype-cli-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function cli(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: tmp, env: { ...process.env, PNEUMOTYPE_SOURCE: '' } });
  return { code: r.status, stdout: r.stdout, stderr: withoutTfLog(r.stderr) };
}

test('each command takes exactly the options its usage names', () => {
  const commands = ['doctor', 'fetch', 'extract', 'relabel', 'prepare', 'train', 'evaluate', 'calibrate', 'predict', 'report', 'upload', 'serve', 'sagemaker', 'run'];
  for (const command of commands) {
    const usage = commandHelp(command);
    const own = usage.slice(0, usage.indexOf('Options for every command'));
    const named = [...new Set([...own.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1] ?? ''))];
    assert.ok(named.length > 0 || command === 'doctor', command);
    for (const name of named) assert.equal(usageError(command, { [name]: true }, [command]), undefined, `${command} --${name}`);
    for (const name of ['json', 'quiet', 'help']) assert.equal(usageError(command, { [name]: true }, [command]), undefined, `${command} --${name}`);
    // And every option it takes is in its usage.
    for (const name of COMMANDS[command]?.options ?? []) assert.ok(named.includes(name), `${command}'s usage names --${name}`);
    // What the usage does not name is refused (--sha256 belongs to fetch only).
    if (command !== 'fetch') assert.match(usageError(command, { sha256: 'x' }, [command]) ?? '', /^--sha256 is not an option of /, command);
  }
  assert.equal(usageError('predict', { model: 'm' }, ['predict', 'a.png', 'b.png', 'c.png']), undefined);
  assert.equal(usageError('frobnicate', { epochs: '1' }, ['frobnicate']), undefined);
});

test('help, unknown commands and bad options', () => {
  const help = cli('help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^pneumotype: normal, bacterial and viral pneumonia/);
  const unknown = cli('frobnicate');
  assert.equal(unknown.code, 2);
  assert.match(unknown.stderr, /^pneumotype: unknown command "frobnicate"\n/);
  // A typo of a command, a preset or a choice gets the nearest ones.
  assert.match(cli('trian').stderr, /^pneumotype: unknown command "trian" \(did you mean "train"\?\)\n\npneumotype: normal/);
  assert.equal(cli('prepare', '--preset', 'smok').stderr, 'pneumotype prepare: preset "smok" is not one of smoke (or tiny), cpu, gpu (did you mean "smoke"?)\nRun `pneumotype help prepare` for usage.\n');
  assert.equal(cli('evaluate', '--split', 'vla').stderr, 'pneumotype evaluate: --split "vla" is not one of "test", "val" (did you mean "val"?)\nRun `pneumotype help evaluate` for usage.\n');
  const bad = cli('relabel', '--nope');
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, 'pneumotype relabel: unknown option --nope; relabel takes --from, --out, --extracted, --allow-unknown (and --json, --quiet)\nRun `pneumotype help relabel` for usage.\n');
  // A typo gets the nearest options; a value that starts with "-" is told to take "=".
  const typo = cli('evaluate', '--modle', 'm');
  assert.equal(typo.code, 2);
  assert.match(typo.stderr, /^pneumotype evaluate: unknown option --modle \(did you mean --model\?\); evaluate takes --model, /);
  assert.match(cli('train', '--out', 'x', '--epoch', '3').stderr, /^pneumotype train: unknown option --epoch \(did you mean --epochs\?\)/);
  const dash = cli('train', '--out', 'x', '--init-range', '-1,1');
  assert.equal(dash.code, 2);
  assert.equal(dash.stderr, 'pneumotype train: the value of --init-range starts with "-", which reads as another option: write it with "=", as --init-range=VALUE (e.g. --init-range=-1,1)\nRun `pneumotype help train` for usage.\n');
  assert.equal(cli('--bogus').stderr, 'pneumotype: unknown option --bogus\nRun `pneumotype help` for usage.\n');
  // An option that ends the line without its value, in the command's words.
  const bare = cli('predict', '--model');
  assert.equal(bare.code, 2);
  assert.equal(bare.stderr, 'pneumotype predict: --model needs a value, and the command line ends after it\nRun `pneumotype help predict` for usage.\n');
  // A short option as typed, and no guess for it; the command found past an option's value; no inherited names.
  assert.equal(cli('relabel', '-z').stderr, 'pneumotype relabel: unknown option -z; relabel takes --from, --out, --extracted, --allow-unknown (and --json, --quiet)\nRun `pneumotype help relabel` for usage.\n');
  assert.match(cli('--out', 'train', 'evaluate', '--modle', 'm').stderr, /^pneumotype evaluate: unknown option --modle/);
  assert.match(cli('constructor').stderr, /^pneumotype: unknown command "constructor"/);
  assert.equal(cli('constructor', '--bogus').stderr, 'pneumotype: unknown option --bogus\nRun `pneumotype help` for usage.\n');
  const missing = cli('relabel');
  assert.equal(missing.code, 2, 'a usage error, like an unknown option');
  assert.equal(missing.stderr, 'pneumotype relabel: relabel needs --from FOLDER|ZIP\nRun `pneumotype help relabel` for usage.\n');
  const preset = cli('prepare', '--preset', 'huge');
  assert.equal(preset.code, 2);
  assert.equal(preset.stderr, 'pneumotype prepare: preset "huge" is not one of smoke (or tiny), cpu, gpu\nRun `pneumotype help prepare` for usage.\n');
  // From the environment: named as the variable, not blamed on the command line.
  const fromEnv = spawnSync(process.execPath, [BIN, 'prepare'], { encoding: 'utf8', cwd: tmp, env: { ...process.env, PNEUMOTYPE_SOURCE: '', PNEUMOTYPE_PRESET: 'fast' } });
  assert.equal(fromEnv.stderr, 'pneumotype prepare: PNEUMOTYPE_PRESET="fast" is not one of smoke (or tiny), cpu, gpu: set it to one of them, or unset it\n');
  assert.equal(fromEnv.status, 1);
  assert.equal(cli('upload').stderr, 'pneumotype upload: upload needs --bucket NAME\nRun `pneumotype help upload` for usage.\n');
  const size = cli('prepare', '--image-size', 'big');
  assert.equal(size.stderr, 'pneumotype prepare: --image-size "big" is not a number\nRun `pneumotype help prepare` for usage.\n');
  // Numbers out of range are usage errors too, named by their flag, before any work starts.
  for (const [args, message] of [
    [['serve', '--max-batch', '0'], '--max-batch "0" is not a whole number of at least 1'],
    [['serve', '--max-in-flight', '1.5'], '--max-in-flight "1.5" is not a whole number of at least 1'],
    [['serve', '--port', '70000'], '--port "70000" is not a whole number from 0 to 65535'],
    [['serve', '--batch-window-ms=-1'], '--batch-window-ms "-1" is not a number from 0 to 2147483647'],
    [['serve', '--batch-window-ms', '3e9'], '--batch-window-ms "3e9" is not a number from 0 to 2147483647'],
    // Decimal only: 0x1F90 would quietly be port 8080.
    [['serve', '--port', '0x1F90'], '--port "0x1F90" is not a number'],
    [['evaluate', '--bootstrap', '0b11'], '--bootstrap "0b11" is not a number'],
    [['upload', '--bucket', 'b', '--part-size', '1'], '--part-size "1" is not a size in MiB from 5 to 5120 (S3\'s limits for one part)'],
    [['upload', '--bucket', 'b', '--concurrency', '0'], '--concurrency "0" is not a whole number of at least 1'],
    [['evaluate', '--bootstrap', '1.5'], '--bootstrap "1.5" is not a whole number from 0 to 100000'],
    [['evaluate', '--bootstrap', '1000000000'], '--bootstrap "1000000000" is not a whole number from 0 to 100000'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--epochs', '0'], '--epochs "0" is not a whole number of at least 1'],
    [['prepare', '--val-fraction', '1'], '--val-fraction "1" is not a fraction between 0 and 1'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--image-size', '8'], '--image-size "8" is not a whole number from 16 to 4096'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--mixup', '0.001'], '--mixup "0.001" is not 0 (off) or a number of at least 0.01'],
    // Values and combinations that no training could use, named by their flags.
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--freeze'], '--freeze needs a pretrained model: give --init-from DIR|URL too'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--feature-layer', 'conv5'], '--feature-layer needs a pretrained model: give --init-from DIR|URL too'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--model', 'bogus'], '--model "bogus" is not one of "resnet", "mobile", "tiny"'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--depth', '3,x'], '--depth "3,x" is not blocks per stage: whole numbers of at least 1 separated by commas, e.g. "3,4,6,3"'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--model', 'tiny', '--antialias'], '--antialias is for the resnet model only (the model is "tiny")'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--init-from', 'm', '--standardize', '--depth', '1,1,1,1'], '--depth, --standardize shape a network built from scratch; --init-from brings its own: leave them out'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--init-from', 'm', '--freeze', '--unfreeze'], '--freeze and --unfreeze cannot be given together'],
    [['train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--eager', '--graph'], '--eager and --graph cannot be given together'],
    [['run', '--remote', '--download-whole'], '--remote and --download-whole cannot be given together'],
    [['run', '--remote', '--source', tmpdir()], `remote reads an archive over HTTP with Range requests; "${tmpdir()}" is a local path: leave out --remote`],
    [['run', '--no-train', '--out', 'runs/x', '--no-calibrate'], '--out, --no-calibrate are for training, which --no-train leaves out'],
    [['fetch', '--sha256', 'abc'], '--sha256 "abc" is not 64 hexadecimal digits'],
    [['upload', '--bucket', 'Bad_Bucket'], 'bucket "Bad_Bucket" is not a valid S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit): pass --bucket NAME'],
    [['upload', '--bucket', 'my-bucket', '--region', ''], 'region "" is not an AWS region name: pass --region like "eu-west-1"'],
  ] as const) {
    const r = cli(...args);
    assert.equal(r.code, 2, args.join(' '));
    assert.equal(r.stderr, `pneumotype ${args[0]}: ${message}\nRun \`pneumotype help ${args[0]}\` for usage.\n`);
  }
  // An option given twice with two values, a help of two words, options without a command: usage errors.
  const twice = cli('predict', '--model', 'a', '--model=b', 'x.jpeg');
  assert.equal(twice.code, 2);
  assert.equal(twice.stderr, 'pneumotype predict: --model is given twice ("a", then "b"): give it once\n');
  assert.equal(cli('predict', '--quiet', '--quiet', '--help').code, 0, 'a flag repeated is harmless');
  const helpTwo = cli('help', 'predict', 'bogus');
  assert.equal(helpTwo.code, 2);
  assert.equal(helpTwo.stderr, 'pneumotype help: unexpected argument "bogus": help takes one command (or `sagemaker train`)\nRun `pneumotype help` for usage.\n');
  assert.equal(cli('help', 'sagemaker', 'train').code, 0);
  const noCommand = cli('--model', 'x');
  assert.equal(noCommand.code, 2);
  assert.match(noCommand.stderr, /^pneumotype: a command is missing before the options \(--model x\)\n\npneumotype: normal/);
  const range = cli('train', '--out', join(tmpdir(), 'pneumotype-never-made'), '--init-from', 'models/x', '--init-range=1,-1');
  assert.equal(range.stderr, 'pneumotype train: --init-range "1,-1" is not LO,HI with LO < HI (for example -1,1)\nRun `pneumotype help train` for usage.\n');
  assert.equal(cli('run', '--groups', 'derived_from').stderr, 'pneumotype run: --groups "derived_from" is not CSV:COLUMN\nRun `pneumotype help run` for usage.\n');

  // An option of another command, or a path without its option, is a usage error, not silently ignored.
  const foreign = cli('run', '--epochs', '5', '--quiet');
  assert.equal(foreign.code, 2);
  assert.equal(foreign.stderr,
    'pneumotype run: --epochs is not an option of run; it takes --source, --preset, --data-dir, --out, --augment, --no-train, ' +
    '--no-calibrate, --eager, --graph, --remote, --download-whole, --groups (and --json, --quiet)\nRun `pneumotype help run` for usage.\n');
  assert.equal(cli('doctor', '--model', 'm', '--seed', '1').stderr,
    'pneumotype doctor: --model, --seed are not options of doctor; it takes none (and --json, --quiet)\nRun `pneumotype help doctor` for usage.\n');
  const stray = cli('evaluate', 'data/labeled');
  assert.equal(stray.code, 2);
  assert.equal(stray.stderr, 'pneumotype evaluate: unexpected argument "data/labeled": evaluate takes no arguments besides its options ' +
    '(--model, --data, --split, --out, --predictions, --groups, --extracted, --bootstrap): a value needs its option\n' +
    'Run `pneumotype help evaluate` for usage.\n');
  assert.equal(cli('sagemaker', 'train', 'now').stderr, 'pneumotype sagemaker: unexpected argument "now": sagemaker takes at most 1 argument ' +
    'besides its options (--root): a value needs its option\nRun `pneumotype help sagemaker` for usage.\n');
  assert.equal(cli('doctor', 'now').stderr, 'pneumotype doctor: unexpected argument "now": doctor takes no arguments besides its options\n' +
    'Run `pneumotype help doctor` for usage.\n');
  assert.equal(cli('help', 'sagemaker', 'train').code, 0);
  // One file for both outputs: refused before the model is loaded, not found out when the JSON is gone.
  const clash = cli('evaluate', '--out', 'e.json', '--predictions', './e.json');
  assert.equal(clash.code, 2);
  assert.equal(clash.stderr, 'pneumotype evaluate: the evaluation (--out) and the predictions (--predictions) are both "e.json": the CSV would ' +
    'replace the JSON; give two files\nRun `pneumotype help evaluate` for usage.\n');
  assert.match(cli('sagemaker', 'train', '--help').stdout, /^Usage: pneumotype sagemaker train \[options\]\n/);
  // Its settings come from hyperparameters.json: every one is listed with what it takes.
  assert.match(commandHelp('sagemaker train'), /\nHyperparameters \(hyperparameters\.json; each a string, as SageMaker sends them\):\n  preset {9}smoke \| cpu \| gpu/);
  assert.match(commandHelp('sagemaker train'), /\n  calibrate {6}true \| false \(default true\)/);

  // A command's --help prints its own usage and runs nothing.
  const usage = cli('evaluate', '--help', '--data', 'nowhere');
  assert.equal(usage.code, 0);
  assert.match(usage.stdout, /^Usage: pneumotype evaluate \[options\]\n\n {2}evaluate {2}metrics with 95 % patient-bootstrap intervals/);
  assert.match(usage.stdout, /--predictions FILE\.csv\]\n/);
  assert.match(usage.stdout, /\nOptions for every command: --json/);
  assert.doesNotMatch(usage.stdout, /\n {2}train /);
  // Help for a command that does not exist is a mistake, as the command itself is.
  for (const args of [['frobnicate', '-h'], ['help', 'frobnicate']]) {
    const r = cli(...args);
    assert.deepEqual([r.code, r.stdout], [2, ''], args.join(' '));
    assert.equal(r.stderr, `pneumotype: unknown command "frobnicate"\n\n${cli('help').stdout}`);
  }
  assert.equal(cli('help', 'evaluate').stdout, usage.stdout);
});

test('fetch names a bad source', () => {
  const r = cli('fetch', '--source', 'v9', '--quiet');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^pneumotype fetch: .*"v9"/);
});

test('extract of an archive without chest X-ray entries is an error, not "extracted 0 files"', async () => {
  const zip = new AdmZip();
  zip.addFile('OCT/train/CNV/CNV-1.jpeg', Buffer.from('not a chest X-ray'));
  const archive = join(tmp, 'oct-only.zip');
  zip.writeZip(archive);
  const r = cli('extract', '--archive', archive, '--out', join(tmp, 'oct-out'), '--quiet');
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `pneumotype extract: Archive "${archive}" holds no chest X-ray entries (a chest_xray/ folder as in ` +
    'ChestXRay2017.zip and ZhangLabData.zip, or {train,test}/{NORMAL,PNEUMONIA}/ folders); --all extracts every entry\n');
  assert.equal(cli('extract', '--archive', archive, '--out', join(tmp, 'oct-out'), '--all', '--quiet').code, 0);
  // The dataset's layout under another top folder is what relabel reads, so extract takes it too.
  const copy = new AdmZip();
  copy.addFile('Chest_XRay_224/train/NORMAL/IM-0115-0001.jpeg', Buffer.from('an image'));
  const rezipped = join(tmp, 'rezipped.zip');
  copy.writeZip(rezipped);
  const out = cli('extract', '--archive', rezipped, '--out', join(tmp, 'rezipped-out'), '--json', '--quiet');
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual((JSON.parse(out.stdout) as { entries: string[] }).entries, ['Chest_XRay_224/train/NORMAL/IM-0115-0001.jpeg']);
});

test('relabel then prepare on a fixture tree, with JSON output', async () => {
  const src = join(tmp, 'src');
  await writeTree(src, await datasetFiles({ perClass: { train: 4, test: 2 } }));
  const r = cli('relabel', '--from', src, '--out', join(tmp, 'labeled'), '--json', '--quiet');
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { changed: boolean; summary: { counts: unknown } };
  assert.equal(out.changed, true);
  assert.deepEqual(out.summary.counts, {
    train: { normal: 4, bacteria: 4, virus: 4, total: 12 },
    test: { normal: 2, bacteria: 2, virus: 2, total: 6 },
  });
  // A file where a folder is needed: one line naming it, no stack trace.
  const { writeFile: write } = await import('node:fs/promises');
  await write(join(tmp, 'plain.txt'), 'a file');
  const notDir = cli('relabel', '--from', src, '--out', join(tmp, 'plain.txt'), '--quiet');
  assert.equal(notDir.code, 1);
  assert.equal(notDir.stderr, `pneumotype relabel: the output folder "${join(tmp, 'plain.txt')}" is a file: choose another --out\n`);
  const again = cli('relabel', '--from', src, '--out', join(tmp, 'labeled'), '--quiet');
  assert.match(again.stdout, /^unchanged: .* already holds this dataset\n  train: 4 normal, 4 bacteria, 4 virus \(\d+ patients\)/);
  const p = cli('prepare', '--data', join(tmp, 'labeled'), '--cache', join(tmp, 'cache'), '--preset', 'smoke');
  assert.equal(p.code, 0, p.stderr);
  assert.match(p.stdout, /^cache written: .*32 px; \d+ train, \d+ validation, 6 test; 0 failed\)\n$/);
  assert.match(p.stderr, /prepare: /, 'progress is shown on stderr');
});

test('doctor says which backend was picked and why, and prints no proxy password or presigned signature', () => {
  const secret = spawnSync(process.execPath, [BIN, 'doctor', '--json'], {
    encoding: 'utf8', cwd: tmp, env: { ...process.env, HTTPS_PROXY: 'http://alice:s3cret@proxy:3128', PNEUMOTYPE_SOURCE: 'https://b.example/x.zip?X-Amz-Signature=zq9sigzq9' },
  });
  assert.equal(secret.status, 0, secret.stderr);
  assert.deepEqual((JSON.parse(secret.stdout) as { env: Record<string, string> }).env.HTTPS_PROXY, 'http://***@proxy:3128/');
  assert.deepEqual((JSON.parse(secret.stdout) as { env: Record<string, string> }).env.PNEUMOTYPE_SOURCE, 'https://b.example/x.zip?***');
  assert.ok(!/s3cret|zq9sigzq9/.test(secret.stdout));
  const r = cli('doctor', '--json');
  assert.equal(r.code, 0, r.stderr);
  const report = JSON.parse(r.stdout) as {
    pneumotype: string;
    tensorflow: { package: string; reasons: string[] };
    cpu: { cores: number };
    training: { engine: string; note: string };
    gpu: { cudaLibraries: Record<string, string | null> };
  };
  assert.ok(report.tensorflow.reasons.length > 0);
  assert.ok(report.cpu.cores >= 1);
  // Its own version, as --version prints it.
  const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  assert.equal(report.pneumotype, version);
  assert.deepEqual([cli('--version').stdout, cli('--version').code], [`${version}\n`, 0]);
  if (process.platform === 'linux') assert.deepEqual(Object.keys(report.gpu.cudaLibraries), ['libcudart.so.11.0', 'libcudnn.so.8', 'libcublas.so.11', 'libcublasLt.so.11', 'libcufft.so.10', 'libcurand.so.10', 'libcusolver.so.11', 'libcusparse.so.11']);
  if (process.env.CI === 'true' || process.env.PNEUMOTYPE_REQUIRE_NATIVE === '1') {
    assert.equal(report.tensorflow.package, '@tensorflow/tfjs-node');
    assert.deepEqual(report.training, { engine: 'graph', note: 'one TensorFlow graph per step (lib/graph-train.ts), stall guard 300 s; --eager trains op by op' });
  }
});

test('train, evaluate and predict from the command line (tiny preset)', async () => {
  const data = join(tmp, 'labeled');
  const t = cli('train', '--data', data, '--out', join(tmp, 'run'), '--cache', join(tmp, 'cache'), '--preset', 'tiny', '--epochs', '2', '--optimizer', 'sgd', '--learning-rate', '0.02', '--weight-decay', '5e-4', '--patience', '5', '--standardize', '--quiet');
  assert.equal(t.code, 0, t.stderr);
  const card = JSON.parse(await readFile(join(tmp, 'run', 'model', 'pneumotype.json'), 'utf8')) as { model: { standardize?: boolean }; training: { config: { optimizer: string; learningRate: number; weightDecay: number; patience: number } } };
  const { config } = card.training;
  assert.deepEqual([config.optimizer, config.learningRate, config.weightDecay, config.patience], ['sgd', 0.02, 5e-4, 5]);
  // The standardising first layer is saved with the model: evaluate and predict below load it from model.json.
  assert.equal(card.model.standardize, true);
  assert.match(t.stdout, /^best epoch \d of 2: validation accuracy \d\.\d{3}, macro-F1 \d\.\d{3}; model in .*run\/model\n$/);
  assert.match(t.stderr, /^epoch 1: loss /m);
  const e = cli('evaluate', '--model', join(tmp, 'run', 'model'), '--data', data, '--split', 'test', '--bootstrap', '50', '--quiet');
  const loud = cli('evaluate', '--model', join(tmp, 'run', 'model'), '--data', data, '--split', 'test', '--bootstrap', '20');
  assert.match(loud.stderr, /\n== evaluate: test: accuracy \d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\], macro-F1 \d\.\d{3} \(\d+ images\)\n$/);
  const plain = cli('evaluate', '--model', join(tmp, 'run', 'model'), '--data', data, '--split', 'test', '--bootstrap', '0');
  assert.match(plain.stderr, /\n== evaluate: test: accuracy \d\.\d{3}, macro-F1 \d\.\d{3} \(\d+ images\)\n$/);
  assert.equal(e.code, 0, e.stderr);
  const report = JSON.parse(e.stdout) as { n: number; accuracy: { value: number; low: number; high: number } };
  assert.equal(report.n, 6);
  const c = cli('calibrate', '--model', join(tmp, 'run', 'model'), '--data', data, '--out', join(tmp, 'calibrated'), '--quiet');
  assert.equal(c.code, 0, c.stderr);
  assert.match(c.stdout, /^temperature \d+\.\d{3} fitted on \d+ val images: expected calibration error \d\.\d{3} -> \d\.\d{3} \(\d\.\d{3} cross-fitted by patient\), log loss \d+\.\d{3} -> \d+\.\d{3}; model in .*calibrated\n$/);
  assert.equal(cli('calibrate', '--data', data).stderr, 'pneumotype calibrate: calibrate needs --model DIR (the folder of a trained model)\nRun `pneumotype help calibrate` for usage.\n');
  const { readdir } = await import('node:fs/promises');
  const img = join(data, 'test', 'virus', (await readdir(join(data, 'test', 'virus')))[0] ?? '');
  const p = cli('predict', '--model', join(tmp, 'run', 'model'), img, join(tmp, 'missing.jpeg'));
  assert.equal(p.code, 0, p.stderr);
  const lines = p.stdout.trim().split('\n').map((l) => JSON.parse(l) as { file: string; label?: string; error?: string });
  assert.equal(lines[0]?.file, img);
  assert.ok(['normal', 'bacteria', 'virus'].includes(lines[0]?.label ?? ''));
  assert.match(lines[1]?.error ?? '', /^"[^"]*missing\.jpeg": cannot be read/);
  assert.equal(p.stderr, 'pneumotype predict: warning: 1 of 2 image(s) could not be read (their lines carry "error")\n');
  assert.equal(cli('evaluate', '--split', 'train').stderr, 'pneumotype evaluate: --split "train" is not one of "test", "val"\nRun `pneumotype help evaluate` for usage.\n');
  assert.equal(cli('train', '--data', data, '--out', join(tmp, 'run2'), '--augment', 'wild').stderr, 'pneumotype train: --augment "wild" is not one of "none", "basic", "traces"\nRun `pneumotype help train` for usage.\n');
  assert.equal(cli('train', '--data', data, '--out', join(tmp, 'run2'), '--optimizer', 'rmsprop').stderr, 'pneumotype train: --optimizer "rmsprop" is not one of "adam", "sgd"\nRun `pneumotype help train` for usage.\n');
  assert.equal(cli('train', '--data', data, '--out', join(tmp, 'run2'), '--learning-rate', '0').stderr, 'pneumotype train: --learning-rate "0" is not a positive number\nRun `pneumotype help train` for usage.\n');
  assert.equal(cli('train', '--data', data, '--out', join(tmp, 'run2'), '--patience', '2.5').stderr, 'pneumotype train: --patience "2.5" is not a whole number of at least 1\nRun `pneumotype help train` for usage.\n');
  assert.equal(cli('train', '--data', data, '--out', join(tmp, 'run2'), '--weight-decay=-1').stderr, 'pneumotype train: --weight-decay "-1" is not a number of at least 0\nRun `pneumotype help train` for usage.\n');
  assert.equal(
    cli('train', '--data', data, '--out', join(tmp, 'run2'), '--cache', join(tmp, 'cache'), '--preset', 'tiny', '--antialias').stderr,
    'pneumotype train: --antialias is for the resnet model only (the model is "tiny")\nRun `pneumotype help train` for usage.\n',
  );
  assert.equal(
    cli('train', '--data', data, '--out', join(tmp, 'run2'), '--cache', join(tmp, 'cache'), '--preset', 'tiny', '--depth', '1,1').stderr,
    'pneumotype train: --depth is for the resnet model only (the model is "tiny")\nRun `pneumotype help train` for usage.\n',
  );
});

test('train --resume takes a default given explicitly (--depth 2,2,2,2 of the resnet) as the run it continues', () => {
  const out = join(tmp, 'run-depth');
  const args = ['train', '--data', join(tmp, 'labeled'), '--out', out, '--cache', join(tmp, 'cache'), '--preset', 'tiny', '--model', 'resnet', '--epochs', '1', '--quiet'];
  // --resume where there is no run yet: said, then a new run starts.
  const first = cli(...args, '--resume');
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stderr.split('\n')[0], `pneumotype train: nothing to resume in ${JSON.stringify(out)} (no checkpoint there yet): starting a new run`);
  const same = cli(...args, '--resume', '--depth', '2,2,2,2');
  assert.equal(same.code, 0, same.stderr);
  const other = cli(...args, '--resume', '--depth', '1,1,1,1');
  assert.equal(other.code, 1);
  assert.match(other.stderr, new RegExp(`^pneumotype train: cannot resume ${JSON.stringify(out).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: it was started with another configuration: modelDepth default \\(now "1,1,1,1"\\); a resume continues the same run: give the settings it was started with, or train into another --out\\n$`));
});

test('Ctrl-C (130) or SIGTERM (143) during train ends it and says how to resume', async () => {
  const out = join(tmp, 'run-interrupted');
  const hint = `\npneumotype train: interrupted; the epochs finished so far (if any) are saved in "${join(out, 'checkpoints', 'last')}": run the same command with --resume to continue\n`;
  // Ctrl-C, then SIGTERM (`docker stop`) on the resumed run: each ends with its status, the hint, and no lock left.
  for (const [signal, status, resume] of [['SIGINT', 130, []], ['SIGTERM', 143, ['--resume']]] as const) {
    const child = spawn(process.execPath, [BIN, 'train', '--data', join(tmp, 'labeled'), '--out', out, '--cache', join(tmp, 'cache'), '--preset', 'tiny', '--epochs', '500', '--patience', '1000', ...resume], { cwd: tmp, env: { ...process.env, PNEUMOTYPE_SOURCE: '' } });
    let stderr = '';
    let sent = false;
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
      if (!sent && /^epoch \d+: .*\n(.|\n)*^epoch \d+: /m.test(stderr)) sent = child.kill(signal);
    });
    const [code] = (await once(child, 'exit')) as [number | null];
    assert.equal(code, status, stderr);
    assert.ok(stderr.endsWith(hint), stderr);
    assert.ok(existsSync(join(out, 'checkpoints', 'last', 'model.json')));
    assert.equal(existsSync(`${out}.lock`), false);
  }
});

test('closed pipes: serve outlives a log reader that went away; a closed stderr changes no exit status', async () => {
  const server = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--host', '127.0.0.1'], { cwd: tmp });
  try {
    let out = '';
    server.stdout.setEncoding('utf8');
    const port = await new Promise<number>((resolvePort, reject) => {
      server.stdout.on('data', (chunk: string) => {
        out += chunk;
        const m = /"event":"listening".*"port":(\d+)/.exec(out);
        if (m) resolvePort(Number(m[1]));
      });
      server.once('exit', (code) => reject(new Error(`serve exited with ${code}`)));
    });
    server.stdout.destroy(); // `serve | head -1`: every later log line meets a closed pipe
    // /ping answers 503 until the model is loaded (a log line of its own, written into the closed pipe).
    for (let waited = 0; (await fetch(`http://127.0.0.1:${port}/ping`)).status !== 200; waited += 100) {
      assert.ok(waited < 120_000, 'the model never loaded');
      await new Promise((r) => setTimeout(r, 100));
    }
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`http://127.0.0.1:${port}/ping`);
      assert.equal(res.status, 200);
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.equal(server.exitCode, null, 'still serving');
    server.kill('SIGTERM');
    const [code] = (await once(server, 'exit')) as [number | null];
    assert.equal(code, 0);
  } finally {
    if (server.exitCode === null) server.kill('SIGKILL');
  }
  // A usage error whose stderr reader is gone still exits 2 (not 1 from an unhandled EPIPE).
  const child = spawn(process.execPath, [BIN, 'frobnicate'], { cwd: tmp });
  child.stderr.destroy();
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(code, 2);
});

test('predict without --model uses the shipped model in models/default', async () => {
  const data = join(tmp, 'labeled');
  const { readdir } = await import('node:fs/promises');
  const img = join(data, 'test', 'normal', (await readdir(join(data, 'test', 'normal')))[0] ?? '');
  const p = cli('predict', img);
  assert.equal(p.code, 0, p.stderr);
  const line = JSON.parse(p.stdout.trim()) as { file: string; label: string; probabilities: Record<string, number> };
  assert.equal(line.file, img);
  assert.deepEqual(Object.keys(line.probabilities), ['normal', 'bacteria', 'virus']);
  const card = JSON.parse(await (await import('node:fs/promises')).readFile(resolve('models/default/pneumotype.json'), 'utf8')) as { imageSize: number; classes: string[] };
  assert.deepEqual(card.classes, ['normal', 'bacteria', 'virus']);

  // A folder: one line per image under it, in sorted order.
  const folder = cli('predict', join(data, 'test'));
  assert.equal(folder.code, 0, folder.stderr);
  const files = folder.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { file: string }).file);
  const all = (await readdir(join(data, 'test'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile());
  assert.equal(files.length, all.length);
  assert.ok(files.every((f) => f.startsWith(join(data, 'test', ''))), files.join(' '));
  assert.deepEqual([...files].sort(), files);
  // macOS's copies beside the images are not images.
  const { cp, mkdir, writeFile } = await import('node:fs/promises');
  const mac = join(tmp, 'mac');
  await cp(join(data, 'test', 'virus'), join(mac, 'virus'), { recursive: true });
  await mkdir(join(mac, '__MACOSX', 'virus'), { recursive: true });
  for (const f of await readdir(join(mac, 'virus'))) await writeFile(join(mac, '__MACOSX', 'virus', `._${f}`), 'Mac OS X');
  await writeFile(join(mac, 'virus', '._extra.jpeg'), 'Mac OS X');
  const macLines = cli('predict', mac).stdout.trim().split('\n');
  assert.equal(macLines.length, (await readdir(join(data, 'test', 'virus'))).length);
  assert.ok(macLines.every((l) => 'label' in (JSON.parse(l) as object)), macLines.join('\n'));
  // A reader that stops early (`| head -1`) ends predict quietly.
  const child = spawn(process.execPath, [BIN, 'predict', ...Array.from({ length: 200 }, () => img)], { cwd: tmp });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  child.stdout.once('data', () => child.stdout.destroy());
  const [code] = (await once(child, 'exit')) as [number | null];
  assert.equal(withoutTfLog(stderr), '');
  assert.equal(code, 0);
  const missing = cli('predict', join(tmp, 'missing.jpeg'));
  assert.equal(missing.code, 1);
  // A folder without images gets its error line; the other arguments are scored all the same.
  const { mkdir: makeDir } = await import('node:fs/promises');
  await makeDir(join(tmp, 'folder-without-images'), { recursive: true });
  const withEmpty = cli('predict', img, join(tmp, 'folder-without-images'));
  assert.equal(withEmpty.code, 0);
  const [scored, emptyLine] = withEmpty.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.ok(scored && 'label' in scored);
  assert.deepEqual(emptyLine, { file: join(tmp, 'folder-without-images'), error: `folder "${join(tmp, 'folder-without-images')}" holds no image files (.jpeg, .jpg, .png, .webp, .tif, .tiff)` });
  assert.match(missing.stdout, /^\{"file":".*missing\.jpeg","error":".*cannot be read \(ENOENT/);
  // evaluate names the images it could not read even with --quiet: they are missing from every figure.
  const withBad = join(tmp, 'with-bad');
  await cp(join(data, 'test', 'normal'), join(withBad, 'test', 'normal'), { recursive: true });
  await mkdir(join(withBad, 'test', 'virus'));
  await writeFile(join(withBad, 'test', 'virus', 'person1_virus_1.jpeg'), '');
  const e = cli('evaluate', '--data', withBad, '--bootstrap', '0', '--quiet');
  assert.equal(e.code, 0, e.stderr);
  const normals = (await readdir(join(data, 'test', 'normal'))).length;
  assert.equal((JSON.parse(e.stdout) as { n: number }).n, normals);
  // The summary is a step line: it stays with --quiet.
  const [summary = '', ...warning] = e.stderr.split(/(?<=\n)/);
  assert.match(summary, new RegExp(`^== evaluate: test: accuracy \\d\\.\\d{3}, macro-F1 \\d\\.\\d{3} \\(${normals} images, 1 left out \\(listed in "failed" with why\\)\\)\n$`));
  assert.equal(
    warning.join(''),
    `pneumotype evaluate: warning: 1 image(s) could not be used and are left out of the scores (n = ${normals}):\n` +
      `  test/virus/person1_virus_1.jpeg: "${join(withBad, 'test', 'virus', 'person1_virus_1.jpeg')}": not a decodable image (the file is empty)\n`,
  );
  await mkdir(join(tmp, 'no-images'));
  const onlyEmpty = cli('predict', join(tmp, 'no-images'));
  assert.equal(onlyEmpty.code, 1, 'nothing scored');
  assert.equal(onlyEmpty.stdout, `${JSON.stringify({ file: join(tmp, 'no-images'), error: `folder "${join(tmp, 'no-images')}" holds no image files (.jpeg, .jpg, .png, .webp, .tif, .tiff)` })}\n`);
  assert.equal(onlyEmpty.stderr, 'pneumotype predict: warning: 1 of 1 image(s) could not be read (their lines carry "error")\n');
});
