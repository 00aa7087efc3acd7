import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A memory cgroup standing in for a container's memory limit (`docker run --memory`), for the
 * benches that weigh the connector: a child started in it sees the limit as Node does in a
 * container (`process.constrainedMemory()`, which sizes V8's heap) and the kernel kills it when
 * it goes over, as it would in production. cgroup v1 (`memory.limit_in_bytes`) or v2
 * (`memory.max`), under this process's own cgroup; undefined where neither can be written
 * (not root, no memory controller), and the bench says so.
 */
export interface ContainerCgroup {
  dir: string;
  limitBytes: number;
  /** Times the kernel's OOM killer ran in it (a process over the limit). */
  oomKills(): number;
  /** Most memory charged to it at once (RSS and page cache), bytes; v2 kernels before 5.19 have no peak: NaN. */
  peakBytes(): number;
  remove(): void;
}

const V1_ROOT = '/sys/fs/cgroup/memory';
const V2_ROOT = '/sys/fs/cgroup';

function ownPath(controller: 'memory' | ''): string | undefined {
  for (const line of readFileSync('/proc/self/cgroup', 'utf8').split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    if (controller === '' ? controllers === '' && line.startsWith('0:') : controllers!.split(',').includes(controller)) return path;
  }
  return undefined;
}

function readNumber(file: string, field?: string): number {
  try {
    const text = readFileSync(file, 'utf8');
    if (field === undefined) return Number(text.trim());
    const m = new RegExp(`^${field} (\\d+)$`, 'm').exec(text);
    return m ? Number(m[1]) : 0;
  } catch {
    return Number.NaN;
  }
}

export function containerCgroup(name: string, limitBytes: number): ContainerCgroup | undefined {
  try {
    const v1 = ownPath('memory');
    if (v1 !== undefined && existsSync(join(V1_ROOT, v1, 'memory.limit_in_bytes'))) {
      const dir = join(V1_ROOT, v1, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'memory.limit_in_bytes'), String(limitBytes));
      // No swap to spill into: over the limit means killed, as in a container without swap.
      if (existsSync(join(dir, 'memory.memsw.limit_in_bytes'))) writeFileSync(join(dir, 'memory.memsw.limit_in_bytes'), String(limitBytes));
      return {
        dir,
        limitBytes,
        oomKills: () => readNumber(join(dir, 'memory.oom_control'), 'oom_kill'),
        peakBytes: () => readNumber(join(dir, 'memory.max_usage_in_bytes')),
        remove: () => rmdirSync(dir),
      };
    }
    const v2 = ownPath('');
    if (v2 !== undefined && readFileSync(join(V2_ROOT, 'cgroup.controllers'), 'utf8').split(/\s+/).includes('memory')) {
      const dir = join(V2_ROOT, v2, name);
      mkdirSync(dir, { recursive: true });
      writeFileSync(join(dir, 'memory.max'), String(limitBytes));
      writeFileSync(join(dir, 'memory.swap.max'), '0');
      return {
        dir,
        limitBytes,
        oomKills: () => readNumber(join(dir, 'memory.events'), 'oom_kill'),
        peakBytes: () => readNumber(join(dir, 'memory.peak')),
        remove: () => rmdirSync(dir),
      };
    }
  } catch {
    // Not writable here: the caller runs without a limit and says so.
  }
  return undefined;
}

/** NODE_OPTIONS the container image sets (Dockerfile `ENV NODE_OPTIONS=...`), so a bench runs the connector as the image does. */
export function imageNodeOptions(): string | undefined {
  const dockerfile = readFileSync(new URL('../../Dockerfile', import.meta.url), 'utf8');
  return /^ENV NODE_OPTIONS=(\S+)/m.exec(dockerfile)?.[1]?.replace(/^"|"$/g, '');
}
