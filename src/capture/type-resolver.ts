import type pg from 'pg';
import { openPg, type PgTarget } from './pg-connect.ts';
import type { ColumnShape } from '../events/row-codec.ts';

/**
 * Domains -> their base types, so a domain column is encoded as its base type (a domain over
 * numeric(12, 2) becomes decimal(12, 2)). The catalog and pgoutput's Relation message both name
 * a domain column by the domain's OID with typmod -1; the base type and its typmod are found as
 * PostgreSQL's getBaseTypeAndTypmod does: follow typbasetype, keeping the typtypmod of the last
 * domain (src/backend/utils/cache/lsyscache.c).
 */
export interface BaseType {
  oid: number;
  typeMod: number;
}

/** Types from pg_type.dat have OIDs below FirstGenbkiObjectId (src/include/access/transam.h): none is a domain. */
const FIRST_GENBKI_OBJECT_ID = 10_000;

/** OID -> base type for domains, null for every other type. */
export async function readBaseTypes(client: pg.Client, oids: number[]): Promise<Map<number, BaseType | null>> {
  const res = await client.query<{ start: number; oid: number; mod: number }>(
    `WITH RECURSIVE chain AS (
       SELECT t.oid AS start, t.oid, t.typtype, t.typbasetype, t.typtypmod, -1 AS mod, 0 AS depth
         FROM pg_type t WHERE t.oid = ANY ($1::oid[])
       UNION ALL
       SELECT c.start, b.oid, b.typtype, b.typbasetype, b.typtypmod, c.typtypmod, c.depth + 1
         FROM chain c JOIN pg_type b ON b.oid = c.typbasetype WHERE c.typtype = 'd'
     )
     SELECT DISTINCT ON (start) start::int8::float8 AS start, oid::int8::float8 AS oid, mod FROM chain ORDER BY start, depth DESC`,
    [oids],
  );
  const out = new Map<number, BaseType | null>(oids.map((o) => [o, null]));
  for (const r of res.rows) {
    if (r.oid !== r.start) out.set(r.start, { oid: r.oid, typeMod: r.mod });
  }
  return out;
}

function userTypes(columns: ColumnShape[], known: Map<number, BaseType | null>): number[] {
  return [...new Set(columns.map((c) => c.typeOid).filter((oid) => oid >= FIRST_GENBKI_OBJECT_ID && !known.has(oid)))];
}

function annotate(columns: ColumnShape[], known: Map<number, BaseType | null>): void {
  for (const c of columns) {
    const base = known.get(c.typeOid);
    if (base) {
      c.baseTypeOid = base.oid;
      c.baseTypeMod = base.typeMod;
    }
  }
}

/** Sets `baseTypeOid` / `baseTypeMod` on the domain columns among `columns`. */
export async function resolveDomains(client: pg.Client, columns: ColumnShape[]): Promise<void> {
  const oids = userTypes(columns, new Map());
  if (oids.length) annotate(columns, await readBaseTypes(client, oids));
}

/**
 * The same for the replication stream, with a cache: a Relation message arrives on every
 * (re)connection and after each ALTER TABLE, and a domain's base type never changes. A lookup
 * opens a short connection only when a Relation names a user type not seen before.
 */
export class DomainResolver {
  private readonly url: PgTarget;
  private readonly known = new Map<number, BaseType | null>();

  constructor(url: PgTarget) {
    this.url = url;
  }

  async annotate(columns: ColumnShape[]): Promise<void> {
    const missing = userTypes(columns, this.known);
    if (missing.length) {
      const client = await openPg(this.url);
      try {
        for (const [oid, base] of await readBaseTypes(client, missing)) this.known.set(oid, base);
      } finally {
        await client.end();
      }
    }
    annotate(columns, this.known);
  }
}
