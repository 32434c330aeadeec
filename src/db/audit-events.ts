import type { CompiledQuery, Insertable, Selectable } from 'kysely';
import type { AuditDetail, AuditEvent } from '../domain/audit-event.ts';
import { prepareQuery } from './prepared.ts';
import type { AuditEventsTable, Db } from './schema.ts';

export type NewAuditEvent = Omit<AuditEvent, 'id'>;

export interface AuditEventsRepository {
  /** Inserts the events in one statement, in the order given. */
  insertAuditEvents(events: readonly NewAuditEvent[]): Promise<void>;
  /** The user's events with an id below `beforeId` (all when undefined), newest first, at most `limit`. */
  findAuditEventsOfUser(
    userId: number,
    page: { limit: number; beforeId: number | undefined },
  ): Promise<AuditEvent[]>;
  /** Deletes at most `limit` events created before `cutoff`; returns how many it deleted. */
  deleteAuditEventsCreatedBefore(cutoff: Date, limit: number): Promise<number>;
}

// Batches up to this size reuse a statement compiled once per size: a login flood's events are drained a few at a
// time, and each login adds two. Larger batches (a backlog) are built as they come.
const MAX_PREPARED_BATCH = 32;

type AuditEventRow = Required<Omit<Insertable<AuditEventsTable>, 'id'>>;

export function createAuditEventsRepository(db: Db): AuditEventsRepository {
  const preparedBySize = new Map<number, (...params: unknown[]) => CompiledQuery>();
  const preparedInsert = (size: number) => {
    let bind = preparedBySize.get(size);
    if (!bind) {
      const rows = Array.from({ length: size }, (_, index) => sentinelRow(index));
      bind = prepareQuery(db.insertInto('audit_events').values(rows), rows.flatMap(rowValues));
      preparedBySize.set(size, bind);
    }
    return bind;
  };

  return {
    async insertAuditEvents(events) {
      if (events.length === 0) return;
      const rows = events.map(toAuditEventRow);
      if (rows.length > MAX_PREPARED_BATCH) {
        await db.insertInto('audit_events').values(rows).execute();
        return;
      }
      await db.executeQuery(preparedInsert(rows.length)(...rows.flatMap(rowValues)));
    },

    async findAuditEventsOfUser(userId, { limit, beforeId }) {
      let query = db.selectFrom('audit_events').selectAll().where('user_id', '=', userId);
      if (beforeId !== undefined) query = query.where('id', '<', beforeId);
      const rows = await query.orderBy('id', 'desc').limit(limit).execute();
      return rows.map(toAuditEvent);
    },

    async deleteAuditEventsCreatedBefore(cutoff, limit) {
      // In bounded batches: a first prune after a long pause must not hold SQLite's write lock for long.
      const result = await db
        .deleteFrom('audit_events')
        .where('id', 'in', (eb) =>
          eb
            .selectFrom('audit_events')
            .select('id')
            .where('created_at_ms', '<', cutoff.getTime())
            .limit(limit),
        )
        .executeTakeFirst();
      return Number(result.numDeletedRows);
    },
  };
}

function toAuditEventRow(event: NewAuditEvent): AuditEventRow {
  return {
    event: event.event,
    user_id: event.userId ?? null,
    ip: event.ipAddress ?? null,
    user_agent: event.userAgent ?? null,
    request_id: event.requestId ?? null,
    created_at_ms: event.createdAt.getTime(),
    detail: Object.keys(event.detail).length > 0 ? JSON.stringify(event.detail) : null,
  };
}

/** A row of placeholders, distinct across a batch, so that prepareQuery can check the order of every parameter. */
function sentinelRow(index: number): AuditEventRow {
  const text = (column: string) => `\u0000${column}${index}`;
  return {
    event: text('event'),
    user_id: -1 - 2 * index,
    ip: text('ip'),
    user_agent: text('user_agent'),
    request_id: text('request_id'),
    created_at_ms: -2 - 2 * index,
    detail: text('detail'),
  };
}

/** A row's values in the order of its columns in the insert: the order the statement's parameters take. */
function rowValues(row: AuditEventRow): unknown[] {
  return [row.event, row.user_id, row.ip, row.user_agent, row.request_id, row.created_at_ms, row.detail];
}

function toAuditEvent(row: Selectable<AuditEventsTable>): AuditEvent {
  return {
    id: Number(row.id),
    event: row.event,
    userId: row.user_id === null ? undefined : Number(row.user_id),
    ipAddress: row.ip ?? undefined,
    userAgent: row.user_agent ?? undefined,
    requestId: row.request_id ?? undefined,
    createdAt: new Date(Number(row.created_at_ms)),
    detail: row.detail === null ? {} : (JSON.parse(row.detail) as AuditDetail),
  };
}
