import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { loadConfig } from '../../src/config.ts';
import { registry } from '../../src/metrics.ts';

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
  ports?: string[];
  secrets?: string[];
  healthcheck?: { disable?: boolean };
}

const compose = parse(readFileSync(`${root}docker-compose.yml`, 'utf8'), { merge: true }) as {
  services: Record<string, Service>;
  secrets: Record<string, { file: string }>;
};
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

  it('has Prometheus scrape the connector ops port of every source and sink replica, with the ops token', () => {
    const prom = parse(readFileSync(`${root}deploy/prometheus.yml`, 'utf8')) as {
      scrape_configs: {
        dns_sd_configs: { names: string[]; port: number }[];
        authorization?: { type?: string; credentials_file?: string };
      }[];
    };
    const sd = prom.scrape_configs[0]?.dns_sd_configs[0];
    expect(sd?.names.sort()).toEqual(['sink', 'source']);
    expect(sd?.port).toBe(9464);
    expect(prom.scrape_configs[0]?.authorization).toEqual({ type: 'Bearer', credentials_file: '/run/secrets/ops_token' });
    expect(services.prometheus?.secrets).toContain('ops_token');
  });

  it('publishes ports on 127.0.0.1 only', () => {
    const published = Object.entries(services).flatMap(([name, svc]) => (svc.ports ?? []).map((p) => [name, p] as const));
    expect(published.length).toBeGreaterThanOrEqual(4);
    for (const [name, p] of published) expect(p, name).toMatch(/^127\.0\.0\.1:\d+:\d+$/);
  });

  it('keeps passwords and tokens in compose secrets that the services read through *_FILE', () => {
    // No credential written into the compose file itself.
    const text = readFileSync(`${root}docker-compose.yml`, 'utf8');
    expect(text).not.toMatch(/POSTGRES_PASSWORD:|_TOKEN:|postgresql:\/\/[^\s]*:[^\s]*@/);
    for (const [name, secret] of Object.entries(compose.secrets)) {
      expect(existsSync(`${root}${secret.file}`), `secret ${name} file ${secret.file}`).toBe(true);
    }
    const used = new Set(Object.values(services).flatMap((s) => s.secrets ?? []));
    expect([...used].sort()).toEqual(Object.keys(compose.secrets).sort());
    for (const role of ['source', 'sink'] as const) {
      const svc = services[role]!;
      expect(svc.secrets?.sort()).toEqual(['crm_token', 'ops_token', 'pg_url']);
      expect(svc.environment).toMatchObject({
        PG_URL_FILE: '/run/secrets/pg_url',
        ZENDESK_SELL_TOKEN_FILE: '/run/secrets/crm_token',
        PG2CRM_OPS_TOKEN_FILE: '/run/secrets/ops_token',
      });
      expect(svc.environment?.PG_URL).toBeUndefined();
    }
    expect(services.postgres?.environment?.POSTGRES_PASSWORD_FILE).toBe('/run/secrets/pg_password');
    // The password postgres gets is the one inside the URL the connectors get.
    const pgUrl = new URL(readFileSync(`${root}${compose.secrets.pg_url!.file}`, 'utf8').trim());
    expect(decodeURIComponent(pgUrl.password)).toBe(readFileSync(`${root}${compose.secrets.pg_password!.file}`, 'utf8').trim());
    expect(readFileSync(`${root}${compose.secrets.ops_token!.file}`, 'utf8').trim().length).toBeGreaterThanOrEqual(16);
  });

  it("sets the connectors' ops host explicitly: every interface of their container, for Prometheus", () => {
    expect(services.source?.environment?.PG2CRM_OPS_HOST).toBe('0.0.0.0');
    expect(services.sink?.environment?.PG2CRM_OPS_HOST).toBe('0.0.0.0');
    expect(services.source?.ports ?? []).toEqual([]);
    expect(services.sink?.ports ?? []).toEqual([]);
  });

  it('the shipped connector config reads the compose secrets and ops settings', () => {
    const env = {
      PG_URL_FILE: `${root}deploy/secrets/pg_url`,
      ZENDESK_SELL_TOKEN_FILE: `${root}deploy/secrets/crm_token`,
      PG2CRM_OPS_TOKEN_FILE: `${root}deploy/secrets/ops_token`,
      ...Object.fromEntries(Object.entries(services.sink!.environment!).filter(([k]) => !k.endsWith('_FILE'))),
    };
    const config = loadConfig(`${root}connectors/zendesk-sell.yaml`, env);
    expect(config.postgres.url).toBe(readFileSync(`${root}deploy/secrets/pg_url`, 'utf8').trim());
    expect(config.crm.auth.token).toBe('sim-token');
    expect(config.ops).toMatchObject({
      port: 9464,
      host: '0.0.0.0',
      token: readFileSync(`${root}deploy/secrets/ops_token`, 'utf8').trim(),
    });
  });

  it('runs the simulator without its /__sim/* control routes', () => {
    expect(services['crm-sim']?.command).not.toContain('--control');
    expect(services['crm-sim']?.healthcheck?.disable).toBe(true);
  });
});

describe('Dockerfile', () => {
  const dockerfile = readFileSync(`${root}Dockerfile`, 'utf8');
  const args = Object.fromEntries([...dockerfile.matchAll(/^ARG (\w+)=(\S+)$/gm)].map((m) => [m[1]!, m[2]!]));
  const froms = [...dockerfile.matchAll(/^FROM (\S+)/gm)].map((m) =>
    m[1]!.replace(/^\$\{(\w+)\}$/, (_x, name: string) => args[name] ?? name),
  );

  it('pins every base image by digest', () => {
    expect(froms.length).toBe(2);
    for (const image of froms) expect(image).toMatch(/^node:24-bookworm-slim@sha256:[0-9a-f]{64}$/);
  });

  it('has a HEALTHCHECK on /healthz with node (no curl in the image) and an ops port the shipped configs use', () => {
    const health = /^HEALTHCHECK .* CMD (.*)$/m.exec(dockerfile)?.[1] ?? '';
    expect(health).toMatch(/^node -e /);
    expect(health).toContain('/healthz');
    expect(health).toContain('PG2CRM_OPS_PORT');
    expect(dockerfile).toMatch(/^ENV PG2CRM_OPS_PORT=9464$/m);
    for (const file of readdirSync(`${root}connectors`)) {
      const config = loadConfig(`${root}connectors/${file}`, { PG2CRM_OPS_PORT: '9464' });
      expect(config.ops.port, file).toBe(9464);
      // Loopback unless the operator opens it; the probe runs inside the container.
      expect(config.ops.host, file).toBe('127.0.0.1');
    }
  });

  it('keeps the demo secrets out of the build context', () => {
    expect(readFileSync(`${root}.dockerignore`, 'utf8').split('\n')).toContain('deploy/secrets');
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
