import { type ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';

/**
 * The real connector as a child process (`pg2crm run --config <file> --role <role>`) for the
 * benches that time or weigh it (bench:latency, bench:memory): its pid for /proc, its last
 * output for when it fails, a clean stop (SIGTERM, SIGKILL after 30 s); and the readers those
 * benches share: memory from /proc/<pid>/status, a free TCP port for `ops.port`, /metrics.
 */
const root = new URL('../../', import.meta.url).pathname;

export type Role = 'all' | 'source' | 'sink';

export interface ConnectorProcess {
  role: Role;
  pid: number;
  /** Throws with the child's last output when it has exited. */
  check(when: string): void;
  output(): string;
  stop(): Promise<void>;
}

/**
 * `nodeOptions`: the child's NODE_OPTIONS (e.g. `--max-old-space-size=192`), else this process's.
 * `cgroupDir`: a cgroup the child enters before Node starts (container-cgroup.ts), so Node sizes
 * its heap from that cgroup's limit as it would in a container.
 */
export function startConnector(configFile: string, role: Role, nodeOptions?: string, cgroupDir?: string): ConnectorProcess {
  let output = '';
  const command = [process.execPath, join(root, 'bin/pg2crm.js'), 'run', '--config', configFile, '--role', role];
  const env: NodeJS.ProcessEnv = nodeOptions === undefined ? { ...process.env } : { ...process.env, NODE_OPTIONS: nodeOptions };
  // The shell moves itself into the cgroup, then becomes Node (exec keeps the pid).
  const [file, ...args] =
    cgroupDir === undefined ? command : ['/bin/sh', '-c', 'echo $$ > "$PG2CRM_CGROUP_PROCS" && exec "$@"', 'sh', ...command];
  if (cgroupDir !== undefined) env.PG2CRM_CGROUP_PROCS = join(cgroupDir, 'cgroup.procs');
  const child: ChildProcess = spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const keep = (d: Buffer): void => void (output = (output + d.toString()).slice(-20_000));
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  if (child.pid === undefined) throw new Error(`cannot start pg2crm run --role ${role}`);
  return {
    role,
    pid: child.pid,
    output: () => output,
    check(when) {
      if (child.exitCode === null && child.signalCode === null) return;
      throw new Error(`pg2crm run --role ${role} exited (${child.exitCode ?? child.signalCode}) ${when}; its output:\n${output}`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}

/** Resident memory of a process in bytes: now (VmRSS) and its peak so far (VmHWM); undefined once it is gone. */
export function processMemory(pid: number): { rss: number; hwm: number } | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}

/** A TCP port free right now on 127.0.0.1 (for a child's `ops.port`). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** The samples of a Prometheus text page, summed over labels per metric name (`name_bucket` etc. kept apart). */
export async function scrapeMetrics(port: number): Promise<Map<string, number>> {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  if (!res.ok) throw new Error(`GET http://127.0.0.1:${port}/metrics answered ${res.status}`);
  const out = new Map<string, number>();
  for (const line of (await res.text()).split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const v = Number(m[2]);
    if (Number.isFinite(v)) out.set(m[1]!, (out.get(m[1]!) ?? 0) + v);
  }
  return out;
}

export const MB = 1024 * 1024;
