import { existsSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { registry } from '../../src/ops/metrics.ts';

/**
 * There is no Docker engine here to run docker-compose.yml, so its contract is checked by
 * reading it: the services the README promises, the settings they need, the files they mount,
 * and a dashboard whose every query names a metric pg2crm really exports.
 */
const root = new URL('../../', import.meta.url).pathname;

interface Service {
  image?: string;
  build?: string;
  command?: string[];
  volumes?: string[];
  environment?: Record<string, string>;
  deploy?: { replicas?: number };
}

const compose = parse(readFileSync(`${root}docker-compose.yml`, 'utf8'), { merge: true }) as { services: Record<string, Service> };
const services = compose.services;

describe('docker-compose.yml', () => {
  it('runs the whole stack: PostgreSQL with logical WAL, Kafka, registry, simulator, source + 2 sinks, Prometheus, Grafana', () => {
    expect(Object.keys(services).sort()).toEqual(['crm-sim', 'grafana', 'kafka', 'postgres', 'prometheus', 'registry', 'sink', 'source']);
    expect(services.postgres?.command?.join(' ')).toContain('wal_level=logical');
    expect(services.kafka?.environment?.KAFKA_PROCESS_ROLES).toBe('broker,controller');
    expect(services.source?.command).toEqual(['run', '--config', '/etc/pg2crm/connector.yaml', '--role', 'source']);
    expect(services.sink?.command).toEqual(['run', '--config', '/etc/pg2crm/connector.yaml', '--role', 'sink']);
    expect(services.sink?.deploy?.replicas).toBe(2);
    expect(services.sink?.environment?.PG2CRM_OPS_PORT).toBe('9464');
    expect(services['crm-sim']?.command).toContain('0.0.0.0');
  });

  it('mounts files that exist in the repository', () => {
    for (const [name, svc] of Object.entries(services)) {
      for (const volume of svc.volumes ?? []) {
        const host = volume.split(':')[0]!;
        expect(existsSync(`${root}${host}`), `${name} mounts ${host}`).toBe(true);
      }
    }
  });

  it('has Prometheus scrape the connector ops port of every source and sink replica', () => {
    const prom = parse(readFileSync(`${root}deploy/prometheus.yml`, 'utf8')) as {
      scrape_configs: { dns_sd_configs: { names: string[]; port: number }[] }[];
    };
    const sd = prom.scrape_configs[0]?.dns_sd_configs[0];
    expect(sd?.names.sort()).toEqual(['sink', 'source']);
    expect(sd?.port).toBe(9464);
  });
});

describe('Grafana dashboard', () => {
  const dashboard = JSON.parse(readFileSync(`${root}deploy/grafana/dashboards/pg2crm.json`, 'utf8')) as {
    uid: string;
    panels: { title: string; targets: { expr: string }[] }[];
  };

  it('queries only metrics that pg2crm exports', async () => {
    const exported = new Set<string>();
    for (const m of await registry.getMetricsAsJSON()) {
      exported.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(`${m.name}${s}`);
    }
    const used = dashboard.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/pg2crm_[a-z_]+/g) ?? []));
    expect(used.length).toBeGreaterThan(5);
    expect(used.filter((name) => !exported.has(name))).toEqual([]);
  });

  it('shows lag, throughput and budgets', () => {
    const titles = dashboard.panels.map((p) => p.title).join(' | ');
    expect(titles).toMatch(/lag/i);
    expect(titles).toMatch(/throughput/i);
    expect(titles).toMatch(/budget/i);
  });
});
