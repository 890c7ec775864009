// The `pneumotype` command line: parses arguments, renders progress in the terminal, prints results.

/** Runs the CLI with `argv` (without node and script); resolves to the exit code. */
export async function main(argv: readonly string[]): Promise<number> {
  process.stderr.write(`pneumotype: not implemented yet: ${argv.join(' ')}\n`);
  return 2;
}
