import type { Selectable } from 'kysely';
import type { AuditDetail, AuditEvent } from '../domain/audit-event.ts';
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

export function createAuditEventsRepository(db: Db): AuditEventsRepository {
  return {
    async insertAuditEvents(events) {
      if (events.length === 0) return;
      await db
        .insertInto('audit_events')
        .values(
          events.map((event) => ({
            event: event.event,
            user_id: event.userId ?? null,
            ip: event.ipAddress ?? null,
            user_agent: event.userAgent ?? null,
            request_id: event.requestId ?? null,
            created_at_ms: event.createdAt.getTime(),
            detail: Object.keys(event.detail).length > 0 ? JSON.stringify(event.detail) : null,
          })),
        )
        .execute();
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
