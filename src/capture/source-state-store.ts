import type pg from 'pg';
import { openPg, type PgTarget } from './pg-connect.ts';
import { readState, type SourceState, writeState } from './slot-admin.ts';

/**
 * The source's durable state (slot-admin.ts says where it lives and why), held in memory and
 * written through one connection, one write at a time: the initial snapshot, the incremental
 * snapshot driver and signal handling all update it, and a later write must never be overtaken
 * by an earlier one.
 */
export class SourceStateStore {
  private readonly client: pg.Client;
  private readonly publication: string;
  private state: SourceState = { snapshotDone: false };
  private writing: Promise<void> = Promise.resolve();

  private constructor(client: pg.Client, publication: string) {
    this.client = client;
    this.publication = publication;
  }

  static async open(url: PgTarget, publication: string): Promise<SourceStateStore> {
    const client = await openPg(url);
    const store = new SourceStateStore(client, publication);
    store.state = await readState(client, publication);
    return store;
  }

  get(): SourceState {
    return this.state;
  }

  /** Applies `change` to the state and resolves once the result is durable. */
  update(change: (state: SourceState) => void): Promise<void> {
    change(this.state);
    const snapshot = structuredClone(this.state);
    this.writing = this.writing.catch(() => undefined).then(() => writeState(this.client, this.publication, snapshot));
    return this.writing;
  }

  async close(): Promise<void> {
    await this.writing.catch(() => undefined);
    await this.client.end().catch(() => undefined);
  }
}
