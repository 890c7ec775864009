// A real small file system (tmpfs) for tests of a full disk: mounted where privileges allow, else the test skips.
import { spawnSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';

/**
 * Mounts a tmpfs of `size` (e.g. '64k') at `dir`, runs `fn`, unmounts. Returns false, running nothing, where this
 * process may not mount (not root, or a container that forbids it): the caller skips, it never fakes a full disk.
 */
export async function withSmallDisk(dir: string, size: string, fn: () => Promise<void>): Promise<boolean> {
  await mkdir(dir, { recursive: true });
  if (spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' }).status !== 0) return false;
  try {
    await fn();
  } finally {
    spawnSync('umount', [dir], { stdio: 'ignore' });
  }
  return true;
}
