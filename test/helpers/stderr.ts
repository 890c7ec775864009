// What a command printed to stderr, less libtensorflow's own start-up log lines, which no setting quiets.

/**
 * `text` without libtensorflow's log records: absl's notice that messages before its initialisation go to stderr,
 * records in its `I0000 00:00:…  pid file.cc:line] …` form, and the lines such a record continues on. On CPUs with
 * AVX-512, libtensorflow 2.21 writes them at start-up ("oneDNN custom operations are on", or the CPU features it was
 * not built for) whatever TF_CPP_MIN_LOG_LEVEL says.
 */
export function withoutTfLog(text: string): string {
  const lines = text.split('\n');
  const kept: string[] = [];
  let inRecord = false;
  for (const line of lines) {
    if (line === 'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR') continue;
    if (/^[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [\w.-]+:\d+\] /.test(line)) {
      inRecord = true;
      continue;
    }
    // cpu_feature_guard's record goes on for one more line.
    if (inRecord && /^To enable the following instructions: /.test(line)) continue;
    inRecord = false;
    kept.push(line);
  }
  return kept.join('\n');
}
